"""Health and metrics over HTTP: /healthz, /readyz and /metrics (Prometheus text format 0.0.4).

A few lines of asyncio rather than a web framework: three fixed GET endpoints on
--healthz-ip (0.0.0.0 by default, as flanneld), served from the daemon's own loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import resource
from typing import TYPE_CHECKING

from dataplane.daemon.errors import BindError
from dataplane.drops import Direction, Drop

if TYPE_CHECKING:
    from dataplane.daemon.node import Node

log = logging.getLogger(__name__)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_SIZE


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value at full precision: ints as they are, floats as repr() (the shortest text
    that reads back to the same float, as Go's strconv 'g' -1 which Prometheus uses), infinities
    and NaN as the text format spells them."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_: str,
               samples: list[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{text}}} {format_value(value)}" if labels
                              else f"{name} {format_value(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(node: Node) -> str:
    w = _Writer()
    c = node.counters()
    dirs = list(Direction)
    if c is not None:
        w.metric("dataplane_packets_total", "counter", "Packets forwarded, by direction "
                 "(egress: TUN to wire, ingress: wire to TUN).",
                 [({"direction": d.label}, c.packets[d]) for d in dirs])
        w.metric("dataplane_bytes_total", "counter", "Inner packet bytes forwarded.",
                 [({"direction": d.label}, c.bytes[d]) for d in dirs])
        # Every direction x reason from the start, at 0 until it happens: rate() and alerts
        # need a series before its first increment.
        w.metric("dataplane_drops_total", "counter", "Packets dropped, by direction and reason.",
                 [({"direction": d.label, "reason": r.label}, c.drops.get((d, r), 0))
                  for d in dirs for r in Drop if r is not Drop.NONE])
        w.metric("dataplane_batches_total", "counter",
                 "Fast-path calls that moved at least one packet.",
                 [({"direction": d.label}, c.batches[d]) for d in dirs])
        handled = {d: c.packets[d] + sum(n for (dd, _), n in c.drops.items() if dd == d)
                   for d in dirs}
        w.metric("dataplane_batch_packets_total", "counter",
                 "Packets handled by those calls (forwarded or dropped); divide by "
                 "dataplane_batches_total for the mean batch size.",
                 [({"direction": d.label}, handled[d]) for d in dirs])
        w.metric("dataplane_super_packets_total", "counter",
                 "Offloads: TUN reads cut into several wire packets (egress) and TUN writes "
                 "carrying several coalesced packets (ingress).",
                 [({"direction": d.label}, c.super_packets[d]) for d in dirs])
        w.metric("dataplane_syscalls_total", "counter",
                 "System calls made by the fast path (reads, writes, sendmmsg, recvmmsg).",
                 [({"direction": d.label}, c.syscalls[d]) for d in dirs])
        w.metric("dataplane_gso_fallbacks_total", "counter",
                 "UDP_SEGMENT sends the kernel refused (segments then went one by one).",
                 [({}, c.gso_fallbacks)])
        w.metric("dataplane_gso_fallbacks_too_big_total", "counter",
                 "Of those, refused with EMSGSIZE: the path MTU to the peer fell below the "
                 "segment size (a route MTU, an ICMP fragmentation-needed).",
                 [({}, c.gso_too_big)])
        w.metric("dataplane_gso_backoffs_total", "counter",
                 "Times UDP_SEGMENT to one peer address was paused after a refusal (1 s, "
                 "doubling up to 60 s while retries fail; other peers keep it).",
                 [({}, c.gso_backoffs)])
        w.metric("dataplane_gso_sends_total", "counter",
                 "UDP_SEGMENT messages (runs of segments) the kernel took.",
                 [({}, c.gso_sends)])
        w.metric("dataplane_icmp_unreachable_sent_total", "counter",
                 "ICMP net-unreachable errors written back for packets to unknown subnets.",
                 [({}, c.icmp_sent)])
        w.metric("dataplane_icmp_errors_suppressed_total", "counter",
                 "ICMP errors not sent because of the rate limit (a token bucket per worker: "
                 "1000 a second, bursts of 50).",
                 [({}, c.icmp_suppressed)])
        rounds, hits = node.busy_poll_rounds()
        w.metric("dataplane_busy_poll_rounds_total", "counter",
                 "--busy-poll: rounds that drained both directions after a wakeup, instead "
                 "of sleeping (0 with it off).",
                 [({}, rounds)])
        w.metric("dataplane_busy_poll_hits_total", "counter",
                 "Of those, rounds that moved packets (each saved a wakeup).",
                 [({}, hits)])
    w.metric("dataplane_peers", "gauge",
             "Peers (other nodes' leases): tunnelled, or routed directly (DirectRouting).",
             [({}, len(node.peers) if node.peers else 0)])
    w.metric("dataplane_leases_refused", "gauge",
             "Leases kept out of the forwarding table: they overlap our lease or a peer's.",
             [({}, len(node.peers.refused) if node.peers else 0)])
    if node.lease is not None and node.lease.expiration is not None:
        w.metric("dataplane_lease_expiry_timestamp_seconds", "gauge",
                 "When our subnet lease expires unless renewed (Unix time).",
                 [({"subnet": str(node.lease.subnet)}, node.lease.expiration.timestamp())])
    w.metric("dataplane_store_errors_total", "counter",
             "Subnet store operations that failed (and were retried).",
             [({}, node.store_errors)])
    w.metric("dataplane_ready", "gauge", "1 when the lease is held and the device is up.",
             [({}, int(node.ready.is_set()))])
    if node.config is not None:
        w.metric("dataplane_info", "gauge", "Constant 1, labelled with what this node runs.",
                 [({"backend": node.config.backend_type, "fastpath": node.opts.fastpath,
                    "subnet": str(node.lease.subnet) if node.lease else "",
                    "public_ip": node.underlay.address if node.underlay else ""}, 1)])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    w.metric("process_cpu_seconds_total", "counter", "User and system CPU time of the daemon.",
             [({}, round(usage.ru_utime + usage.ru_stime, 6))])
    w.metric("process_resident_memory_bytes", "gauge", "Resident set size of the daemon.",
             [({}, _rss_bytes())])
    w.metric("process_start_time_seconds", "gauge", "When the daemon started (Unix time).",
             [({}, node.started)])
    return w.text()


def parse_metrics(text: str) -> dict[str, float]:
    """The samples of a /metrics page: 'name{labels}' -> value (for the lab and the tests)."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


class MetricsServer:
    def __init__(self, node: Node, host: str, port: int) -> None:
        self.node, self.host, self.port = node, host, port
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
            return 200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(self.node)
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

