"""flanneld's rules in a real kernel, with the real iptables and nft, in namespaces this test
creates: a pod, its node, and a far host that plays both another node's pod (10.244.2.2, routed
host-gw style) and an address outside the pod network (10.99.0.2).

    P  eth0 10.244.1.2 ── c0 10.244.1.1  N  u0 10.99.0.1 ── u0 10.99.0.2  F  (lo 10.244.2.2)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Network

import pytest

from dataplane.lab.paths import exchange
from dataplane.netfilter import TrafficManager, remove_rules
from tests import netns

pytestmark = pytest.mark.netns

NETWORK = IPv4Network("10.244.0.0/16")
SUBNET = IPv4Network("10.244.1.0/24")
POD, NODE, OUTSIDE, FAR_POD = "10.244.1.2", "10.99.0.1", "10.99.0.2", "10.244.2.2"

C = '-m comment --comment "flanneld masq"'
F = '-m comment --comment "flanneld forward"'
IPT_NAT = [
    ":FLANNEL-POSTRTG - [0:0]",
    f"-A POSTROUTING {C} -j FLANNEL-POSTRTG",
    f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {C} -j RETURN",
    f"-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 {C} -j RETURN",
    f"-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 {C} -j RETURN",
    f"-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 {C} -j RETURN",
    f"-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 {C} -j MASQUERADE --random-fully",
    f"-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 {C} -j MASQUERADE --random-fully",
]
IPT_FILTER = [":FLANNEL-FWD - [0:0]", f"-A FORWARD {F} -j FLANNEL-FWD",
              f"-A FLANNEL-FWD -s 10.244.0.0/16 {F} -j ACCEPT",
              f"-A FLANNEL-FWD -d 10.244.0.0/16 {F} -j ACCEPT"]
NFT = """table ip flannel-ipv4 {
chain postrtg {
type nat hook postrouting priority srcnat; policy accept;
meta mark & 0x00004000 == 0x00004000 return
ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return
ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return
ip saddr != 10.244.0.0/16 ip daddr 10.244.1.0/24 return
ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random
}
chain forward {
type filter hook forward priority filter; policy accept;
ip saddr 10.244.0.0/16 accept
ip daddr 10.244.0.0/16 accept
}
}""".splitlines()


@dataclass
class Topo:
    pod: str
    node: str
    far: str

    def sh(self, *argv: str, check: bool = True):
        return netns.run("ip", "netns", "exec", self.node, *argv, check=check)

    def seen(self, *targets: str) -> list[tuple[str | None, bool]]:
        return exchange(self.pod, [(self.far, t) for t in targets], timeout=2.0)

    def ipt(self, table: str) -> list[str]:
        out = self.sh("iptables-save", "-t", table).stdout
        return [line for line in out.splitlines() if "FLANNEL" in line]

    def nft(self) -> list[str]:
        proc = self.sh("nft", "list", "table", "ip", "flannel-ipv4", check=False)
        return [line.strip() for line in proc.stdout.splitlines() if line.strip()]

    def rules(self, backend: str) -> list[str]:
        return self.ipt("nat") + self.ipt("filter") if backend == "iptables" else self.nft()

    def start(self, backend: str, **kwargs) -> TrafficManager:
        return TrafficManager.start(NETWORK, SUBNET, ip_masq=kwargs.pop("ip_masq", True),
                                    nftables=backend == "nftables", netns=self.node, **kwargs)


@pytest.fixture
def topo():
    netns.require_root()
    p = netns.prefix()
    t = Topo(f"{p}-pod", f"{p}-node", f"{p}-far")
    try:
        for ns in (t.pod, t.node, t.far):
            netns.netns_add(ns)
        netns.run("ip", "link", "add", "eth0", "netns", t.pod, "type", "veth", "peer", "name",
                  "c0", "netns", t.node)
        netns.run("ip", "link", "add", "u0", "netns", t.node, "type", "veth", "peer", "name",
                  "u0", "netns", t.far)
        for ns, dev, addr in ((t.pod, "eth0", f"{POD}/24"), (t.node, "c0", "10.244.1.1/24"),
                              (t.node, "u0", f"{NODE}/24"), (t.far, "u0", f"{OUTSIDE}/24"),
                              (t.far, "lo", f"{FAR_POD}/32")):
            netns.run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            netns.run("ip", "-n", ns, "link", "set", dev, "up")
        netns.run("ip", "-n", t.pod, "route", "add", "default", "via", "10.244.1.1")
        netns.run("ip", "-n", t.node, "route", "add", "10.244.2.0/24", "via", OUTSIDE)
        netns.run("ip", "-n", t.far, "route", "add", "10.244.1.0/24", "via", NODE)
        t.sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        yield t
    finally:
        for ns in (t.pod, t.node, t.far):
            netns.netns_del(ns)


BACKENDS = ["iptables", "nftables"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_pod_egress_is_masqueraded_and_pod_to_pod_is_not(topo, backend) -> None:
    assert topo.seen(OUTSIDE, FAR_POD) == [(POD, True), (POD, True)], "NAT before any rule"
    topo.start(backend)
    assert topo.rules(backend) == (IPT_NAT + IPT_FILTER if backend == "iptables" else NFT)
    # to an address outside the pod network: from the node's address, and the answer returns
    # through the NAT; to a pod on another node: from the pod's own address
    assert topo.seen(OUTSIDE, FAR_POD) == [(NODE, True), (POD, True)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_kube_proxy_marked_packets_are_not_masqueraded(topo, backend) -> None:
    topo.start(backend)
    # kube-proxy's KUBE-MARK-MASQ sets 0x4000 among other bits; it NATs those itself
    mark = ["iptables", "-t", "mangle", "PREROUTING", "-s", POD, "-d", OUTSIDE, "-j", "MARK",
            "--set-xmark", "0x4001/0xffffffff"]
    topo.sh(*mark[:3], "-A", *mark[3:])
    assert topo.seen(OUTSIDE) == [(POD, True)]
    topo.sh(*mark[:3], "-D", *mark[3:])
    assert topo.seen(OUTSIDE) == [(NODE, True)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_restarts_leave_one_copy_of_every_rule(topo, backend) -> None:
    expected = IPT_NAT + IPT_FILTER if backend == "iptables" else NFT
    for _ in range(3):
        topo.start(backend)
    assert topo.rules(backend) == expected
    if backend == "iptables":            # a stray second jump is folded into one
        topo.sh("iptables", "-t", "nat", "-I", "POSTROUTING", "-m", "comment", "--comment",
                "flanneld masq", "-j", "FLANNEL-POSTRTG")
        assert topo.ipt("nat").count(IPT_NAT[1]) == 2
    topo.start(backend)
    assert topo.rules(backend) == expected
    assert topo.seen(OUTSIDE, FAR_POD) == [(NODE, True), (POD, True)]


def _nft_handles(topo: Topo) -> list[int]:
    listing = json.loads(topo.sh("nft", "-j", "list", "chain", "ip", "flannel-ipv4",
                                 "postrtg").stdout)
    return [item["rule"]["handle"] for item in listing["nftables"] if "rule" in item]


@pytest.mark.parametrize("backend", BACKENDS)
def test_resync_puts_back_what_others_changed(topo, backend) -> None:
    expected = IPT_NAT + IPT_FILTER if backend == "iptables" else NFT
    manager = topo.start(backend)
    assert manager.ensure() == []
    if backend == "iptables":
        topo.sh("iptables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "5")      # the MASQUERADE
        topo.sh("iptables", "-t", "filter", "-A", "FLANNEL-FWD", "-j", "DROP")
    else:
        topo.sh("nft", "delete", "rule", "ip", "flannel-ipv4", "postrtg", "handle",
                str(_nft_handles(topo)[4]))
        topo.sh("nft", "add", "rule", "ip", "flannel-ipv4", "forward", "drop")
    assert topo.rules(backend) != expected
    assert topo.seen(OUTSIDE) == [(POD, True)]
    assert manager.ensure() == ["masq", "forward"]
    assert topo.rules(backend) == expected
    assert manager.ensure() == []
    assert topo.seen(OUTSIDE) == [(NODE, True)]

    # someone flushes everything: the next resync brings it all back
    if backend == "iptables":
        for table in ("nat", "filter"):
            topo.sh("iptables", "-t", table, "-F")
            topo.sh("iptables", "-t", table, "-X")
    else:
        topo.sh("nft", "flush", "ruleset")
    assert manager.ensure() == ["masq", "forward"]
    assert topo.rules(backend) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_remove_takes_ours_and_nothing_else(topo, backend) -> None:
    foreign = ["-s", "192.0.2.0/24", "-j", "MASQUERADE"]
    topo.sh("iptables", "-t", "nat", "-A", "POSTROUTING", *foreign)
    topo.start(backend)
    assert remove_rules(netns=topo.node) == (
        ["iptables: nat/FLANNEL-POSTRTG", "iptables: filter/FLANNEL-FWD"]
        if backend == "iptables" else ["nftables: table ip flannel-ipv4"])
    assert topo.ipt("nat") == topo.ipt("filter") == topo.nft() == []
    assert "-A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE" in topo.sh(
        "iptables-save", "-t", "nat").stdout
    assert topo.seen(OUTSIDE) == [(POD, True)]
    assert remove_rules(netns=topo.node) == []


def test_switching_backend_removes_the_other_ones_rules(topo) -> None:
    topo.start("iptables")
    topo.start("nftables")
    assert topo.ipt("nat") == topo.ipt("filter") == []
    assert topo.nft() == NFT
    topo.start("iptables")
    assert topo.nft() == []
    assert topo.ipt("nat") + topo.ipt("filter") == IPT_NAT + IPT_FILTER


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_random_fully(topo, backend) -> None:
    from dataplane.netfilter import NetfilterOptions
    manager = topo.start(backend, options=NetfilterOptions(random_fully=False))
    rules = topo.rules(backend)
    assert not any("random" in line for line in rules)
    assert len(rules) == len(IPT_NAT + IPT_FILTER if backend == "iptables" else NFT)
    assert manager.ensure() == []
    assert topo.seen(OUTSIDE) == [(NODE, True)]
