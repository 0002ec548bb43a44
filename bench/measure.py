"""One round of one dataplane: every measurement, pod to pod across the two nodes.

Each function returns (metrics, raw): flat figures for the tables, and the inputs they were
computed from, kept in the JSON so every figure can be checked by hand.

CPU cost is measured over the client's whole run: /proc/stat busy time of the machine (all
CPUs) and utime+stime of our daemons, divided by the bytes the receiver got.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass

from bench import parsers, procstat, traffic
from bench.stats import LogHistogram, median, percentile
from bench.topology import Topology

GB = 1e9


@dataclass(frozen=True)
class Settings:
    duration: int = 4              # seconds per throughput, packet-rate and latency test
    streams: int = 4               # the multi-stream TCP test
    udp_payloads: tuple[int, ...] = (64, 512, 1422)   # the first is the small-packet test
    latency_mps: int = 2000        # sockperf ping-pong messages per second: light load
    echo_count: int = 500          # ICMP echoes at 500/s: light load
    echo_interval: float = 0.002
    capacity_trials: int = 5       # the 64 B capacity search (bench.capacity)
    capacity_seconds: int = 1
    pin: bool = True               # also run the pinned view (the unpinned one always runs)

    @property
    def client_cpus(self) -> set[int] | None:
        return {0} if self.pin else None

    @property
    def server_cpus(self) -> set[int] | None:
        return {1 % os.cpu_count()} if self.pin else None


def cpus(s: Settings, pinned: bool) -> tuple[set[int] | None, set[int] | None]:
    """(client, server) CPU sets of one view: None, None for the unpinned one."""
    return (s.client_cpus, s.server_cpus) if pinned else (None, None)


def pin_daemons(topo: Topology, settings: Settings, pinned: bool = True) -> None:
    """Pinned: node 1's daemon beside the client, node 2's beside the server, so each node
    gets one CPU, as if the two nodes were separate one-core machines. Unpinned: every
    daemon free to run on any CPU, as a node runs it."""
    if not topo.dp.pin_daemons:
        return
    if pinned and not settings.pin:
        return
    every = set(range(os.cpu_count() or 1))
    for pid, where in zip(topo.daemon_pids(), (settings.client_cpus, settings.server_cpus)):
        topo.pin(pid, where if pinned and where else every)


class _CpuWindow:
    """Machine and daemon CPU seconds spent between enter and exit."""

    def __init__(self, topo: Topology) -> None:
        self.pids = topo.daemon_pids()

    def __enter__(self) -> _CpuWindow:
        self.m0 = procstat.machine_cpu()
        self.d0 = procstat.process_cpu(self.pids) if self.pids else None
        return self

    def __exit__(self, *exc) -> None:
        delta = procstat.machine_cpu() - self.m0
        self.machine = delta.busy
        self.steal = delta.steal
        # The window as /proc/stat measured it, in CPU-seconds of all CPUs: busy time over it
        # cannot exceed 1 per CPU, where the intended sleep (ticks land late) could.
        self.window = delta.busy + delta.idle + delta.steal
        d1 = procstat.process_cpu(self.pids) if self.pids else None
        self.daemons = None if d1 is None or self.d0 is None else d1 - self.d0

    def raw(self) -> dict:
        return {"machine_cpu_s": round(self.machine, 3), "steal_s": round(self.steal, 3),
                "daemon_cpu_s": None if self.daemons is None else round(self.daemons, 3)}


def _per(cpu_s: float | None, amount: float) -> float | None:
    return None if cpu_s is None or amount <= 0 else cpu_s / amount


def tcp(topo: Topology, s: Settings, streams: int, pinned: bool = True) -> tuple[dict, dict]:
    key = ("tcp1" if streams == 1 else "tcpN") + ("" if pinned else "_unpinned")
    ip = topo.server.ip
    client_cpus, server_cpus = cpus(s, pinned)
    with traffic.server(topo, traffic.iperf3_server(ip), "tcp", traffic.IPERF_PORT,
                        server_cpus):
        with _CpuWindow(topo) as cpu:
            out = traffic.client(topo, traffic.iperf3_tcp(ip, s.duration, streams),
                                 client_cpus, timeout=s.duration + 30)
    r = parsers.iperf3_tcp(out.stdout)
    gb = r.bytes_received / GB
    metrics = {f"{key}_gbps": r.gbps, f"{key}_retransmits": r.retransmits,
               f"{key}_cpu_s_per_gb": _per(cpu.machine, gb),
               f"{key}_daemon_cpu_s_per_gb": _per(cpu.daemons, gb)}
    raw = {"streams": r.streams, "bytes_received": r.bytes_received, "seconds": r.seconds,
           "retransmits": r.retransmits, **cpu.raw()}
    return metrics, raw


def udp_point(topo: Topology, s: Settings, payload: int) -> dict:
    """UDP at one payload size, as fast as the sender goes: delivered rate and loss, and the
    bytes each packet takes on the underlay, from interface counters on the sending side
    (pod eth0 vs node 1's uplink). Averages per packet do not care how many were dropped."""
    ip = topo.server.ip
    # iperf3 listens on TCP (its control connection) even for a UDP test.
    with traffic.server(topo, traffic.iperf3_server(ip), "tcp", traffic.IPERF_PORT,
                        s.server_cpus):
        pod0 = topo.link_counters(topo.client.netns)
        node0 = topo.link_counters(topo.client.node_netns)
        with _CpuWindow(topo) as cpu:
            out = traffic.client(topo, traffic.iperf3_udp(ip, s.duration, payload),
                                 s.client_cpus, timeout=s.duration + 30)
        pod1 = topo.link_counters(topo.client.netns)
        node1 = topo.link_counters(topo.client.node_netns)
    r = parsers.iperf3_udp(out.stdout)
    inner_pkts, outer_pkts = pod1.tx_packets - pod0.tx_packets, node1.tx_packets - node0.tx_packets
    delivered = r.packets_sent - r.packets_lost
    # Frame bytes minus the 14-byte Ethernet header: IP packet sizes, inner and outer. Counters
    # count buffers: fewer outer buffers than packets delivered means a daemon sent them
    # coalesced (UDP GSO), and an average then says nothing about one packet's headers.
    coalesced = outer_pkts < delivered
    inner_avg = (pod1.tx_bytes - pod0.tx_bytes) / inner_pkts - 14 if inner_pkts else None
    outer_avg = (None if coalesced or not outer_pkts
                 else (node1.tx_bytes - node0.tx_bytes) / outer_pkts - 14)
    delivered_mpkts = delivered / 1e6
    return {"payload": payload, "inner_size": payload + 28, "packets_sent": r.packets_sent,
            "packets_lost": r.packets_lost, "seconds": r.seconds, "rx_pps": r.rx_pps,
            "loss_pct": r.loss_pct, "goodput_mbps": r.goodput_mbps,
            "inner_avg_bytes": inner_avg, "outer_avg_bytes": outer_avg, "coalesced": coalesced,
            "efficiency": inner_avg / outer_avg if inner_avg and outer_avg else None,
            "cpu_s_per_mpkt": _per(cpu.machine, delivered_mpkts),
            "daemon_cpu_s_per_mpkt": _per(cpu.daemons, delivered_mpkts), **cpu.raw()}


def udp_sweep(topo: Topology, s: Settings) -> tuple[dict, list[dict]]:
    points = [udp_point(topo, s, payload) for payload in s.udp_payloads]
    small = points[0]
    metrics = {"udp_small_rx_pps": small["rx_pps"], "udp_small_loss_pct": small["loss_pct"],
               "udp_small_cpu_s_per_mpkt": small["cpu_s_per_mpkt"]}
    return metrics, points


def _ping_pong(topo: Topology, s: Settings, mps: int | None, tcp: bool, pinned: bool
               ) -> tuple[list[float], parsers.SockperfSummary]:
    ip = topo.server.ip
    client_cpus, server_cpus = cpus(s, pinned)
    fd, log_path = tempfile.mkstemp(prefix="bench-sockperf-", suffix=".csv")
    os.close(fd)
    try:
        with traffic.server(topo, traffic.sockperf_server(ip, tcp), "tcp" if tcp else "udp",
                            traffic.SOCKPERF_PORT, server_cpus):
            out = traffic.client(topo, traffic.sockperf_ping_pong(ip, s.duration, mps,
                                                                  log_path, tcp),
                                 client_cpus, timeout=s.duration + 30)
        summary = parsers.sockperf_summary(out.stdout + out.stderr)
        with open(log_path) as f:
            rtts = parsers.sockperf_full_log_rtts(f)
    finally:
        os.unlink(log_path)
    return rtts, summary


def latency(topo: Topology, s: Settings) -> tuple[dict, dict, LogHistogram]:
    """sockperf UDP ping-pong, 64-byte messages, one in flight, `latency_mps` a second
    (the pinned view)."""
    rtts, summary = _ping_pong(topo, s, s.latency_mps, tcp=False, pinned=True)
    hist = LogHistogram()
    hist.extend(rtts)
    metrics = {"rtt_median_us": median(rtts), "rtt_p99_us": percentile(rtts, 99)}
    raw = {"messages": len(rtts), "valid_seconds": summary.seconds, "dropped": summary.dropped,
           "sockperf_percentiles_one_way_us": summary.percentiles}
    return metrics, raw, hist


def request_response(topo: Topology, s: Settings, tcp: bool) -> tuple[dict, dict, LogHistogram]:
    """Request/response, unpinned: sockperf ping-pong with one 64-byte request in flight,
    the next sent as soon as the answer is in (no --mps): transactions per second and the
    round trips' p50/p99, the TCP_RR of netperf."""
    key = "rr_tcp" if tcp else "rr_udp"
    rtts, summary = _ping_pong(topo, s, None, tcp=tcp, pinned=False)
    hist = LogHistogram()
    hist.extend(rtts)
    tps = len(rtts) / summary.seconds if summary.seconds else None
    metrics = {f"{key}_tps": tps, f"{key}_p50_us": median(rtts),
               f"{key}_p99_us": percentile(rtts, 99)}
    raw = {"messages": len(rtts), "valid_seconds": summary.seconds, "dropped": summary.dropped}
    return metrics, raw, hist


def echo(topo: Topology, s: Settings, pinned: bool = True) -> tuple[dict, dict, LogHistogram]:
    client_cpus, _ = cpus(s, pinned)
    key = "ping" if pinned else "ping_unpinned"
    out = traffic.client(topo, traffic.echo(topo.server.ip, s.echo_count, s.echo_interval),
                         client_cpus, timeout=s.echo_count * (s.echo_interval + 1) + 30)
    try:
        doc = json.loads(out.stdout)
    except ValueError:
        raise traffic.ToolError(f"bench.echo failed: {out.stderr.strip()[-300:]}") from None
    rtts = doc["rtt_us"]
    hist = LogHistogram()
    hist.extend(rtts)
    metrics = {f"{key}_median_us": median(rtts), f"{key}_p99_us": percentile(rtts, 99)}
    raw = {"sent": doc["sent"], "answered": len(rtts)}
    return metrics, raw, hist


IDLE_SECONDS = 2.0


def busy_cpus(busy_s: float, window_cpu_s: float, cpus: int) -> float:
    """CPUs' worth of busy time over a window measured in CPU-seconds of all `cpus` CPUs
    (the measured window, never the intended one: 0 <= result <= cpus)."""
    return 0.0 if window_cpu_s <= 0 else cpus * busy_s / window_cpu_s


def background(topo: Topology) -> tuple[float, float | None]:
    """While this lab idles: machine CPU-seconds per second (what the rest of the box, other
    workloads and idle daemons, adds to every machine-wide CPU figure of this visit) and our
    daemons' CPU-seconds per second (what a polling daemon costs when nothing flows)."""
    start = time.monotonic()
    with _CpuWindow(topo) as cpu:
        time.sleep(IDLE_SECONDS)
    elapsed = time.monotonic() - start
    machine = busy_cpus(cpu.machine, cpu.window, os.cpu_count() or 1)
    daemons = None if cpu.daemons is None or elapsed <= 0 else cpu.daemons / elapsed
    return machine, daemons


def daemon_rss(topo: Topology) -> list[int | None]:
    return [procstat.rss_bytes(pid) for pid in topo.daemon_pids()]
