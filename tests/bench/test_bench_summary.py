"""From samples to the report, on synthetic samples: medians, ratio of medians, the tables,
the pcap join and the progress lines."""

from __future__ import annotations

import io
import struct

import pytest

from bench import ladder, pcap, report
from bench.progress import Progress, fmt_seconds
from bench.stats import LogHistogram
from bench.summary import METRICS, summarize

NAMES = ["host-gw", "kernel-vxlan"]


def sample(name: str, rnd: int, gbps: float) -> dict:
    return {"dataplane": name, "round": rnd, "metrics": {"tcp1_gbps": gbps, "rtt_median_us": 50.0},
            "raw": {}, "errors": {}, "hist": {"rtt": LogHistogram().counts},
            "sweep": [{"payload": 64, "goodput_mbps": gbps * 10, "efficiency": 0.6,
                       "rx_pps": 1.0, "loss_pct": 0.0, "inner_avg_bytes": 92.0,
                       "outer_avg_bytes": 142.0}]}


SAMPLES = [sample("host-gw", 1, 18.0), sample("kernel-vxlan", 1, 15.0),
           sample("host-gw", 2, 20.0), sample("kernel-vxlan", 2, 16.0),
           sample("host-gw", 3, 19.0), sample("kernel-vxlan", 3, 12.0)]


def test_medians_and_ratio_of_medians():
    s = summarize(SAMPLES, NAMES, "kernel-vxlan")
    hg, kv = s["metrics"]["host-gw"]["tcp1_gbps"], s["metrics"]["kernel-vxlan"]["tcp1_gbps"]
    assert (hg["median"], hg["n"]) == (19.0, 3)
    assert kv["median"] == 15.0 and kv["ratio"] == 1.0
    assert hg["ratio"] == pytest.approx(19.0 / 15.0)
    assert s["metrics"]["host-gw"]["tcpN_gbps"] == {"median": None, "n": 0, "ratio": None}
    assert set(s["metrics"]["host-gw"]) == set(METRICS)
    (point,) = s["sweep"]["host-gw"]
    assert point["payload"] == 64 and point["goodput_ratio"] == pytest.approx(190 / 150)


def results_doc() -> dict:
    dps = [ladder.BY_NAME[n] for n in NAMES]
    return {
        "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:01:00+00:00",
        "command": "dataplane bench --quick",
        "machine": {"cpu_model": "X", "cpus": 2, "machine": "x86_64", "kernel": "Linux 6",
                    "iperf3": "iperf 3.12", "sockperf": "3.7", "python": "3.11",
                    "tcp_congestion_control": "cubic"},
        "method": {"rounds": 3, "duration": 4, "streams": 4, "udp_payloads": [64],
                   "latency_mps": 2000, "echo_count": 100, "echo_interval": 0.01, "pin": True,
                   "client_cpus": [0], "server_cpus": [1], "order": NAMES,
                   "baseline": "kernel-vxlan", "rss_limit_mb": 64},
        "dataplanes": [{"name": d.name, "encap": d.encap, "overhead_bytes": d.overhead,
                        "underlay_mtu": 1500} for d in dps],
        "skipped": [{"name": "udp/c", "reason": "no daemon"}],
        "samples": SAMPLES, "rss_before": {}, "pcap": None,
        "summary": summarize(SAMPLES, NAMES, "kernel-vxlan"), "plots": {},
    }


def table_rows(text: str, first_header: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_header} |"))
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return rows


def test_report_tables_show_median_and_ratio():
    text = report.render(results_doc())
    assert "not run: **udp/c**: no daemon" in text
    assert "`dataplane bench --quick`" in text
    rows = {r[0]: r for r in table_rows(text, "dataplane")}
    assert rows["host-gw"][1] == "19.00 (1.27×)"
    assert rows["kernel-vxlan"][1] == "15.00 (1.00×)"
    assert rows["host-gw"][2] == "-"                  # not measured: a dash, no ratio
    overlay = {r[0]: r for r in table_rows(text, "mode")}
    assert overlay["VXLAN"][2] == "50" and overlay["VXLAN"][3] == "1450"
    assert overlay["udp (flannel)"][2] == "28" and overlay["udp (flannel)"][3] == "1472"
    assert overlay["host-gw (routing)"][2] == "0"


def _pcap(path, packets: list[bytes]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 192, 1))
        for i, p in enumerate(packets):
            f.write(struct.pack("<IIII", i, 0, len(p), len(p)) + p)


