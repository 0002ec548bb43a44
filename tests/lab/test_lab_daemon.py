"""Labs running our node daemon: udp, vxlan, and vxlan mixed with kernel-vxlan nodes."""

from __future__ import annotations

import pytest

from dataplane.lab import Lab

pytestmark = pytest.mark.netns


def check_traffic(lab: Lab) -> None:
    matrix = lab.reachability()
    assert [pair for pair, ok in matrix.items() if not ok] == []
    first, last = lab.pods[0], lab.pods[-1]
    for src, dst in [(first, last), (last, first)]:
        result = lab.tcp_check(src, dst, nbytes=4 << 20)
        assert result.ok, result
    assert sorted(lab.daemon_pids()) == sorted(n.name for n in lab.nodes if n.runs_daemon)


@pytest.mark.parametrize("backend,fastpath,nodes", [
    ("udp", "c", 2), ("udp", "python", 2), ("vxlan", "c", 2), ("vxlan", "python", 2),
    ("udp", "c", 3), ("vxlan", "c", 3)])
def test_daemon_lab(prefix: str, backend: str, fastpath: str, nodes: int) -> None:
    with Lab(prefix, nodes=nodes, pods=2, backend=backend, fastpath=fastpath) as lab:
        check_traffic(lab)


def test_mixed_vxlan_lab_with_a_kernel_node(prefix: str) -> None:
    with Lab(prefix, nodes=3, pods=1, backend="vxlan", kernel_nodes=1) as lab:
        assert [n.backend for n in lab.nodes] == ["vxlan", "vxlan", "kernel-vxlan"]
        check_traffic(lab)
