"""The 64 B capacity search (RFC 2544 style) against fake dataplanes of known capacity."""

from __future__ import annotations

import pytest

from bench.capacity import Capacity, Trial, search


def fake(capacity_pps: float, sender_pps: float, seconds: float = 1.0):
    """A dataplane that carries up to capacity_pps and drops everything above it, behind a
    sender that offers at most sender_pps."""
    offered: list[float | None] = []

    def run_trial(pps: float | None) -> Trial:
        offered.append(pps)
        tx = sender_pps if pps is None else min(pps, sender_pps)
        rx = min(tx, capacity_pps)
        return Trial(pps, round(tx * seconds), round((tx - rx) * seconds), seconds)
    return run_trial, offered


def test_a_dataplane_faster_than_the_sender_is_sender_limited_after_one_trial():
    run_trial, offered = fake(capacity_pps=500_000, sender_pps=100_000)
    c = search(run_trial, trials=6)
    assert offered == [None]
    assert c.sender_limited and c.pps == pytest.approx(100_000)
    assert c.sender_loss_pct == 0


def test_binary_search_converges_below_the_capacity():
    run_trial, offered = fake(capacity_pps=60_000, sender_pps=100_000)
    c = search(run_trial, trials=6)
    assert len(offered) == 6 and offered[0] is None
    assert offered[1:3] == [50_000, 75_000]          # halfway each time: pass, then fail
    assert not c.sender_limited
    # 5 halvings of 100 kpps: within 100/32 kpps of the capacity, and never above it
    assert 60_000 - 100_000 / 32 <= c.pps <= 60_000
    assert c.sender_rx_pps == pytest.approx(60_000)
    assert c.sender_loss_pct == pytest.approx(40.0)


def test_loss_limit_is_a_tenth_of_a_percent():
    # 0.1% loss passes, 0.2% does not
    def trial(loss_pct: float):
        return lambda pps: Trial(pps, 100_000, round(loss_pct * 1000), 1.0)
    assert search(trial(0.1), trials=3).sender_limited
    assert search(trial(0.2), trials=3).pps is None


def test_nothing_passes_gives_no_capacity_and_one_trial_is_just_the_sender():
    run_trial, offered = fake(capacity_pps=0, sender_pps=100_000)
    c = search(run_trial, trials=4)
    assert c.pps is None and len(offered) == 4
    run_trial, offered = fake(capacity_pps=10, sender_pps=100_000)
    c1 = search(run_trial, trials=1)
    assert offered == [None] and c1.pps is None and not c1.sender_limited


def test_as_dict_keeps_every_trial():
    run_trial, _ = fake(capacity_pps=60_000, sender_pps=100_000)
    d = search(run_trial, trials=3).as_dict()
    assert isinstance(d, dict) and len(d["trials"]) == 3
    assert d["trials"][0]["offered_pps"] is None and d["trials"][0]["loss_pct"] == 40.0
    assert Capacity(**{**d, "trials": []}).pps == d["pps"]
