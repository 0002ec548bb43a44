"""The report's figures (matplotlib, Agg): bars of medians with every round as a dot,
latency distributions from the merged histograms, and efficiency by packet size against the
header-size theory. Each figure is written as PNG and SVG."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from bench import overhead  # noqa: E402
from bench.stats import LogHistogram, cdf  # noqa: E402

ENCAP_STYLE = {None: ("host-gw: no header", "tab:green"), "udp": ("udp: 28 bytes", "tab:orange"),
               "vxlan": ("VXLAN: 50 bytes", "tab:blue")}


def save(fig, out_dir: str, name: str) -> None:
    """A figure as out_dir/name.png and .svg (for every report of the harness)."""
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(os.path.join(out_dir, f"{name}.{ext}"), dpi=110)
    plt.close(fig)


def _rounds(results: dict, name: str, key: str, scale: float = 1.0) -> list[float]:
    return [s["metrics"][key] * scale for s in results["samples"]
            if s["dataplane"] == name and s["metrics"].get(key) is not None]


def _bars(ax, results: dict, series: list[tuple[str, str, float]], ylabel: str) -> None:
    """Grouped bars: one group per dataplane, one bar per (metric key, label, scale)."""
    names = [dp["name"] for dp in results["dataplanes"]]
    med = results["summary"]["metrics"]
    width = 0.8 / len(series)
    for i, (key, label, scale) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        heights = [(med[n][key]["median"] or 0) * scale for n in names]
        ax.bar(xs, heights, width, label=label)
        for x, n in zip(xs, names):
            dots = _rounds(results, n, key, scale)
            ax.plot([x] * len(dots), dots, "k.", markersize=3)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend()


def throughput(results: dict, out_dir: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    n = results["method"]["streams"]
    _bars(ax, results, [("tcp1_gbps", "1 stream", 1.0), ("tcpN_gbps", f"{n} streams", 1.0)],
          "Gbit/s")
    ax.set_title("TCP throughput pod to pod (median; dots: rounds)")
    save(fig, out_dir, "throughput")


def cpu_per_gb(results: dict, out_dir: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = [("tcp1_cpu_s_per_gb", "whole machine", 1.0)]
    med = results["summary"]["metrics"]
    if any(f["tcp1_daemon_cpu_s_per_gb"]["median"] for f in med.values()):
        series.append(("tcp1_daemon_cpu_s_per_gb", "our daemons", 1.0))
    _bars(ax, results, series, "CPU-seconds per GB")
    if any(f["tcp1_cpu_s_per_gb"]["median"] for f in med.values()):
        ax.set_yscale("log")      # the Python floor is an order of magnitude above the rest
    ax.set_title("CPU cost of moving a gigabyte, TCP 1 stream (lower is better)")
    save(fig, out_dir, "cpu_per_gb")


def pps(results: dict, out_dir: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    payload = results["method"]["udp_payloads"][0]
    _bars(ax, results, [("udp_small_rx_pps", "received", 1e-3)], "thousand packets per second")
    med = results["summary"]["metrics"]
    for j, dp in enumerate(results["dataplanes"]):
        loss = med[dp["name"]]["udp_small_loss_pct"]["median"]
        top = (med[dp["name"]]["udp_small_rx_pps"]["median"] or 0) * 1e-3
        if loss is not None:
            ax.annotate(f"{loss:.0f}% lost", (j, top), ha="center", va="bottom", fontsize=8)
    ax.set_title(f"{payload}-byte UDP payloads received per second (iperf3 -b 0)")
    save(fig, out_dir, "pps")


def latency(results: dict, out_dir: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True, sharey=True)
    hists = results["summary"]["latency_hist"]
    # The bins a run was recorded with, which need not be today's defaults.
    edges = results["summary"].get("histogram_edges_us") or LogHistogram.edges()
    for ax, kind, title in ((axes[0], "rtt", "UDP ping-pong (sockperf, 64 B)"),
                            (axes[1], "ping", "ICMP echo")):
        for dp in results["dataplanes"]:
            counts = hists.get(dp["name"], {}).get(kind)
            if not counts or not sum(counts):
                continue
            xs, ys = cdf(counts, edges)
            ax.step(xs, ys, where="post", label=dp["name"])
        ax.set_xscale("log")
        ax.set_xlabel("round-trip time (µs)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("fraction of round trips at or below")
    if axes[0].get_lines():
        axes[0].legend(fontsize=8)
    save(fig, out_dir, "latency")


def efficiency(results: dict, out_dir: str) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    sizes = list(range(64, 1501, 8))
    encaps = sorted({dp["encap"] for dp in results["dataplanes"]}, key=overhead.overhead)
    for encap in encaps:
        label, color = ENCAP_STYLE[encap]
        left.plot(sizes, [overhead.efficiency(s, encap) for s in sizes], color=color,
                  label=f"theory, {label}")
    markers = "osD^vP*X"
    sweep = results["summary"]["sweep"]
    for i, dp in enumerate(results["dataplanes"]):
        points = sweep.get(dp["name"], [])
        xs = [p["payload"] + overhead.IP_UDP for p in points]
        color = ENCAP_STYLE[dp["encap"]][1]
        eff = [p["efficiency"] for p in points]
        left.plot([x for x, e in zip(xs, eff) if e is not None], [e for e in eff if e is not None],
                  markers[i % len(markers)], color=color, fillstyle="none",
                  label=f"measured, {dp['name']}")
        right.plot(xs, [p["goodput_mbps"] for p in points],
                   marker=markers[i % len(markers)], label=dp["name"])
    left.set_xlabel("inner (pod) IP packet size, bytes")
    left.set_ylabel("inner bytes / underlay bytes")
    left.set_title("Goodput efficiency: header cost per packet")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    right.set_xlabel("inner (pod) IP packet size, bytes")
    right.set_ylabel("UDP payload received, Mbit/s")
    right.set_yscale("log")
    right.set_title("Measured UDP goodput (iperf3 -b 0)")
    right.legend(fontsize=7)
    right.grid(alpha=0.3, which="both")
    save(fig, out_dir, "efficiency")


FIGURES = {
    "throughput": ("TCP throughput", throughput),
    "cpu_per_gb": ("CPU per GB", cpu_per_gb),
    "pps": ("small-packet rate", pps),
    "latency": ("latency distribution", latency),
    "efficiency": ("goodput efficiency by packet size", efficiency),
}


def write_all(results: dict, out_dir: str) -> dict[str, str]:
    """All figures into out_dir; returns {name: title} of those written."""
    os.makedirs(out_dir, exist_ok=True)
    for _, draw in FIGURES.values():
        draw(results, out_dir)
    return {name: title for name, (title, _) in FIGURES.items()}
