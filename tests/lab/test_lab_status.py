"""`dataplane lab up` and `status` from the command line, healthy and with a broken route."""

from __future__ import annotations

import json
import re

import pytest
from lab_helpers import lab_cli

from dataplane.lab import Lab

pytestmark = pytest.mark.netns


def test_up_then_status_shows_nodes_pods_and_reachability(prefix: str) -> None:
    up = lab_cli("up", "--prefix", prefix, "--nodes", "2", "--pods", "2")
    assert f"{prefix}-n2-p2" in up.stdout

    status = lab_cli("status", "--prefix", prefix)
    out = status.stdout
    for text in (f"lab {prefix}: backend kernel-vxlan", "phase ready",
                 f"{prefix}-n1  kernel-vxlan  10.99.0.1  10.244.1.0/24",
                 f"{prefix}-n2-p2  {prefix}-n2  10.244.2.3", "12/12 pairs reachable"):
        assert text in out, out
    assert "FAIL" not in out
    assert f"outside host {prefix}-out 10.99.0.249" in out

    data = json.loads(lab_cli("status", "--prefix", prefix, "--json").stdout)
    assert [n["underlay_ip"] for n in data["nodes"]] == ["10.99.0.1", "10.99.0.2"]
    assert all(n["vtep_mac"] for n in data["nodes"])
    assert len(data["reachability"]) == 12 and all(r["ok"] for r in data["reachability"])
    # the four kinds of pod traffic, with the source the far end saw (kernel nodes get
    # flanneld's rules from the lab, --ip-masq being the lab's default as kube-flannel's)
    assert [(p["kind"], p["dst_ip"], p["seen"], p["replied"]) for p in data["paths"]] == [
        ("loopback", "127.0.0.1", "127.0.0.1", True),
        ("same node", "10.244.1.3", "10.244.1.2", True),
        ("other node", "10.244.2.2", "10.244.1.2", True),
        ("outside", "10.99.0.249", "10.99.0.1", True)]

    # Take node 1's route to node 2's pods away: cross-node pairs fail, status says so.
    lab = Lab.load(prefix)
    lab.exec(lab.node(1), ["ip", "route", "del", "10.244.2.0/24"])
    broken = lab_cli("status", "--prefix", prefix, "--timeout", "0.3", check=False)
    assert broken.returncode == 1
    assert "FAIL" in broken.stdout and "4/12 pairs reachable" in broken.stdout, broken.stdout
    assert re.search(r"other node .* \(nothing arrived\) +FAIL", broken.stdout), broken.stdout


def test_status_of_a_missing_lab_names_the_problem(prefix: str) -> None:
    proc = lab_cli("status", "--prefix", prefix, check=False)
    assert proc.returncode == 1
    assert f"no lab '{prefix}'" in proc.stderr
