"""/metrics, /healthz and /readyz: Prometheus text from real counters, served on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import types

import pytest

from dataplane import fastpath
from dataplane.backends import UDP
from dataplane.daemon.metrics import MetricsServer, parse_metrics, render_metrics
from dataplane.daemon.peers import Peers, Tunnels
from dataplane.fastpath.types import MODE_UDP, ForwarderConfig
from dataplane.lease import Lease
from dataplane.netconf import parse_network_config

SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


def fake_node(impl: str):
    fwd = fastpath.load(impl).Forwarder(ForwarderConfig(mode=MODE_UDP,
                                                        local_subnet="10.244.1.0/24", port=8285))
    peers = Peers(ipaddress.IPv4Network("10.244.1.0/24"), UDP, Tunnels([fwd]))
    peers.reset([Lease(ipaddress.IPv4Network("10.244.2.0/24"), "10.99.0.2"),
                 Lease(ipaddress.IPv4Network("10.244.0.0/16"), "10.99.0.9")])   # refused
    fwd.egress([b"\x60" * 20, b""])             # two drops: IPv6, truncated
    fwd.ingress([("10.99.0.77", 8285, b"x")])    # unknown peer
    lease = Lease(ipaddress.IPv4Network("10.244.1.0/24"), "10.99.0.1")
    return types.SimpleNamespace(
        counters=fwd.counters, busy_poll_rounds=lambda: (7, 2), peers=peers, lease=lease,
        store_errors=3, ready=asyncio.Event(), started=1.0,
        config=parse_network_config('{"Network": "10.244.0.0/16"}'),
        opts=types.SimpleNamespace(fastpath=impl),
        underlay=types.SimpleNamespace(address="10.99.0.1"), tun_io="io_uring-batch")


def parse(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP ", "# TYPE ")), line
            continue
        m = SAMPLE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        samples[m[1] + (m[2] or "")] = float(m[3])
    return samples


@pytest.mark.parametrize("impl", ["c", "python"])
def test_drops_by_reason_and_gauges(impl):
    s = parse(render_metrics(fake_node(impl)))
    assert s['dataplane_drops_total{direction="egress",reason="truncated"}'] == 1
    assert s['dataplane_drops_total{direction="egress",reason="ipv6-unsupported"}'] == 1
    assert s['dataplane_drops_total{direction="ingress",reason="unknown-peer"}'] == 1
    assert s['dataplane_packets_total{direction="egress"}'] == 0
    assert s['dataplane_batch_packets_total{direction="egress"}'] == 2
    assert s["dataplane_peers"] == 1 and s["dataplane_leases_refused"] == 1
    assert s["dataplane_icmp_errors_suppressed_total"] == 0
    assert s["dataplane_gso_backoffs_total"] == s["dataplane_gso_sends_total"] == 0
    assert s["dataplane_store_errors_total"] == 3
    assert s["dataplane_busy_poll_rounds_total"] == 7 and s["dataplane_busy_poll_hits_total"] == 2
    assert s['dataplane_tun_io_info{mode="io_uring-batch"}'] == 1
    assert s["dataplane_ready"] == 0
    assert s["process_resident_memory_bytes"] > 1e6
    # labels in name order, as prometheus_client prints them
    assert s['dataplane_info{backend="udp",fastpath="%s",public_ip="10.99.0.1",'
             'subnet="10.244.1.0/24"}' % impl] == 1


def test_every_counter_name_ends_in_total():
    text = render_metrics(fake_node("c"))
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        assert (kind == "counter") == name.endswith("_total"), name


async def _get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def test_http_endpoints_on_loopback():
    async def go():
        node = fake_node("c")
        server = MetricsServer(node, "127.0.0.1", 0)
        await server.start()
        try:
            assert await _get(server.port, "/healthz") == (200, "ok\n")
            status, body = await _get(server.port, "/readyz")
            assert status == 503 and "not ready" in body
            node.ready.set()
            assert (await _get(server.port, "/readyz"))[0] == 200
            status, body = await _get(server.port, "/metrics")
            assert status == 200 and parse(body)["dataplane_ready"] == 1
            assert (await _get(server.port, "/nope"))[0] == 404
        finally:
            await server.close()
    asyncio.run(go())


def test_every_drop_series_exists_from_the_start_at_zero():
    from dataplane.drops import Direction, Drop
    s = parse(render_metrics(fake_node("c")))
    drops = {k: v for k, v in s.items() if k.startswith("dataplane_drops_total{")}
    assert len(drops) == len(Direction) * (len(Drop) - 1)       # every reason but NONE
    for d in Direction:
        for r in Drop:
            key = f'dataplane_drops_total{{direction="{d.label}",reason="{r.label}"}}'
            if r is Drop.NONE:
                assert key not in drops
            else:
                assert key in drops, key
    assert drops['dataplane_drops_total{direction="ingress",reason="spoofed-source"}'] == 0
    assert drops['dataplane_drops_total{direction="ingress",reason="unknown-peer"}'] == 1


def test_labelled_floats_keep_full_precision():
    node = fake_node("c")
    import datetime
    expiry = datetime.datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=datetime.UTC)
    node.lease = Lease(ipaddress.IPv4Network("10.244.1.0/24"), "10.99.0.1", expiration=expiry)
    node.started = 1796212345.678901
    text = render_metrics(node)
    line = next(ln for ln in text.splitlines()
                if ln.startswith("dataplane_lease_expiry_timestamp_seconds{"))
    # As Prometheus's own Go clients print floats (strconv 'g', shortest exact): every digit.
    assert line == ('dataplane_lease_expiry_timestamp_seconds{subnet="10.244.1.0/24"} '
                    "1.796119200123456e+09")
    assert float(line.rsplit(" ", 1)[1]) == expiry.timestamp()
    assert "process_start_time_seconds 1.796212345678901e+09" in text.splitlines()
    s = parse_metrics(text)
    assert s["process_start_time_seconds"] == 1796212345.678901
    assert s['dataplane_lease_expiry_timestamp_seconds{subnet="10.244.1.0/24"}'] == \
        expiry.timestamp()


@pytest.mark.parametrize("value", [3, 0, 1.5, True, 1796212345.5, 1e-7, 2**53, float("inf"),
                                   float("-inf"), float("nan")])
def test_sample_values_read_back_exactly(value):
    import math
    node = fake_node("c")
    node.store_errors = value
    got = parse_metrics(render_metrics(node))["dataplane_store_errors_total"]
    assert math.isnan(got) if math.isnan(value) else got == float(value)


def test_parse_metrics_reads_labels_with_escapes():
    node = fake_node("c")
    node.underlay.address = 'a"b\\c'
    s = parse_metrics(render_metrics(node))
    assert s['dataplane_info{backend="udp",fastpath="c",public_ip="a\\"b\\\\c",'
             'subnet="10.244.1.0/24"}'] == 1


def test_a_busy_metrics_port_names_itself_not_the_tunnel():
    import socket

    from dataplane.daemon.command import user_error
    from dataplane.daemon.errors import BindError

    async def go():
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            with pytest.raises(BindError) as exc:
                await MetricsServer(fake_node("c"), "127.0.0.1", port).start()
            return port, exc.value
    port, err = asyncio.run(go())
    message = user_error(err)
    assert message is not None and "\n" not in message
    assert f"127.0.0.1:{port}" in message and "/metrics" in message and "in use" in message
    assert "tunnel" not in message


def test_a_healthz_ip_not_on_this_host_names_itself():
    from dataplane.daemon.command import user_error
    from dataplane.daemon.errors import BindError

    async def go():
        with pytest.raises(BindError) as exc:
            await MetricsServer(fake_node("c"), "192.0.2.1", 9100).start()    # TEST-NET-1
        return exc.value
    message = user_error(asyncio.run(go()))
    assert "192.0.2.1:9100" in message and "not an address of this host" in message
    assert "tunnel" not in message


def test_unrelated_os_errors_are_not_passed_off_as_bind_errors():
    import errno

    from dataplane.daemon.command import user_error
    assert user_error(OSError(errno.EADDRINUSE, "Address already in use")) is None
