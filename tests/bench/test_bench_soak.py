"""The soak: its verdict on fakes, then CI's one-minute run end to end."""

from __future__ import annotations

import argparse
import json
import os
import subprocess

import pytest

from bench import command, soak

MIB = 2**20


def _doc(rss_mib: list[float], fds: list[int], alive: bool = True, lost: int = 0) -> dict:
    samples = [{"t": 10.0 * (i + 1), "daemons": {"n1": {
        "alive": alive or i < len(rss_mib) - 1, "rss_bytes": int(r * MIB), "fds": f,
        "drops": {}}}} for i, (r, f) in enumerate(zip(rss_mib, fds))]
    return {"settings": {"seconds": 100.0}, "samples": samples, "errors": [],
            "flow": {"sent": 1000, "received": 1000 - lost}, "udp": {"total": {}}}


def test_verdict_counts_growth_after_warmup_only():
    # warm-up of 20 s: the 40 MiB start-up step before it is not growth
    v = soak.verdict(_doc([10, 40, 41, 41.5, 41.9], [30] * 5))
    assert v["daemons"]["n1"]["rss_growth_mb"] == pytest.approx(1.9, abs=0.01) and v["met"]


@pytest.mark.parametrize("doc", [
    _doc([40, 40, 41, 42, 43], [30] * 5),              # grows 3 MiB after warm-up
    _doc([40] * 5, [30, 30, 31, 32, 33]),              # leaks descriptors, one per sample
    _doc([40] * 5, [30] * 5, alive=False),             # died
    _doc([40] * 5, [30] * 5, lost=3),                  # lost echoes on a path churn never touches
], ids=["rss", "fds", "crash", "loss"])
def test_verdict_refuses(doc):
    assert not soak.verdict(doc)["met"]


def test_a_connection_coming_and_going_is_not_a_leak():
    assert soak.verdict(_doc([40] * 5, [30, 31, 33, 31, 32]))["met"]


def test_the_echo_flow_covers_the_whole_run():
    assert soak.flow_interval(60) == 0.01
    assert soak.flow_interval(3600) * soak.FLOW_MAX >= 3600


def test_short_runs_keep_every_event():
    s = soak.SoakSettings.for_duration(60)
    assert s.churn_every < 60 and s.etcd_every < 60
    assert soak.SoakSettings.for_duration(3600).churn_every == 60


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")
def test_one_minute_soak(tmp_path):
    parser = argparse.ArgumentParser()
    command.configure(parser)
    args = parser.parse_args(["--soak", "60", "--out", str(tmp_path)])
    status = command.main(args)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    ours = [ns for ns in listed.split() if ns.startswith(f"b{os.getpid()}")]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["errors"] == []
    assert len(doc["samples"]) >= 5
    events = [e["event"] for e in doc["events"]]
    assert "node 3 left" in events and "node 3 joined" in events
    assert any(e.startswith("etcd ") for e in events)
    v = doc["verdict"]
    assert len(v["daemons"]) == 2
    for d in v["daemons"].values():
        assert not d["crashed"] and d["rss_first_mb"] > 0
        assert d["fds_last"] <= d["fds_first"] + soak.FD_SLACK  # no descriptor leak
        assert d["rss_growth_mb"] < soak.RSS_GROWTH_MB          # no leak worth the name
    assert v["echo_lost"] <= 0.01 * doc["flow"]["sent"]
    assert status == (0 if v["met"] else 1)
    assert "## Plots" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "plots" / "soak.png").stat().st_size > 0
    assert ours == []                            # every lab namespace of this run is gone