def test_pcap_join_keeps_one_header_and_all_records(tmp_path):
    a, b, empty, out = (tmp_path / n for n in ("a.pcap", "b.pcap", "c.pcap", "out.pcap"))
    _pcap(a, [b"x" * 60, b"y" * 70])
    _pcap(b, [b"z" * 80])
    empty.write_bytes(b"")
    assert pcap.join([str(a), str(empty), str(b)], str(out)) == 3
    data = out.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1"
    assert len(data) == 24 + 3 * 16 + 60 + 70 + 80


def test_progress_plain_lines_and_time_left():
    out = io.StringIO()
    p = Progress(100.0, stream=out, tty=False)
    p.status("round 1/3 host-gw", "TCP, 1 stream")
    p.advance(50.0)
    p.note("done")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[  0%] round 1/3 host-gw: TCP, 1 stream (about ")
    assert lines[1] == "done" and "\r" not in out.getvalue()
    assert fmt_seconds(59) == "59s" and fmt_seconds(61) == "1m01s" and fmt_seconds(3700) == "1h01m"


def test_render_redraws_report_and_plots_from_results_json(tmp_path):
    import json

    from bench import command, results
    from bench.stats import LogHistogram

    doc = results_doc()
    doc["schema"] = results.SCHEMA
    doc["summary"]["histogram_edges_us"] = LogHistogram.edges()
    (tmp_path / "results.json").write_text(json.dumps(doc))
    assert command.render(str(tmp_path)) == 0
    assert (tmp_path / "report.md").read_text().startswith("# What each encapsulation costs")
    assert (tmp_path / "plots" / "efficiency.png").read_bytes()[:4] == b"\x89PNG"


def test_rss_overview_before_after_and_limit():
    from bench.summary import rss_overview

    mib = 1 << 20
    doc = {"method": {"rss_limit_mb": 64},
           "rss_before": {"udp/c": [30 * mib, 31 * mib], "vxlan/c": [None, None]},
           "samples": [{"dataplane": "udp/c", "raw": {"rss_bytes": [33 * mib, 32 * mib]}},
                       {"dataplane": "udp/c", "raw": {"rss_bytes": [70 * mib, 32 * mib]}},
                       {"dataplane": "udp/c", "raw": {"rss_bytes": [34 * mib, None]}},
                       {"dataplane": "vxlan/c", "raw": {}}]}
    r = rss_overview(doc)
    assert list(r) == ["udp/c"]
    assert r["udp/c"] == {"before_mb": 31.0, "first_mb": 33.0, "after_mb": 34.0,
                          "peak_mb": 70.0, "warmup_mb": 2.0, "growth_mb": 1.0, "rounds": 3,
                          "within_limit": False}
    one = dict(doc, samples=doc["samples"][:1])
    assert rss_overview(one)["udp/c"]["growth_mb"] is None      # one round: no growth to see


def test_targets_section_judges_the_offload_rungs_of_the_same_run():
    from bench.report import targets_section

    def fig(ratio, median=1.0):
        return {"median": median, "n": 3, "ratio": ratio}

    metrics = {
        "kernel-vxlan": {"tcp1_gbps": fig(1.0), "udp_small_loss_pct": fig(None, 0.0)},
        "vxlan/c+offload": {"tcp1_gbps": fig(0.55), "tcp1_cpu_s_per_gb": fig(1.4),
                            "udp_small_rx_pps": fig(0.9), "udp_small_loss_pct": fig(None, 0.0),
                            "rtt_median_us": fig(1.7)},
        "vxlan/c+offload+mq": {"tcp1_gbps": fig(0.50), "udp_small_rx_pps": fig(1.2),
                               "udp_small_loss_pct": fig(None, 26.0)},
    }
    results = {"summary": {"baseline": "kernel-vxlan", "metrics": metrics},
               "dataplanes": [{"name": n, "encap": "vxlan"} for n in metrics]}
    text = "\n".join(targets_section(results))
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| ") and "target" not in line}
    assert "vxlan/c+offload |" in rows["one TCP stream"] and "missed** by 0.45" in rows[
        "one TCP stream"]
    assert "reached" in rows["whole-machine CPU per GB, one stream"]
    # the multi-queue rung's higher rate came with 26% loss: it does not count
    assert "0.90×" in rows["64-byte UDP packets received per second"]
    assert "missed" in rows["64-byte UDP packets received per second"]
    assert "reached" in rows["UDP round trip under light load (median)"]
    assert "Why a target is missed" in text
    plain = {"summary": {"baseline": "kernel-vxlan", "metrics": {"kernel-vxlan": {}}},
             "dataplanes": [{"name": "kernel-vxlan", "encap": "vxlan"}]}
    assert targets_section(plain) == []
