"""Labs running our node daemon: udp, vxlan, and vxlan mixed with kernel-vxlan nodes."""

from __future__ import annotations

import time

import pytest

from dataplane.lab import Lab
from dataplane.lab.daemon import _poll_peers
from dataplane.lab.nsthread import call_in_netns

pytestmark = pytest.mark.netns


def check_traffic(lab: Lab) -> None:
    matrix = lab.reachability()
    assert [pair for pair, ok in matrix.items() if not ok] == []
    first, last = lab.pods[0], lab.pods[-1]
    for src, dst in [(first, last), (last, first)]:
        result = lab.tcp_check(src, dst, nbytes=4 << 20)
        assert result.ok, result
    assert sorted(lab.daemon_pids()) == sorted(n.name for n in lab.nodes if n.runs_daemon)


# The C path on three nodes (every pair, so two nodes' case too), the Python one on two.
@pytest.mark.parametrize("backend,fastpath,nodes", [
    ("udp", "python", 2), ("vxlan", "python", 2), ("udp", "c", 3), ("vxlan", "c", 3)])
def test_daemon_lab(prefix: str, backend: str, fastpath: str, nodes: int) -> None:
    with Lab(prefix, nodes=nodes, pods=2, backend=backend, fastpath=fastpath) as lab:
        check_traffic(lab)


def test_mixed_vxlan_lab_with_a_kernel_node(prefix: str) -> None:
    with Lab(prefix, nodes=3, pods=1, backend="vxlan", kernel_nodes=1) as lab:
        assert [n.backend for n in lab.nodes] == ["vxlan", "vxlan", "kernel-vxlan"]
        check_traffic(lab)



def _peers(node) -> int:
    """How many peers the node's daemon knows, from its /metrics (-1: not answering)."""
    return call_in_netns(node.netns, lambda: _poll_peers(99, 0))


def _wait_peers(node, want: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while (known := _peers(node)) != want and time.monotonic() < deadline:
        time.sleep(0.1)
    return known


def test_a_restart_keeps_the_subnet_and_decommission_gives_it_back(prefix: str) -> None:
    """A stop keeps lease and subnet.env (the other node keeps the peer); decommissioning
    (`dataplane leases release --subnet-file` in the node) removes both and the peer goes."""
    with Lab(prefix, nodes=2, pods=1, backend="udp") as lab:
        n1, n2 = lab.nodes
        lab.stop_daemon(n1)
        assert n1.subnet in lab.store.leases() and n1.subnet_file.exists()
        time.sleep(1.5)                               # three polls of the store
        assert _peers(n2) == 1
        lab.start_daemon(n1)
        assert lab.ping(lab.pod(1, 1), lab.pod(2, 1))

        done = lab.decommission(n1)
        assert f"released lease {n1.subnet}" in done and str(n1.subnet_file) in done
        assert n1.subnet not in lab.store.leases() and not n1.subnet_file.exists()
        assert _wait_peers(n2, 0) == 0
        lab.start_daemon(n1)                          # a new node to the others
        assert _wait_peers(n2, 1) == 1
        assert lab.ping(lab.pod(2, 1), lab.pod(1, 1))
