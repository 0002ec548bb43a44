"""The issue's targets, evaluated from a run's summary: each a ratio to the baseline of the
same run (medians of interleaved rounds), or an absolute bound (daemon memory).

A target names the rungs it applies to; where several of them ran, the best one counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

RSS_FLAT_MB = 4.0        # growth over the run that still counts as flat


@dataclass(frozen=True)
class Target:
    what: str
    key: str
    sense: str                      # ">=" or "<="
    bound: float
    rungs: Callable[[dict], bool]   # a results.json dataplane entry -> does it apply


def _ours(dp: dict) -> bool:
    return bool(dp.get("fastpath")) and "+dr" not in dp["name"] and "+busypoll" not in dp["name"]


def _dr(dp: dict) -> bool:
    return "+dr" in dp["name"]


def _busypoll(dp: dict) -> bool:
    return "+busypoll" in dp["name"]


TARGETS = (
    Target("one TCP stream, unpinned", "tcp1_unpinned_gbps", ">=", 0.62, _ours),
    Target("machine CPU per GB, one stream, unpinned", "tcp1_unpinned_cpu_s_per_gb", "<=", 2.0,
           _ours),
    Target("DirectRouting: one TCP stream, unpinned", "tcp1_unpinned_gbps", ">=", 1.0, _dr),
    Target("64 B capacity at <= 0.1% loss", "capacity_pps", ">=", 1.0, _ours),
    Target("ICMP RTT at 500/s with --busy-poll (median)", "ping_unpinned_median_us", "<=", 3.0,
           _busypoll),
    Target("UDP request/response rate with --busy-poll", "rr_udp_tps", ">=", 0.5, _busypoll),
    Target("TCP request/response rate with --busy-poll", "rr_tcp_tps", ">=", 0.5, _busypoll),
)


def evaluate(results: dict) -> list[dict]:
    """One row per target: {what, bound, rung, measured, met, by} (rung None: no rung it
    applies to ran or measured it; `by`: how far past the bound, in the bound's unit)."""
    metrics = results["summary"]["metrics"]
    rows = []
    for t in TARGETS:
        best: tuple[str, float] | None = None
        for dp in results["dataplanes"]:
            if not t.rungs(dp) or dp["name"] not in metrics:
                continue
            r = metrics[dp["name"]].get(t.key, {}).get("ratio")
            if r is None:
                continue
            if best is None or (r > best[1] if t.sense == ">=" else r < best[1]):
                best = (dp["name"], r)
        row = {"what": t.what, "bound": f"{t.sense} {t.bound:g}×", "rung": None,
               "measured": None, "met": None, "by": None}
        if best is not None:
            met = best[1] >= t.bound if t.sense == ">=" else best[1] <= t.bound
            row.update(rung=best[0], measured=f"{best[1]:.2f}×", met=met,
                       by=round(abs(best[1] - t.bound), 2))
        rows.append(row)
    rows.append(_memory(results))
    return rows


def _memory(results: dict) -> dict:
    from bench.summary import our_rungs, rss_overview

    limit = results["method"].get("rss_limit_mb", 64)
    ours = our_rungs(results)
    # Our node daemon's target: a tunnel rung's processes (wireguard-go's) are not ours.
    rss = {name: r for name, r in rss_overview(results).items() if name in ours}
    row = {"what": "daemon RSS, and flat over the run", "bound": f"<= {limit} MiB, growth <= "
           f"{RSS_FLAT_MB:g} MiB after the first round", "rung": None, "measured": None,
           "met": None, "by": None}
    if not rss:
        return row
    name, worst = max(rss.items(), key=lambda kv: kv[1]["peak_mb"])
    grown = [r["growth_mb"] for r in rss.values() if r["growth_mb"] is not None]
    over = worst["peak_mb"] - limit
    flat = "flatness not measured (one round)"
    if grown:
        growth = max(grown)
        over = max(over, growth - RSS_FLAT_MB)
        flat = f"{growth:+.1f} MiB growth"
    met = over <= 0
    row.update(rung=f"{name} (largest)", measured=f"{worst['peak_mb']:.1f} MiB peak, {flat}",
               met=met, by=None if met else round(over, 1))
    return row


def verdict(row: dict) -> str:
    if row["met"] is None:
        return "not measured in this run"
    return "met" if row["met"] else f"**missed** by {row['by']:g}" + (
        "×" if "×" in row["bound"] else " MiB")
