"""`down` removes everything, whatever state the lab is in: after `up` was killed with
SIGKILL at various points, without its state file, twice in a row."""

from __future__ import annotations

import json
import signal

import pytest
from lab_helpers import lab_cli, leftovers

from dataplane.lab import Lab, teardown
from dataplane.lab.lab import FAILPOINT_ENV, STATE_ROOT

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("step", ["nodes", "store", "pods", "pod:{prefix}-n2-p1"])
def test_down_after_up_was_killed(prefix: str, step: str) -> None:
    crashed = lab_cli("up", "--prefix", prefix, "--nodes", "2", "--pods", "2",
                      env={FAILPOINT_ENV: step.format(prefix=prefix)}, check=False)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    state = json.loads((STATE_ROOT / prefix / "state.json").read_text())
    assert state["phase"] != "ready"
    assert leftovers(prefix)          # a half-built lab is really there

    assert "removed" in lab_cli("down", "--prefix", prefix).stdout
    assert leftovers(prefix) == []
    assert "nothing to remove" in lab_cli("down", "--prefix", prefix).stdout


def test_down_without_state_file_kills_what_runs_inside(prefix: str) -> None:
    lab = Lab(prefix, nodes=2, pods=1, backend="kernel-vxlan").up()
    sleeper = lab.popen(lab.pod(2, 1), ["sleep", "300"])
    (STATE_ROOT / prefix / "state.json").unlink()       # as if lost in a crash
    removed = teardown(prefix)
    assert sorted(removed) == sorted([f"{prefix}-ul", f"{prefix}-n1", f"{prefix}-n2",
                                      f"{prefix}-n1-p1", f"{prefix}-n2-p1", f"{prefix}-out"])
    assert sleeper.wait(timeout=5) == -signal.SIGTERM
    assert leftovers(prefix) == []


def test_down_of_a_lab_that_never_existed(prefix: str) -> None:
    assert teardown(prefix) == []
    assert Lab(prefix).down() == []


def test_down_decommissions_every_node_before_the_store_goes(prefix: str) -> None:
    """Leases and subnet.env are given back with `dataplane leases release` in each node (the
    step where further clean-up, such as NAT rules, hooks in), not just deleted with the
    lab's directory."""
    from dataplane.lab.cleanup import _decommission_nodes
    from dataplane.lab.state import LabState

    lab = Lab(prefix, nodes=2, pods=1, backend="kernel-vxlan").up()
    try:
        assert len(lab.store.leases()) == 2
        assert all(n.subnet_file.exists() for n in lab.nodes)
        _decommission_nodes(LabState.load(STATE_ROOT / prefix / "state.json"),
                            STATE_ROOT / prefix)
        assert lab.store.leases() == {}
        assert not any(n.subnet_file.exists() for n in lab.nodes)
    finally:
        lab.down()
    assert leftovers(prefix) == []
