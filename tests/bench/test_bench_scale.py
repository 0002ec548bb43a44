"""The scale benchmark: its plan and log parsing on fakes, then one quick run end to end
(a real etcd and the directory store, real daemons, real traffic)."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
from ipaddress import IPv4Network

import pytest

from bench import command, scale

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _plan(live_count: int = 20, rate: float = 50, seconds: float = 4):
    addresses = scale.Addresses({IPv4Network("10.128.1.0/24")})
    live = {addresses.subnet(): addresses.ip() for _ in range(live_count)}
    before = dict(live)
    ops = scale.plan_churn(live, addresses, rate=rate, seconds=seconds, rng=random.Random(3))
    return before, live, ops


def test_churn_plan_keeps_every_op_apart():
    before, live, ops = _plan()
    assert len(ops) == 200
    assert {op.kind for op in ops} == {"add", "change", "remove"}
    assert len({op.key for op in ops}) == len(ops)             # each told apart in the log
    last: dict[IPv4Network, float] = {}
    state = dict(before)
    for op in ops:
        assert op.at - last.get(op.subnet, -10) >= 2.0         # settled before touched again
        last[op.subnet] = op.at
        if op.kind == "add":
            assert op.subnet not in state and IPv4Network("10.128.1.0/24") != op.subnet
            state[op.subnet] = op.public_ip
        elif op.kind == "change":
            assert state[op.subnet] != op.public_ip
            state[op.subnet] = op.public_ip
        else:
            assert state.pop(op.subnet) == op.public_ip        # the IP the log will name
    assert state == live                                        # the plan's end state
    ips = [op.public_ip for op in ops if op.kind != "remove"] + list(before.values())
    assert len(set(ips)) == len(ips)


def test_churn_plan_adds_when_nothing_is_settled():
    _, _, ops = _plan(live_count=0, rate=10, seconds=1)
    assert [op.kind for op in ops] == ["add"] * 10


def test_peer_log_and_latencies():
    log = "\n".join([
        "2026-12-01 10:00:00,250 INFO dataplane.daemon.node: peer 10.128.5.0/24 at 10.98.0.7 "
        "VtepMAC 02:aa:bb:cc:dd:ee",
        "2026-12-01 10:00:01,000 INFO dataplane.daemon.node: peer 10.128.6.0/24 (10.98.0.8) left",
        "2026-12-01 10:00:02,000 INFO dataplane.daemon.node: peer 10.128.5.0/24 at 10.98.0.7",
        "2026-12-01 10:00:02,000 WARNING dataplane.daemon.node: lease watch broke",
    ])
    seen = scale.parse_peer_log(log)
    assert set(seen) == {("at", "10.128.5.0/24", "10.98.0.7"),
                         ("left", "10.128.6.0/24", "10.98.0.8")}
    base = seen[("at", "10.128.5.0/24", "10.98.0.7")]           # the first line counts
    assert seen[("left", "10.128.6.0/24", "10.98.0.8")] - base == pytest.approx(0.75)
    ops = [scale.Op(0, "add", IPv4Network("10.128.5.0/24"), "10.98.0.7"),
           scale.Op(0, "remove", IPv4Network("10.128.6.0/24"), "10.98.0.8"),
           scale.Op(0, "change", IPv4Network("10.128.6.0/24"), "10.98.0.9")]
    lat, missing = scale.latencies(ops, [base - 0.1, base + 0.5, base], seen)
    assert lat == pytest.approx([0.1, 0.25]) and missing == 1


def test_report_says_what_was_missed():
    step = {"leases": 5000, "ready_s": 1.0, "cold_start_s": 7.5, "cold_start_cpu_s": 3.0,
            "rss_mb": 50.0, "churn_ops": 10, "churn_missing": 0, "latency_p50_s": 0.01,
            "latency_p99_s": 0.02, "latency_max_s": 0.03, "churn_cpu_pct": 4.0,
            "churn_rss_mb": 51.0, "flow_sent": 100, "flow_lost": 0, "errors": []}
    doc = {"started": "s", "finished": "f", "targets": scale.TARGETS,
           "settings": {"network": "10.128.0.0/10", "churn_rate": 50, "churn_seconds": 1,
                        "flow_interval": 0.01},
           "stores": [{"store": "etcd", "steps": [step]}]}
    text = scale.render_report(doc)
    assert "| cold start < 5 s | etcd at 5000 | 7.5 s | missed by 1.50× |" in text
    assert "| change-to-table p99 < 1 s | etcd at 5000 | 0.02 s | met |" in text


def test_counts_flag_refuses_nonsense():
    parser = argparse.ArgumentParser()
    command.configure(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--scale", "--scale-leases", "500,100"])
    assert parser.parse_args(["--scale-leases", "10,20"]).scale_leases == (10, 20)


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")
def test_quick_scale_run(tmp_path):
    parser = argparse.ArgumentParser()
    command.configure(parser)
    args = parser.parse_args(["--scale", "--quick", "--out", str(tmp_path)])
    status = command.main(args)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    ours = [ns for ns in listed.split() if ns.startswith(f"b{os.getpid()}")]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert status == 0, scale.failures(doc)
    assert [st["store"] for st in doc["stores"]] == ["etcd", "directory"]
    for st in doc["stores"]:
        counts = [step["leases"] for step in st["steps"]]
        assert counts == doc["settings"][f"{st['store']}_counts"]
        for step in st["steps"]:
            assert 0 < step["ready_s"] <= step["cold_start_s"]
            assert step["churn_ops"] > 0 and step["churn_missing"] == 0   # every change landed
            assert 0 <= step["latency_p50_s"] <= step["latency_p99_s"] <= step["latency_max_s"]
            assert step["rss_mb"] > 0 and step["churn_cpu_pct"] >= 0
            # forwarding goes on while the table churns (a few echoes may die to a busy CI box)
            assert step["flow_sent"] > 0 and step["flow_lost"] <= 0.05 * step["flow_sent"]
    report = (tmp_path / "report.md").read_text()
    assert "Against the targets" in report and "| etcd | 300 |" in report
    assert (tmp_path / "plots" / "scale.png").read_bytes()[:8] == PNG_MAGIC
    assert ours == []                            # every lab namespace of this run is gone
