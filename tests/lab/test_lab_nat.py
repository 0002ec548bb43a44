"""The four kinds of pod traffic in labs with flanneld's rules: our daemons (--ip-masq, as
kube-flannel runs flanneld) and kernel nodes programmed by the lab, iptables and nftables."""

from __future__ import annotations

import re

import pytest

from dataplane.lab import Lab
from dataplane.lab.paths import probe

pytestmark = pytest.mark.netns


def seen(lab: Lab) -> dict[str, tuple[str | None, bool]]:
    return {p.kind: (p.seen, p.replied) for p in probe(lab, timeout=2.0)}


@pytest.mark.parametrize("backend,nftables", [("vxlan", False), ("vxlan", True),
                                              ("host-gw", False), ("kernel-vxlan", True)])
def test_four_kinds_of_pod_traffic(prefix: str, backend: str, nftables: bool) -> None:
    with Lab(prefix, nodes=2, pods=2, backend=backend, nftables=nftables) as lab:
        pod = str(lab.pod(1, 1).ip)
        assert seen(lab) == {"loopback": ("127.0.0.1", True), "same node": (pod, True),
                             "other node": (pod, True), "outside": ("10.99.0.1", True)}
        n1 = lab.node(1)
        if nftables:
            table = lab.exec(n1, ["nft", "list", "table", "ip", "flannel-ipv4"]).stdout
            assert "masquerade fully-random" in table
            assert "FLANNEL" not in lab.exec(n1, ["iptables-save"]).stdout
        else:
            saved = lab.exec(n1, ["iptables-save"]).stdout
            assert saved.count("-j FLANNEL-POSTRTG") == 1 and saved.count("-j FLANNEL-FWD") == 1

        # kube-proxy's mark on node 1: our chain leaves the packet alone, nothing else NATs
        mark = ["iptables", "-t", "mangle", "-A", "PREROUTING", "-s", pod, "-j", "MARK",
                "--set-xmark", "0x4000/0x4000"]
        lab.exec(n1, mark)
        assert seen(lab)["outside"] == (pod, False)      # the outside host cannot answer a pod


def test_without_ip_masq_the_bridge_masquerades_and_pods_lose_their_address(prefix: str) -> None:
    """FLANNEL_IPMASQ=false: the CNI bridge plugin masquerades everything leaving the node's
    subnet, pod-to-pod across nodes too (the issue's point: that is why --ip-masq exists)."""
    with Lab(prefix, nodes=2, pods=1, backend="vxlan", ip_masq=False) as lab:
        kinds = seen(lab)
        assert kinds["outside"] == ("10.99.0.1", True)
        assert kinds["other node"] == ("10.244.1.0", True)     # node 1's flannel.1, not the pod
        assert "FLANNEL-POSTRTG" not in lab.exec(lab.node(1), ["iptables-save"]).stdout


def test_status_shows_the_four_kinds(prefix: str) -> None:
    from lab_helpers import lab_cli

    lab_cli("up", "--prefix", prefix, "--nodes", "2", "--pods", "2", "--backend", "vxlan",
            "--nftables")
    out = lab_cli("status", "--prefix", prefix).stdout
    assert f"outside host {prefix}-out 10.99.0.249" in out
    p = re.escape(prefix)
    for row in (rf"loopback +127\.0\.0\.1 in {p}-n1-p1 +lo +127\.0\.0\.1 \(loopback\) +ok",
                rf"same node +10\.244\.1\.3 in {p}-n1-p2 +cni0 +10\.244\.1\.2 "
                rf"\({p}-n1-p1, the pod itself\) +ok",
                rf"other node +10\.244\.2\.2 in {p}-n2-p1 +flannel\.1 +10\.244\.1\.2 "
                rf"\({p}-n1-p1, the pod itself\) +ok",
                rf"outside +10\.99\.0\.249 in {p}-out +eth0, NAT +10\.99\.0\.1 "
                rf"\({p}-n1's underlay address\) +ok"):
        assert re.search(row, out), (row, out)
    assert "FAIL" not in out
