"""The issue's targets judged from a summary (bench.targets), on a fake run."""

from __future__ import annotations

from bench import report, targets
from bench.measure import busy_cpus


def fake_run(ratios: dict[str, dict[str, float]], rss: dict[str, tuple[int, list[int]]]
             ) -> dict:
    dps = [{"name": n, "fastpath": None if n.startswith("kernel") else "c"} for n in ratios]
    metrics = {n: {k: {"median": 1.0, "n": 1, "ratio": r} for k, r in figs.items()}
               for n, figs in ratios.items()}
    samples = [{"dataplane": n, "raw": {"rss_bytes": [mb << 20 for mb in [after]]}}
               for n, (_, afters) in rss.items() for after in afters]
    return {"dataplanes": dps, "summary": {"baseline": "kernel-vxlan", "metrics": metrics},
            "method": {"rss_limit_mb": 64}, "samples": samples,
            "rss_before": {n: [before << 20] for n, (before, _) in rss.items()}}


def by_what(rows: list[dict]) -> dict[str, dict]:
    return {r["what"]: r for r in rows}


def test_best_rung_each_target_applies_to_and_by_how_much():
    run = fake_run({
        "kernel-vxlan": {"tcp1_unpinned_gbps": 1.0, "capacity_pps": 1.0},
        "vxlan/c+offload": {"tcp1_unpinned_gbps": 0.55, "tcp1_unpinned_cpu_s_per_gb": 1.8,
                            "capacity_pps": 0.7},
        "udp/c+offload": {"tcp1_unpinned_gbps": 0.66, "tcp1_unpinned_cpu_s_per_gb": 2.3,
                          "capacity_pps": 1.1},
        "vxlan/c+offload+dr": {"tcp1_unpinned_gbps": 1.25, "capacity_pps": 3.0},
    }, rss={"vxlan/c+offload": (38, [40, 41])})
    rows = by_what(targets.evaluate(run))
    one = rows["one TCP stream, unpinned"]
    assert (one["rung"], one["met"], one["by"]) == ("udp/c+offload", True, 0.04)
    cpu = rows["machine CPU per GB, one stream, unpinned"]     # lower is better
    assert (cpu["rung"], cpu["met"]) == ("vxlan/c+offload", True)
    cap = rows["64 B capacity at <= 0.1% loss"]                # the DR rung does not count
    assert (cap["rung"], cap["measured"], cap["met"]) == ("udp/c+offload", "1.10×", True)
    dr = rows["DirectRouting: one TCP stream, unpinned"]
    assert (dr["rung"], dr["met"]) == ("vxlan/c+offload+dr", True)
    bp = rows["ICMP RTT at 500/s with --busy-poll (median)"]
    assert bp["rung"] is None and targets.verdict(bp) == "not measured in this run"
    mem = rows["daemon RSS, and flat over the run"]
    assert mem["met"] is True and "41.0 MiB peak" in mem["measured"]


def test_missed_targets_say_by_how_much():
    run = fake_run({
        "kernel-vxlan": {"tcp1_unpinned_gbps": 1.0},
        "vxlan/c+offload": {"tcp1_unpinned_gbps": 0.5},
        "vxlan/c+offload+busypoll": {"ping_unpinned_median_us": 4.5, "rr_udp_tps": 0.6},
    }, rss={"vxlan/c+offload": (38, [50, 70])})
    rows = by_what(targets.evaluate(run))
    one = rows["one TCP stream, unpinned"]
    assert one["met"] is False and targets.verdict(one) == "**missed** by 0.12×"
    bp = rows["ICMP RTT at 500/s with --busy-poll (median)"]
    assert bp["met"] is False and bp["by"] == 1.5
    assert rows["UDP request/response rate with --busy-poll"]["met"] is True
    mem = rows["daemon RSS, and flat over the run"]
    assert mem["met"] is False and targets.verdict(mem) == "**missed** by 16 MiB"   # +20 MiB


