"""Health and metrics over HTTP: /healthz, /readyz and /metrics (Prometheus text format 0.0.4).

A few lines of asyncio rather than a web framework: three fixed GET endpoints on
--healthz-ip (0.0.0.0 by default, as flanneld), served from the daemon's own loop. The
/metrics page is prometheus_client's rendering of a collector that reads the C counters at
scrape time (its own HTTP server would be a second thread and socket for the same three
routes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from dataplane.daemon.errors import BindError
from dataplane.drops import Direction, Drop

if TYPE_CHECKING:
    from dataplane.daemon.node import Node

log = logging.getLogger(__name__)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# The text format version our pages are in (generate_latest's, with legal names throughout).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_SIZE


def _counter(name: str, help_: str, labels: tuple[str, ...] = (),
             samples: list[tuple[tuple[str, ...], float]] | None = None) -> CounterMetricFamily:
    """A counter family; `name` ends in _total, as it is exposed."""
    family = CounterMetricFamily(name, help_, labels=labels)
    for values, value in samples or []:
        family.add_metric(values, value)
    return family


def _gauge(name: str, help_: str, value: float, labels: dict[str, str] | None = None
           ) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


class NodeCollector(Collector):
    """Reads the forwarders' C counters and the node's state when scraped: nothing is counted
    in Python per packet, and a scrape costs one counters() call per worker."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        c = node.counters()
        dirs = list(Direction)
        if c is not None:
            def by_dir(name: str, help_: str, values: list[int]) -> CounterMetricFamily:
                return _counter(name, help_, ("direction",),
                                [((d.label,), values[d]) for d in dirs])

            def one(name: str, help_: str, value: float) -> CounterMetricFamily:
                return _counter(name, help_, (), [((), value)])

            yield by_dir("dataplane_packets_total", "Packets forwarded, by direction "
                         "(egress: TUN to wire, ingress: wire to TUN).", c.packets)
            yield by_dir("dataplane_bytes_total", "Inner packet bytes forwarded.", c.bytes)
            # Every direction x reason from the start, at 0 until it happens: rate() and
            # alerts need a series before its first increment.
            yield _counter("dataplane_drops_total", "Packets dropped, by direction and reason.",
                           ("direction", "reason"),
                           [((d.label, r.label), c.drops.get((d, r), 0))
                            for d in dirs for r in Drop if r is not Drop.NONE])
            yield by_dir("dataplane_batches_total",
                         "Fast-path calls that moved at least one packet.", c.batches)
            handled = [c.packets[d] + sum(n for (dd, _), n in c.drops.items() if dd == d)
                       for d in dirs]
            yield by_dir("dataplane_batch_packets_total",
                         "Packets handled by those calls (forwarded or dropped); divide by "
                         "dataplane_batches_total for the mean batch size.", handled)
            yield by_dir("dataplane_super_packets_total",
                         "Offloads: TUN reads cut into several wire packets (egress) and TUN "
                         "writes carrying several coalesced packets (ingress).", c.super_packets)
            yield by_dir("dataplane_syscalls_total",
                         "System calls made by the fast path (reads, writes, sendmmsg, "
                         "recvmmsg).", c.syscalls)
            yield one("dataplane_gso_fallbacks_total",
                      "UDP_SEGMENT sends the kernel refused (segments then went one by one).",
                      c.gso_fallbacks)
            yield one("dataplane_gso_fallbacks_too_big_total",
                      "Of those, refused with EMSGSIZE: the path MTU to the peer fell below the "
                      "segment size (a route MTU, an ICMP fragmentation-needed).", c.gso_too_big)
            yield one("dataplane_gso_backoffs_total",
                      "Times UDP_SEGMENT to one peer address was paused after a refusal (1 s, "
                      "doubling up to 60 s while retries fail; other peers keep it).",
                      c.gso_backoffs)
            yield one("dataplane_gso_sends_total",
                      "UDP_SEGMENT messages (runs of segments) the kernel took.", c.gso_sends)
            yield one("dataplane_icmp_unreachable_sent_total",
                      "ICMP net-unreachable errors written back for packets to unknown "
                      "subnets.", c.icmp_sent)
            yield one("dataplane_icmp_errors_suppressed_total",
                      "ICMP errors not sent because of the rate limit (a token bucket per "
                      "worker: 1000 a second, bursts of 50).", c.icmp_suppressed)
            rounds, hits = node.busy_poll_rounds()
            yield one("dataplane_busy_poll_rounds_total",
                      "--busy-poll: rounds that drained both directions after a wakeup, "
                      "instead of sleeping (0 with it off).", rounds)
            yield one("dataplane_busy_poll_hits_total",
                      "Of those, rounds that moved packets (each saved a wakeup).", hits)
        yield _gauge("dataplane_peers", "Peers (other nodes' leases): tunnelled, or routed "
                     "directly (DirectRouting).", len(node.peers) if node.peers else 0)
        yield _gauge("dataplane_leases_refused", "Leases kept out of the forwarding table: "
                     "they overlap our lease or a peer's.",
                     len(node.peers.refused) if node.peers else 0)
        if node.lease is not None and node.lease.expiration is not None:
            yield _gauge("dataplane_lease_expiry_timestamp_seconds",
                         "When our subnet lease expires unless renewed (Unix time).",
                         node.lease.expiration.timestamp(), {"subnet": str(node.lease.subnet)})
        yield _counter("dataplane_store_errors_total",
                       "Subnet store operations that failed (and were retried).", (),
                       [((), node.store_errors)])
        yield _gauge("dataplane_ready", "1 when the lease is held and the device is up.",
                     int(node.ready.is_set()))
        if node.config is not None:
            yield _gauge("dataplane_info", "Constant 1, labelled with what this node runs.", 1,
                         {"backend": node.config.backend_type, "fastpath": node.opts.fastpath,
                          "subnet": str(node.lease.subnet) if node.lease else "",
                          "public_ip": node.underlay.address if node.underlay else ""})
        yield _gauge("dataplane_tun_io_info", "Constant 1, labelled with how the fast path reads "
                     "and writes the TUN: read, io_uring-batch or io_uring-multishot "
                     "(--tun-uring).", 1, {"mode": node.tun_io})
        usage = resource.getrusage(resource.RUSAGE_SELF)
        yield _counter("process_cpu_seconds_total", "User and system CPU time of the daemon.",
                       (), [((), usage.ru_utime + usage.ru_stime)])
        yield _gauge("process_resident_memory_bytes", "Resident set size of the daemon.",
                     _rss_bytes())
        yield _gauge("process_start_time_seconds", "When the daemon started (Unix time).",
                     node.started)


