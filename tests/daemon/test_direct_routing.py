"""vxlan DirectRouting between our daemons, on a routed underlay of two subnets:

    ul: br0 10.99.0.254/24 + 10.98.0.254/24 (a router on the wire, ip_forward on)
      ├─ a  10.99.0.1/24   pod 10.244.1.2      a and b share a subnet: routed directly
      ├─ b  10.99.0.2/24   pod 10.244.2.2
      └─ c  10.98.0.3/24   pod 10.244.3.2      c is one hop away: tunnelled

Nodes run strict reverse-path filtering (rp_filter 1), as a hardened host would: a directly
routed packet must still pass it on the receiving node. Each pod is a namespace on a veth into
its node, addressed from the node's lease as the CNI bridge would address it.
"""

from __future__ import annotations

import sys
import json
import subprocess
from dataclasses import dataclass

import pytest

from tests import netns
from tests.daemon.test_lifecycle import metrics

pytestmark = pytest.mark.netns

NBYTES = 8 << 20
NODES = {"a": ("10.99.0.1", 1, 9201), "b": ("10.99.0.2", 2, 9202), "c": ("10.98.0.3", 3, 9203)}
ROUTER = {"10.99.0.0/24": "10.99.0.254", "10.98.0.0/24": "10.98.0.254"}


@dataclass
class Topology:
    prefix: str
    tmp: object
    store: object
    procs: dict

    def ns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def pod(self, node: str) -> str:
        return f"{self.prefix}-{node}p"

    def start(self, node: str, *extra: str) -> subprocess.Popen:
        ip, i, port = NODES[node]
        # readiness is subnet.env appearing; a stop keeps the previous run's
        (self.tmp / f"{node}.env").unlink(missing_ok=True)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(node), *netns.dataplane_cmd(
                "-v", "run", "--store-dir", str(self.store), "--public-ip", ip,
                "--subnet", f"10.244.{i}.0/24", "--subnet-file", str(self.tmp / f"{node}.env"),
                "--healthz-port", str(port), *extra)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=netns.env())
        self.procs[node] = proc
        netns.wait_for(lambda: (self.tmp / f"{node}.env").exists() or proc.poll() is not None,
                       timeout=20, what=f"node {node}")
        assert proc.poll() is None, proc.stdout.read()
        return proc

    def stop(self, node: str) -> str:
        proc = self.procs.pop(node)
        proc.terminate()
        out = proc.communicate(timeout=15)[0]
        assert proc.returncode == 0, out
        return out

    def metrics(self, node: str) -> dict[str, float]:
        return metrics(self.ns(node), NODES[node][2])

    def packets(self, node: str) -> float:
        m = self.metrics(node)
        return sum(m.get(f'dataplane_packets_total{{direction="{d}"}}', 0)
                   for d in ("egress", "ingress"))

    def routes(self, node: str, dst: str) -> str:
        return netns.run("ip", "-n", self.ns(node), "route", "show", dst).stdout

    def transfer(self, src: str, dst: str, port: int = 7100) -> tuple[dict, dict]:
        dst_ip = f"10.244.{NODES[dst][1]}.2"
        server = subprocess.Popen(
            ["ip", "netns", "exec", self.pod(dst), sys.executable, "-m", "dataplane.lab.probe",
             "tcp-serve", dst_ip, str(port), "--timeout", "60"],
            stdout=subprocess.PIPE, text=True, env=netns.env())
        try:
            assert server.stdout.readline().strip() == "LISTENING"
            sent = subprocess.run(
                ["ip", "netns", "exec", self.pod(src), sys.executable, "-m", "dataplane.lab.probe",
                 "tcp-send", dst_ip, str(port), str(NBYTES), "--seed", "3", "--timeout", "60"],
                capture_output=True, text=True, env=netns.env(), timeout=90)
            assert sent.returncode == 0, sent.stderr
            received = json.loads(server.communicate(timeout=60)[0].splitlines()[-1])
        finally:
            server.kill()
            server.wait()
        return json.loads(sent.stdout), received


def _build(p: str) -> None:
    ul = f"{p}-ul"
    netns.netns_add(ul)
    netns.run("ip", "-n", ul, "link", "add", "br0", "type", "bridge")
    netns.run("ip", "-n", ul, "link", "set", "br0", "up")
    for gw in ROUTER.values():
        netns.run("ip", "-n", ul, "addr", "add", f"{gw}/24", "dev", "br0")
    netns.run("ip", "netns", "exec", ul, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for node, (ip, i, _) in NODES.items():
        ns, pod = f"{p}-{node}", f"{p}-{node}p"
        netns.netns_add(ns)
        netns.netns_add(pod)
        netns.run("ip", "link", "add", f"{p}{node}", "netns", ul, "type", "veth", "peer",
                  "name", "eth0", "netns", ns)
        netns.run("ip", "-n", ul, "link", "set", f"{p}{node}", "master", "br0", "up")
        netns.run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        netns.run("ip", "-n", ns, "link", "set", "eth0", "up")
        here = next(net for net in ROUTER if ip.startswith(net[:8]))
        for net in ROUTER:
            if net != here:
                netns.run("ip", "-n", ns, "route", "add", net, "via",
                          ROUTER[here])
        netns.run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                  "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1",
                  "net.ipv4.conf.eth0.rp_filter=1")
        # the pod: what the CNI bridge plugin gives it, minus the bridge
        netns.run("ip", "link", "add", "cni0", "netns", ns, "type", "veth", "peer", "name",
                  "eth0", "netns", pod)
        netns.run("ip", "-n", ns, "addr", "add", f"10.244.{i}.1/24", "dev", "cni0")
        netns.run("ip", "-n", ns, "link", "set", "cni0", "up")
        netns.run("ip", "-n", pod, "addr", "add", f"10.244.{i}.2/24", "dev", "eth0")
        netns.run("ip", "-n", pod, "link", "set", "eth0", "mtu", "1450", "up")
        netns.run("ip", "-n", pod, "route", "add", "default", "via", f"10.244.{i}.1")


