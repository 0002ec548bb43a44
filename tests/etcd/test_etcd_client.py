"""The etcd JSON-gateway client: endpoints, HTTP framing, failover, timeouts, errors, watch."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.store.etcd_client import (EtcdClient, EtcdRequestError, EtcdUnavailable,
                                         Endpoint, _Connection, parse_endpoints,
                                         prefix_end)

# -- pure parts --------------------------------------------------------------------------------

def test_parse_endpoints() -> None:
    eps = parse_endpoints(" http://127.0.0.1:2379, http://[::1]:2380/,http://etcd-a,"
                          "https://etcd-b:2381 ")
    assert [(e.url, e.host, e.port, e.tls) for e in eps] == [
        ("http://127.0.0.1:2379", "127.0.0.1", 2379, False),
        ("http://[::1]:2380", "::1", 2380, False), ("http://etcd-a", "etcd-a", 2379, False),
        ("https://etcd-b:2381", "etcd-b", 2381, True)]
    for bad, why in [("127.0.0.1:2379", "expected a URL"), ("ftp://a:2379", "expected a URL"),
                     ("http://a:2379/v3", "no path"), ("http://a:99999", "out of range"),
                     ("", "no etcd endpoint"), ("http://a:1,http://a:1", "repeat")]:
        with pytest.raises(ValueError, match=why):
            parse_endpoints(bad)


def test_prefix_end() -> None:
    assert prefix_end(b"/coreos.com/network/subnets/") == b"/coreos.com/network/subnets0"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff") == b"\0"


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, i = bytearray(), 0
    for size in sizes:
        piece = body[i:i + size]
        if piece:
            out += b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n"
        i += size
    if i < len(body):
        out += b"%X\r\n" % (len(body) - i) + body[i:] + b"\r\n"
    return bytes(out + b"0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=12),
       st.lists(st.integers(1, 50), max_size=30))
def test_chunked_decoding_in_any_pieces(body: bytes, sizes: list[int], cuts: list[int]) -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, sizes)

    async def go() -> tuple[bytes, bool]:
        reader = asyncio.StreamReader()
        conn = _Connection(Endpoint("http://a:1", "a", 1), reader, None)
        conn.http.send(h11.Request(method="POST", target="/", headers=[("Host", "a:1"),
                                                                      ("Content-Length", "0")]))
        conn.http.send(h11.EndOfMessage())
        i = 0
        for cut in cuts + [len(wire)]:
            reader.feed_data(wire[i:i + cut])           # the reader sees the wire in pieces
            i += cut
        reader.feed_eof()
        head = await conn.read_head()
        out = await conn.read_body(head)
        return out, conn.reusable()

    out, done = asyncio.run(go())
    assert out == body and done


# -- against fake servers ----------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def fake_server(handler: Handler) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return await reader.readexactly(length)


def answer(doc: Any, close: bool = False) -> bytes:
    body = json.dumps(doc).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (len(body), b"Connection: close\r\n" if close else b"") + body)


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A port whose kernel accepts connections that nobody ever reads: a hung member."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


def test_a_hung_endpoint_times_out_and_the_next_one_answers(run, etcd_url: str,
                                                            black_hole: str) -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        alone = EtcdClient(black_hole, timeout=1.0)
        started = loop.time()
        with pytest.raises(EtcdUnavailable, match=f"{black_hole}: no answer within"):
            await alone.range(b"/x")
        assert 0.9 < loop.time() - started < 2
        both = EtcdClient(f"{black_hole},{etcd_url}", attempt_timeout=0.3)
        started = loop.time()
        await both.range(b"/x")
        await both.range(b"/x")                # sticks to the endpoint that answered
        assert loop.time() - started < 1
        await alone.close()
        await both.close()
    run(go())


def test_refused_everywhere_fails_at_once_naming_each_endpoint(run) -> None:
    async def go() -> None:
        client = EtcdClient("http://127.0.0.1:1,http://127.0.0.1:2", timeout=5)
        started = asyncio.get_running_loop().time()
        with pytest.raises(EtcdUnavailable, match=r"http://127.0.0.1:1: connection refused; "
                                                  r"http://127.0.0.1:2: connection refused"):
            await client.range(b"/x")
        assert asyncio.get_running_loop().time() - started < 1
    run(go())


async def fails_over(handler, etcd_url: str, match: str | None = None) -> None:
    """A member served by `handler` is unavailable on its own (EtcdUnavailable, `match`), and
    listed before a real member the request is answered by the real one."""
    server, url = await fake_server(handler)
    async with server:
        lonely = EtcdClient(url, timeout=0.5)
        with pytest.raises(EtcdUnavailable, match=match):
            await lonely.range(b"/x")
        await lonely.close()
        client = EtcdClient(f"{url},{etcd_url}")
        assert "header" in await client.range(b"/x")
        await client.close()


def test_not_http_fails_over(run, etcd_url: str) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        writer.close()

    run(fails_over(garbage, etcd_url, match="not an HTTP response"))


def test_a_pooled_connection_the_server_closed_is_replaced(run) -> None:
    served = []

    async def one_answer_per_connection(reader: asyncio.StreamReader,
                                        writer: asyncio.StreamWriter) -> None:
        served.append(json.loads(await read_request(reader)))
        writer.write(answer({"header": {"revision": str(len(served))}}))   # says keep-alive
        await writer.drain()
        writer.close()                                                    # ...but closes

    async def go() -> None:
        server, url = await fake_server(one_answer_per_connection)
        async with server:
            client = EtcdClient(url)
            for i in range(1, 4):
                await asyncio.sleep(0.05)          # let the close arrive
                assert (await client.range(b"/k"))["header"]["revision"] == str(i)
            await client.close()
    run(go())
    assert [d["key"] for d in served] == ["L2s="] * 3      # base64 of /k


def test_a_member_shutting_down_is_failed_over(run, etcd_url: str) -> None:
    """A stopping member's JSON gateway answers gRPC Canceled ("the client connection is
    closing"): another member may answer, so it is tried, and alone the member is unavailable
    (retried by the daemon while forwarding goes on), not a request error that ends it."""
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = json.dumps({"error": "grpc: the client connection is closing", "code": 1,
                           "message": "grpc: the client connection is closing"}).encode()
        writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    run(fails_over(closing, etcd_url))


def test_server_errors_are_not_retried_elsewhere(run, etcd_url: str) -> None:
    async def go() -> None:
        client = EtcdClient(etcd_url)
        with pytest.raises(EtcdRequestError, match=r"requested lease not found \(gRPC code 5\)"):
            await client.put(b"/k", b"v", lease=12345)
        assert await client.lease_revoke(12345) is False
        await client.close()
    run(go())


def test_leases(run, etcd_url: str) -> None:
    async def go() -> None:
        client = EtcdClient(etcd_url)
        lease_id, ttl = await client.lease_grant(60)
        assert ttl == 60 and 58 <= await client.lease_time_to_live(lease_id) <= 60
        await client.put(b"/leased", b"v", lease=lease_id)
        assert await client.lease_keys(lease_id) == [b"/leased"]
        assert await client.lease_keepalive(lease_id) == 60
        assert await client.lease_revoke(lease_id) is True
        assert await client.lease_keys(lease_id) is None
        assert await client.lease_time_to_live(lease_id) == -1
        assert "kvs" not in await client.range(b"/leased")
        await client.close()
    run(go())


def test_watch_messages_split_anywhere(run) -> None:
    messages = [{"result": {"created": True}},
                {"result": {"events": [{"kv": {"key": "L2E=", "value": "eA=="}}]}},
                {"result": {"events": [{"type": "DELETE", "kv": {"key": "L2E="}}]}}]
    wire = b"".join(json.dumps(m).encode() + b"\n" for m in messages)

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(wire), 7):                  # chunks cut through the messages
            piece = wire[i:i + 7]
            writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0)
        writer.close()

    async def go() -> None:
        server, url = await fake_server(stream)
        async with server:
            client = EtcdClient(url)
            watch = await client.watch(b"/", prefix_end(b"/"))
            got = []
            with pytest.raises(EtcdUnavailable, match=f"{url}: watch stream closed"):
                async for resp in watch:
                    got.append(resp)
            assert got == [m["result"] for m in messages]
    run(go())