def test_rss_growth_beyond_flat_misses_even_under_the_limit():
    run = fake_run({"kernel-vxlan": {}, "vxlan/c": {}}, rss={"vxlan/c": (30, [32, 40])})
    mem = by_what(targets.evaluate(run))["daemon RSS, and flat over the run"]
    assert mem["met"] is False and mem["by"] == 4.0            # 8 MiB after round 1, 4 allowed


def test_warm_up_is_not_growth_and_one_round_says_flatness_is_unmeasured():
    run = fake_run({"kernel-vxlan": {}, "vxlan/c": {}}, rss={"vxlan/c": (30, [38, 39, 39])})
    mem = by_what(targets.evaluate(run))["daemon RSS, and flat over the run"]
    assert mem["met"] is True and "+1.0 MiB growth" in mem["measured"]
    one = fake_run({"kernel-vxlan": {}, "vxlan/c": {}}, rss={"vxlan/c": (30, [38])})
    mem = by_what(targets.evaluate(one))["daemon RSS, and flat over the run"]
    assert "flatness not measured (one round)" in mem["measured"]


def test_report_section_only_for_runs_that_measured_the_new_figures():
    old = fake_run({"kernel-vxlan": {"tcp1_gbps": 1.0}, "vxlan/c": {"tcp1_gbps": 0.5}},
                   rss={})
    assert report.issue_targets_section(old) == []
    new = fake_run({"kernel-vxlan": {"tcp1_unpinned_gbps": 1.0},
                    "vxlan/c+offload": {"tcp1_unpinned_gbps": 0.5}}, rss={})
    text = "\n".join(report.issue_targets_section(new))
    assert "| one TCP stream, unpinned | >= 0.62× | vxlan/c+offload | 0.50× | **missed**" in text


def test_busy_cpus_uses_the_measured_window():
    # 2 CPUs, a window of 2.05 CPU-seconds of which 2.05 busy: 2 CPUs busy, never 2.05
    assert busy_cpus(2.05, 2.05, 2) == 2.0
    assert busy_cpus(0.5, 2.0, 2) == 0.5
    assert busy_cpus(0.0, 0.0, 2) == 0.0


def test_busy_poll_cost_sits_beside_the_rung_without_it():
    run = fake_run({"kernel-vxlan": {}, "vxlan/c+offload": {}, "vxlan/c+offload+busypoll": {}},
                   rss={})
    m = run["summary"]["metrics"]
    m["vxlan/c+offload"]["daemon_idle_cpu_per_s"] = {"median": 0.001, "ratio": None}
    m["vxlan/c+offload+busypoll"]["daemon_idle_cpu_per_s"] = {"median": 0.25, "ratio": None}
    text = "\n".join(report.busy_poll_section(run))
    assert "| vxlan/c+offload | 0.001 |" in text
    assert "| vxlan/c+offload+busypoll | 0.250 |" in text
    del run["dataplanes"][2]
    assert report.busy_poll_section(run) == []


def test_profile_section_says_why_there_is_none():
    run = fake_run({"kernel-vxlan": {}}, rss={})
    run["profile"] = {"unavailable": "perf is not installed"}
    assert "No profile in this run: perf is not installed." in report.profile_section(run)
    run["profile"] = None
    assert report.profile_section(run) == []


def test_a_tunnel_rungs_memory_is_not_our_daemons():
    run = fake_run({"kernel-vxlan": {}, "vxlan/c": {}, "wireguard-go": {}},
                   rss={"vxlan/c": (30, [38, 39]), "wireguard-go": (5, [65, 80])})
    for dp in run["dataplanes"]:
        if dp["name"] == "wireguard-go":
            dp["fastpath"] = None                   # bench.ladder: tunnel rungs have none
    mem = by_what(targets.evaluate(run))["daemon RSS, and flat over the run"]
    assert mem["met"] is True and mem["rung"] == "vxlan/c (largest)"
    assert mem["measured"] == "39.0 MiB peak, +1.0 MiB growth"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in report.memory_section(run)
            if line.startswith("| ")}
    assert rows["wireguard-go"].endswith("| - |") and rows["vxlan/c"].endswith("| yes |")
