"""/metrics, /healthz and /readyz: Prometheus text from real counters, served on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import types

import pytest

from dataplane import fastpath
from dataplane.daemon.metrics import MetricsServer, render_metrics
from dataplane.fastpath.types import MODE_UDP, ForwarderConfig
from dataplane.lease import Lease
from dataplane.netconf import parse_network_config

SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


def fake_node(impl: str):
    fwd = fastpath.load(impl).Forwarder(ForwarderConfig(mode=MODE_UDP,
                                                        local_subnet="10.244.1.0/24", port=8285))
    fwd.set_peer("10.244.2.0/24", "10.99.0.2")
    fwd.egress([b"\x60" * 20, b""])             # two drops: IPv6, truncated
    fwd.ingress([("10.99.0.77", 8285, b"x")])    # unknown peer
    lease = Lease(ipaddress.IPv4Network("10.244.1.0/24"), "10.99.0.1")
    return types.SimpleNamespace(
        counters=fwd.counters, peers={ipaddress.IPv4Network("10.244.2.0/24"): None}, lease=lease,
        refused={ipaddress.IPv4Network("10.244.0.0/16"): None},
        store_errors=3, ready=asyncio.Event(), started=1.0,
        config=parse_network_config('{"Network": "10.244.0.0/16"}'),
        opts=types.SimpleNamespace(fastpath=impl),
        underlay=types.SimpleNamespace(address="10.99.0.1"))


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
    assert s["dataplane_ready"] == 0
    assert s["process_resident_memory_bytes"] > 1e6
    assert s['dataplane_info{backend="udp",fastpath="%s",subnet="10.244.1.0/24",'
             'public_ip="10.99.0.1"}' % impl] == 1


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
