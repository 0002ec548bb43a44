"""From raw samples to what the report shows: the median of each figure over the rounds, and
its ratio to the baseline's median from the same run (ratio of medians)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.stats import LogHistogram, median, ratio

MIB = 1 << 20


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    better: str          # "higher" or "lower": for the reader, not used in arithmetic
    digits: int = 1


UNPINNED_TCP = (
    Metric("tcp1_unpinned_gbps", "TCP 1 stream", "Gbit/s", "higher", 2),
    Metric("tcpN_unpinned_gbps", "TCP N streams", "Gbit/s", "higher", 2),
    Metric("tcp1_unpinned_cpu_s_per_gb", "machine CPU, 1 stream", "CPU-s/GB", "lower", 3),
    Metric("tcp1_unpinned_daemon_cpu_s_per_gb", "daemons' CPU, 1 stream", "CPU-s/GB",
           "lower", 3),
    Metric("tcpN_unpinned_cpu_s_per_gb", "machine CPU, N streams", "CPU-s/GB", "lower", 3),
)
LIGHT_LOAD = (
    Metric("ping_unpinned_median_us", "ICMP RTT median", "µs", "lower", 1),
    Metric("ping_unpinned_p99_us", "ICMP RTT p99", "µs", "lower", 1),
    Metric("rr_udp_tps", "UDP request/response", "trans/s", "higher", 0),
    Metric("rr_udp_p50_us", "UDP RR p50", "µs", "lower", 1),
    Metric("rr_udp_p99_us", "UDP RR p99", "µs", "lower", 1),
    Metric("rr_tcp_tps", "TCP request/response", "trans/s", "higher", 0),
    Metric("rr_tcp_p50_us", "TCP RR p50", "µs", "lower", 1),
    Metric("rr_tcp_p99_us", "TCP RR p99", "µs", "lower", 1),
)
CAPACITY = (
    Metric("capacity_pps", "64 B capacity at <= 0.1% loss", "kpps", "higher", 1),
    Metric("sender_rx_pps", "64 B, one unlimited sender: received", "kpps", "higher", 1),
    Metric("sender_loss_pct", "its loss", "%", "lower", 1),
)
THROUGHPUT = (
    Metric("tcp1_gbps", "TCP 1 stream", "Gbit/s", "higher", 2),
    Metric("tcpN_gbps", "TCP N streams", "Gbit/s", "higher", 2),
    Metric("tcp1_cpu_s_per_gb", "machine CPU, 1 stream", "CPU-s/GB", "lower", 3),
    Metric("tcp1_daemon_cpu_s_per_gb", "daemons' CPU, 1 stream", "CPU-s/GB", "lower", 3),
    Metric("tcpN_cpu_s_per_gb", "machine CPU, N streams", "CPU-s/GB", "lower", 3),
    Metric("tcp1_retransmits", "retransmits, 1 stream", "segments", "lower", 0),
)
PACKETS = (
    Metric("udp_small_rx_pps", "64 B UDP received", "kpps", "higher", 1),
    Metric("udp_small_loss_pct", "64 B UDP loss", "%", "lower", 1),
    Metric("udp_small_cpu_s_per_mpkt", "machine CPU per M packets", "CPU-s", "lower", 2),
)
LATENCY = (
    Metric("rtt_median_us", "UDP RTT median", "µs", "lower", 1),
    Metric("rtt_p99_us", "UDP RTT p99", "µs", "lower", 1),
    Metric("ping_median_us", "ICMP RTT median", "µs", "lower", 1),
    Metric("ping_p99_us", "ICMP RTT p99", "µs", "lower", 1),
)
MEMORY = (
    Metric("daemon_rss_mb", "daemon RSS after the round (largest)", "MiB", "lower", 1),
    Metric("daemon_idle_cpu_per_s", "daemons' CPU while idle", "CPU-s/s", "lower", 3),
)
TABLES = (("TCP, unpinned (what a node sees)", UNPINNED_TCP),
          ("Latency at light load, unpinned", LIGHT_LOAD),
          ("64 B packet rate as capacity, unpinned", CAPACITY),
          ("Pinned view: throughput and CPU cost", THROUGHPUT),
          ("Pinned view: small packets, one sender", PACKETS),
          ("Pinned view: latency under light load", LATENCY),
          ("Daemon memory and idle CPU", MEMORY))
METRICS = {m.key: m for _, group in TABLES for m in group}
SCALE = {"udp_small_rx_pps": 1e-3, "capacity_pps": 1e-3, "sender_rx_pps": 1e-3}
# stored in pps, shown in kpps

SWEEP_FIGURES = ("goodput_mbps", "rx_pps", "loss_pct", "efficiency", "inner_avg_bytes",
                 "outer_avg_bytes")


def summarize(samples: list[dict], names: list[str], baseline: str) -> dict:
    """{"metrics": {dp: {key: {median, n, ratio}}}, "sweep": {dp: [{payload, ...}]},
    "latency_hist": {dp: {"rtt": counts, "ping": counts}}}"""
    by_dp = {name: [s for s in samples if s["dataplane"] == name]
             for name in names}
    medians = {name: {key: median(s["metrics"].get(key) for s in rows) for key in METRICS}
               for name, rows in by_dp.items()}
    base = medians.get(baseline, {})
    metrics = {
        name: {key: {"median": medians[name][key],
                     "n": sum(1 for s in by_dp[name] if s["metrics"].get(key) is not None),
                     "ratio": ratio(medians[name][key], base.get(key))}
               for key in METRICS}
        for name in names}
    return {"baseline": baseline, "metrics": metrics, "sweep": _sweep(by_dp, baseline),
            "latency_hist": _hists(by_dp)}


def _sweep(by_dp: dict[str, list[dict]], baseline: str) -> dict:
    out: dict[str, dict] = {}
    for name, rows in by_dp.items():
        points: dict[int, list[dict]] = {}
        for s in rows:
            for p in s.get("sweep", []):
                points.setdefault(p["payload"], []).append(p)
        out[name] = [{"payload": payload, **{f: median(p.get(f) for p in ps)
                                             for f in SWEEP_FIGURES}}
                     for payload, ps in sorted(points.items())]
    for points in out.values():
        for figures in points:
            base = next((b for b in out.get(baseline, []) if b["payload"] == figures["payload"]),
                        {})
            figures["goodput_ratio"] = ratio(figures["goodput_mbps"], base.get("goodput_mbps"))
    return out


def _hists(by_dp: dict[str, list[dict]]) -> dict:
    out = {}
    for name, rows in by_dp.items():
        merged = {"rtt": LogHistogram(), "ping": LogHistogram()}
        for s in rows:
            for kind, hist in merged.items():
                counts = s.get("hist", {}).get(kind)
                if counts:
                    hist.merge(LogHistogram(counts))
        out[name] = {kind: h.counts for kind, h in merged.items()}
    return out


def our_rungs(results: dict) -> set[str]:
    """The rungs that run our node daemon (a fast path), as opposed to kernel and tunnel rungs."""
    return {dp["name"] for dp in results["dataplanes"] if dp.get("fastpath")}


def rss_overview(results: dict) -> dict[str, dict]:
    """Per daemon dataplane, in MiB: the largest daemon RSS before any traffic, after the first
    and the last round and over all rounds. `warmup_mb` is what the first round's traffic
    allocated (socket and batch buffers, allocator arenas); `growth_mb` is what later rounds
    added on top (None with one round): flat means this stays small."""
    limit = results["method"]["rss_limit_mb"]

    def largest(values) -> float | None:
        known = [v for v in values or [] if v]
        return max(known) / MIB if known else None

    out = {}
    for name, before in results.get("rss_before", {}).items():
        after = [largest(s["raw"].get("rss_bytes")) for s in results["samples"]
                 if s["dataplane"] == name]
        after = [a for a in after if a is not None]
        b = largest(before)
        if b is None or not after:
            continue
        peak = max(after)
        out[name] = {"before_mb": b, "first_mb": after[0], "after_mb": after[-1],
                     "peak_mb": peak, "warmup_mb": after[0] - b,
                     "growth_mb": after[-1] - after[0] if len(after) > 1 else None,
                     "rounds": len(after), "within_limit": peak <= limit}
    return out
