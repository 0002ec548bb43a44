"""DirectRouting in the lab: our vxlan daemon beside a kernel flannel.1 node programmed as
flanneld programs it with DirectRouting, on one underlay subnet. Both route each other's pods
through the underlay (host-gw's route), nothing is tunnelled, TCP is intact both ways."""

from __future__ import annotations

import sys
import json

import pytest

from dataplane.daemon.metrics import parse_metrics
from dataplane.lab import Lab
from dataplane.lab.daemon import METRICS_PORT
from dataplane.lab.errors import LabError

pytestmark = pytest.mark.netns


def packets(lab: Lab, node) -> float:
    code = (f"import urllib.request;print(urllib.request.urlopen("
            f"'http://127.0.0.1:{METRICS_PORT}/metrics', timeout=5).read().decode())")
    m = parse_metrics(lab.exec(node, [sys.executable, "-c", code]).stdout)
    assert 'dataplane_packets_total{direction="egress"}' in m
    return sum(m[f'dataplane_packets_total{{direction="{d}"}}'] for d in ("egress", "ingress"))


def test_our_node_and_a_kernel_node_route_directly(prefix: str) -> None:
    with Lab(prefix, nodes=2, pods=1, backend="vxlan", kernel_nodes=1,
             direct_routing=True) as lab:
        ours, kernel = lab.nodes
        assert json.loads((lab.store.root / "config").read_text())["Backend"][
            "DirectRouting"] is True
        assert f"via {kernel.underlay_ip} dev eth0" in lab.exec(
            ours, ["ip", "route", "show", str(kernel.subnet)]).stdout
        assert f"via {ours.underlay_ip} dev eth0" in lab.exec(
            kernel, ["ip", "route", "show", str(ours.subnet)]).stdout
        # the kernel node tunnels nothing to us: no FDB entry, no neighbour for our gateway
        assert "dst" not in lab.exec(kernel, ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
        before = packets(lab, ours)
        a, b = lab.pod(1, 1), lab.pod(2, 1)
        for src, dst in [(a, b), (b, a)]:
            result = lab.tcp_check(src, dst, nbytes=4 << 20)
            assert result.ok, result
        assert packets(lab, ours) == before


def test_two_of_our_nodes_route_directly(prefix: str) -> None:
    with Lab(prefix, nodes=2, pods=1, backend="vxlan", direct_routing=True) as lab:
        n1, n2 = lab.nodes
        assert f"via {n2.underlay_ip} dev eth0" in lab.exec(
            n1, ["ip", "route", "show", str(n2.subnet)]).stdout
        result = lab.tcp_check(lab.pod(1, 1), lab.pod(2, 1), nbytes=4 << 20)
        assert result.ok, result


def test_direct_routing_is_a_vxlan_option() -> None:
    with pytest.raises(LabError, match="vxlan option"):
        Lab("tdr", backend="host-gw", direct_routing=True)