def registry_for(node: Node) -> CollectorRegistry:
    """A registry of the node's metrics alone (not the library's default process and GC
    collectors: ours already say what the daemon costs)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry


def render_metrics(node: Node) -> str:
    return generate_latest(registry_for(node)).decode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def parse_metrics(text: str) -> dict[str, float]:
    """The samples of a /metrics page, read with prometheus_client's parser:
    'name{k="v",...}' (labels sorted by name, as prometheus_client prints them; escaped as on
    the page) -> value. For the lab, the benchmark and the tests."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


class MetricsServer:
    def __init__(self, node: Node, host: str, port: int) -> None:
        self.node, self.host, self.port = node, host, port
        self.registry = registry_for(node)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise BindError("/healthz and /metrics (TCP, --healthz-ip/--healthz-port)",
                            self.host, self.port, exc) from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health and metrics on http://%s:%d/{healthz,readyz,metrics}", self.host,
                 self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _route(self, path: str) -> tuple[int, str, str]:
        path = path.split("?", 1)[0]
        if path == "/healthz":
            return 200, "text/plain", "ok\n"
        if path == "/readyz":
            if self.node.ready.is_set():
                return 200, "text/plain", "ready\n"
            return 503, "text/plain", "not ready: lease or device not up yet\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE, generate_latest(self.registry).decode()
        return 404, "text/plain", "not found: try /healthz, /readyz or /metrics\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            parts = request.decode("latin-1").split()
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass            # headers: nothing we need
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", "only GET\n"
            else:
                status, ctype, body = self._route(parts[1])
            data = body.encode()
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
                      503: "Service Unavailable"}[status]
            head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
            writer.write(head if parts and parts[0] == "HEAD" else head + data)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

