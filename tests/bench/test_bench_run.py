"""The harness end to end in quick mode: real labs, real traffic, every output checked.

One quick run serves all the checks below. It takes one rung of each kind the harness treats
differently: the two kernel labs, our daemon per packet in Python, batched C with offloads,
two workers (two threads to pin), DirectRouting (one subnet), busy-polling (with its twin
and the request/response profile) and the first userspace tunnel installed. The other rungs
differ from these only in the daemon's flags: test_every_rungs_daemon_flags_parse checks
them without root, the daemon and lab suites run those flags, and tests/bench/
test_bench_tunnels.py carries traffic through every tunnel.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess

import pytest

from bench import command, ladder, topology
from bench.summary import METRICS

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(os.geteuid() != 0,
                                 reason="needs root to create network namespaces")]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


KINDS = ("host-gw", "kernel-vxlan", "udp/python", "vxlan/c+offload", "vxlan/c+offload+mq",
         "vxlan/c+offload+dr", "vxlan/c+offload+busypoll")


def runnable() -> list[str]:
    """KINDS, and the first tunnel rung this machine has the package of, in ladder order."""
    can = [dp for dp in ladder.LADDER if topology.available(dp) is None]
    tunnel = [dp.name for dp in can if dp.tunnel is not None][:1]
    return [dp.name for dp in can if dp.name in KINDS or dp.name in tunnel]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    parser = argparse.ArgumentParser()
    command.configure(parser)
    args = parser.parse_args(["--quick", "--dataplanes", ",".join(runnable()), "--out",
                              str(out), "--pcap", str(out / "u.pcap"), "--pcap-packets", "200"])
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                                text=True).stdout.split())
    status = command.main(args)
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    with open(out / "results.json") as f:
        doc = json.load(f)
    return {"status": status, "out": out, "doc": doc, "ns_before": before, "ns_after": after}


def test_every_dataplane_produced_samples(run):
    doc = run["doc"]
    assert run["status"] == 0, [s["errors"] for s in doc["samples"]]
    ran = [dp["name"] for dp in doc["dataplanes"]]
    assert ran == runnable() and doc["skipped"] == []
    assert set(KINDS) <= set(ran)                         # this build runs every kind
    for name in ran:
        (s,) = [s for s in doc["samples"] if s["dataplane"] == name]
        assert s["errors"] == {}
        m = s["metrics"]
        assert m["tcp1_gbps"] > 0 and m["tcpN_gbps"] > 0
        assert m["udp_small_rx_pps"] > 0 and 0 <= m["udp_small_loss_pct"] <= 100
        assert 0 < m["rtt_median_us"] <= m["rtt_p99_us"]
        assert 0 < m["ping_median_us"] <= m["ping_p99_us"]
        assert 0 < m["ping_unpinned_median_us"] <= m["ping_unpinned_p99_us"]
        assert m["tcp1_unpinned_gbps"] > 0 and m["tcpN_unpinned_gbps"] > 0
        for proto in ("udp", "tcp"):
            assert m[f"rr_{proto}_tps"] > 0
            assert 0 < m[f"rr_{proto}_p50_us"] <= m[f"rr_{proto}_p99_us"]
            # one transaction in flight: the rate cannot beat the median round trip by much
            assert m[f"rr_{proto}_tps"] < 3 * 1e6 / m[f"rr_{proto}_p50_us"]
        cap = s["raw"]["capacity"]
        assert m["sender_rx_pps"] > 0
        assert 1 <= len(cap["trials"]) <= doc["method"]["capacity_trials"]
        if m["capacity_pps"] is not None:       # the best passing trial's received rate
            passing = [t for t in cap["trials"] if t["loss_pct"] <= 0.1]
            assert passing and m["capacity_pps"] == max(
                (t["sent"] - t["lost"]) / t["seconds"] for t in passing)
        assert m["tcp1_cpu_s_per_gb"] > 0
        assert (m["tcp1_daemon_cpu_s_per_gb"] is None) == (not any(
            d["daemons"] for d in doc["dataplanes"] if d["name"] == name))
        assert [p["payload"] for p in s["sweep"]] == doc["method"]["udp_payloads"]
        assert 0 <= s["raw"]["background_cpu_per_s"] <= os.cpu_count()


def test_profile_buckets_every_dataplane_or_says_why_not(run):
    prof = run["doc"]["profile"]
    if "unavailable" in prof:                   # no perf on this machine: the report says so
        assert prof["unavailable"] in (run["out"] / "report.md").read_text()
        return
    assert prof["errors"] == {}
    for dp in run["doc"]["dataplanes"]:
        p = prof["dataplanes"][dp["name"]]
        assert p["samples"] > 0
        assert sum(v for v in p["shares"].values()) == pytest.approx(1.0)
        # our daemon forwards: not on DirectRouting (routed past it), not on a tunnel rung
        # (its processes are fastd, openvpn, ...; our code is not in them)
        if dp.get("fastpath") and dp["daemons"] and "+dr" not in dp["name"]:
            assert p["shares"]["our C"] + p["shares"]["Python"] > 0
    # Under TCP request/response: the busy-poll rung, the same rung without it, the baseline.
    polled = [d["name"] for d in run["doc"]["dataplanes"] if "+busypoll" in d["name"]]
    if polled:
        rr = prof["tcp_rr"]
        assert rr["errors"] == {}
        want = {"kernel-vxlan", *polled, *(n.replace("+busypoll", "") for n in polled)}
        assert set(rr["dataplanes"]) == want
        for name in polled:
            assert rr["dataplanes"][name]["shares"]["our C"] > 0


def test_measured_header_cost_matches_the_encapsulation(run):
    doc = run["doc"]
    for dp in doc["dataplanes"]:
        (s,) = [s for s in doc["samples"] if s["dataplane"] == dp["name"]]
        for p in s["sweep"]:
            if p["coalesced"]:
                assert p["outer_avg_bytes"] is None and p["efficiency"] is None
                continue
            # average outer - inner packet size, from interface counters: the header bytes
            # (WireGuard also pads the inner packet to a multiple of 16 bytes)
            padding = 15 if dp["name"] == "wireguard-go" else 0
            assert p["outer_avg_bytes"] - p["inner_avg_bytes"] == pytest.approx(
                dp["overhead_bytes"] + padding / 2, abs=2.0 + padding / 2)


def test_ratios_are_to_kernel_vxlan_of_the_same_run(run):
    doc = run["doc"]
    raw = {s["dataplane"]: s["raw"]["tcp1"] for s in doc["samples"]}
    # TCP 1 stream by hand from the raw iperf3 figures: bits received / receiver seconds.
    def gbps(r):
        return r["bytes_received"] * 8 / r["seconds"] / 1e9
    expected = gbps(raw["host-gw"]) / gbps(raw["kernel-vxlan"])
    got = doc["summary"]["metrics"]["host-gw"]["tcp1_gbps"]["ratio"]
    assert got == pytest.approx(expected, rel=1e-3)
    for figures in doc["summary"]["metrics"].values():
        for key, f in figures.items():
            base = doc["summary"]["metrics"]["kernel-vxlan"][key]["median"]
            if f["median"] is not None and base:
                assert f["ratio"] == pytest.approx(f["median"] / base)
    assert all(f["ratio"] in (1.0, None)
               for f in doc["summary"]["metrics"]["kernel-vxlan"].values())


def test_json_is_complete(run):
    doc = run["doc"]
    assert doc["schema"] == "dataplane-bench/1"
    assert doc["command"].startswith("dataplane bench ") and "--quick" in doc["command"]
    assert doc["machine"]["cpus"] == os.cpu_count() and doc["machine"]["kernel"]
    assert set(doc["summary"]["metrics"]["host-gw"]) == set(METRICS)
    assert doc["method"]["order"] == [d["name"] for d in doc["dataplanes"]]


def test_report_has_a_row_per_dataplane(run):
    text = (run["out"] / "report.md").read_text()
    names = [d["name"] + (" (encrypts)" if d.get("encrypts") else "")
             for d in run["doc"]["dataplanes"]]
    lines = text.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| dataplane | TCP 1 stream"))
    rows = [ln for ln in lines[header + 2:header + 2 + len(names)]]
    assert [r.split("|")[1].strip() for r in rows] == names
    kv = next(r for r in rows if r.split("|")[1].strip() == "kernel-vxlan")
    assert "(1.00×)" in kv.split("|")[2]
    for section in ("## 1. Overlay or routing", "## 5. Method", "## 6. Machine", "Command: `"):
        assert section in text


def test_plots_are_images(run):
    plots = run["out"] / "plots"
    for name in ("throughput", "cpu_per_gb", "pps", "latency", "efficiency"):
        png = (plots / f"{name}.png").read_bytes()
        assert png[:8] == PNG_MAGIC
        width, height = struct.unpack(">II", png[16:24])
        assert width > 400 and height > 300
        assert (plots / f"{name}.svg").read_text().lstrip().startswith("<?xml")


def test_pcap_holds_underlay_packets(run):
    info = run["doc"]["pcap"]
    data = (run["out"] / "u.pcap").read_bytes()
    assert data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")
    assert info["records"] > 0 and len(data) > 24
    assert len(data) <= 24 + info["records"] * (16 + info["snaplen"])


def test_nothing_left_behind(run):
    """This run's labs are gone (another harness, a soak say, may be running beside it)."""
    mine = set(topology.prefixes(len(ladder.LADDER)))
    ours = [n for n in run["ns_after"].split() if n.split("-")[0] in mine]
    assert ours == []
    left = os.listdir(topology.STATE_ROOT) if os.path.isdir(topology.STATE_ROOT) else []
    assert not mine & set(left)


def test_labs_of_a_killed_harness_are_removed_by_the_next_run():
    from dataplane.lab import Lab

    gone = subprocess.Popen(["true"])
    gone.wait()                                   # a pid that no longer runs
    (prefix,) = topology.prefixes(1, pid=gone.pid)
    lab = Lab(prefix, nodes=1, pods=0, backend="host-gw", state_root=topology.STATE_ROOT)
    try:
        lab.up()
        assert prefix in topology.remove_stale_labs()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert not [n for n in listed.split() if n.startswith(prefix + "-")]
    finally:
        lab.down()