@pytest.fixture
def topo(tmp_path):
    netns.require_root()
    p = netns.prefix()
    names = [f"{p}-ul"] + [f"{p}-{n}{s}" for n in NODES for s in ("", "p")]
    store = tmp_path / "store"
    store.mkdir()
    topo = Topology(p, tmp_path, store, {})
    try:
        _build(p)
        yield topo
    finally:
        for proc in topo.procs.values():
            proc.kill()
            proc.wait()
        for name in names:
            netns.netns_del(name)


def config(topo: Topology, **backend) -> None:
    (topo.store / "config").write_text(json.dumps(
        {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", **backend}}))


def test_same_subnet_peers_are_routed_directly_others_tunnelled(topo):
    config(topo, DirectRouting=True)
    for node in NODES:
        topo.start(node)
    for node in NODES:
        netns.wait_for(lambda: topo.metrics(node)["dataplane_peers"] == 2, what="peers")

    # a <-> b: host-gw's route through the underlay; a <-> c: the TUN's route, no /24
    assert "10.244.2.0/24 via 10.99.0.2 dev eth0 proto 219" in topo.routes("a", "10.244.2.0/24")
    assert "10.244.1.0/24 via 10.99.0.1 dev eth0 proto 219" in topo.routes("b", "10.244.1.0/24")
    assert topo.routes("a", "10.244.3.0/24") == ""
    assert topo.routes("c", "10.244.1.0/24") == ""
    assert "dev flannel.1" in netns.run("ip", "-n", topo.ns("a"), "route", "get",
                                        "10.244.3.2").stdout

    # the direct transfer: intact, and not one packet through the TUN on either end
    before = topo.packets("a"), topo.packets("b")
    sent, received = topo.transfer("a", "b")
    assert received == {"bytes": NBYTES, "sha256": sent["sha256"]}
    sent, received = topo.transfer("b", "a", port=7101)
    assert received == {"bytes": NBYTES, "sha256": sent["sha256"]}
    assert (topo.packets("a"), topo.packets("b")) == before

    # the tunnelled one: intact, and through both forwarders
    before_c = topo.packets("c")
    sent, received = topo.transfer("a", "c", port=7102)
    assert received == {"bytes": NBYTES, "sha256": sent["sha256"]}
    assert topo.packets("a") > before[0] and topo.packets("c") > before_c
    assert topo.packets("b") == before[1]


def test_routes_follow_leases_and_a_restart_adopts_them(topo):
    config(topo, DirectRouting=True)
    topo.start("a")
    topo.start("b")
    netns.wait_for(lambda: "via 10.99.0.2" in topo.routes("a", "10.244.2.0/24"),
                   what="direct route to b")

    # b's lease goes (expired, or given back): a removes its route
    topo.stop("b")
    (topo.store / "subnets" / "10.244.2.0-24").unlink(missing_ok=True)
    netns.wait_for(lambda: topo.routes("a", "10.244.2.0/24") == "", what="route removed")

    # a route a previous run left for a peer that is gone: adopted and removed at start
    topo.stop("a")
    netns.run("ip", "-n", topo.ns("a"), "route", "add", "10.244.9.0/24", "via", "10.99.0.9",
              "dev", "eth0", "proto", "219")
    netns.run("ip", "-n", topo.ns("a"), "route", "add", "10.244.8.0/24", "via", "10.99.0.8",
              "dev", "eth0")                                  # not ours: left alone
    topo.start("a")
    assert topo.routes("a", "10.244.9.0/24") == ""
    assert "via 10.99.0.8" in topo.routes("a", "10.244.8.0/24")


def test_a_stop_keeps_direct_routes_exactly_when_it_keeps_the_lease(topo):
    """Routes follow our lease: a stop keeps both (for the restart to take back), so pods keep
    reaching direct peers; decommissioning the node gives the lease back and removes them."""
    config(topo, DirectRouting=True)
    topo.start("a")
    topo.start("b")
    netns.wait_for(lambda: "via 10.99.0.2" in topo.routes("a", "10.244.2.0/24"),
                   what="direct route to b")
    topo.stop("a")
    assert (topo.store / "subnets" / "10.244.1.0-24").exists()
    assert "via 10.99.0.2" in topo.routes("a", "10.244.2.0/24")
    out = netns.run("ip", "netns", "exec", topo.ns("a"), *netns.dataplane_cmd(
        "leases", "release", "--subnet-file", str(topo.tmp / "a.env"),
        "--store-dir", str(topo.store)), env=netns.env()).stdout
    assert "removed the direct route to 10.244.2.0/24" in out
    assert topo.routes("a", "10.244.2.0/24") == ""
    assert not (topo.store / "subnets" / "10.244.1.0-24").exists()


def test_without_direct_routing_everything_is_tunnelled(topo):
    config(topo, DirectRouting=False)
    topo.start("a")
    topo.start("b")
    netns.wait_for(lambda: topo.metrics("a")["dataplane_peers"] == 1, what="peer")
    assert topo.routes("a", "10.244.2.0/24") == ""
    before = topo.packets("a")
    sent, received = topo.transfer("a", "b")
    assert received == {"bytes": NBYTES, "sha256": sent["sha256"]}
    assert topo.packets("a") > before
