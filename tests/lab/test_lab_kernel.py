"""Labs whose dataplane is the kernel's: host-gw and kernel-vxlan (flannel's vxlan backend)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dataplane.daemon.metrics import parse_metrics
from dataplane.lab import Lab
from dataplane.lab.daemon import METRICS_PORT
from dataplane.lease import subnet_key

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("backend", ["host-gw", "kernel-vxlan"])
def test_pods_reach_each_other_across_nodes(prefix: str, backend: str) -> None:
    nodes = 3                                   # every pair of three: two nodes' case too
    with Lab(prefix, nodes=nodes, pods=2, backend=backend) as lab:
        assert len(lab.pods) == 2 * nodes and all(p.ip for p in lab.pods)
        for node in lab.nodes:
            assert all(p.ip in node.subnet for p in lab.pods_on(node))

        matrix = lab.reachability()
        assert len(matrix) == (2 * nodes) * (2 * nodes - 1)
        assert [pair for pair, ok in matrix.items() if not ok] == []

        first, last = lab.pod(1, 1), lab.pod(nodes, 2)
        for src, dst in [(first, last), (last, first)]:
            result = lab.tcp_check(src, dst, nbytes=4 << 20)
            assert result.ok, result
            assert result.received == 4 << 20


def test_kernel_vxlan_is_programmed_as_flannel_does(prefix: str) -> None:
    with Lab(prefix, nodes=2, pods=1, backend="kernel-vxlan") as lab:
        n1, n2 = lab.nodes
        link = json.loads(lab.exec(n1, ["ip", "-d", "-j", "link", "show", "flannel.1"]).stdout)[0]
        info = link["linkinfo"]["info_data"]
        assert (info["id"], info["port"], info["local"]) == (1, 8472, "10.99.0.1")
        assert info["learning"] is False
        assert link["mtu"] == 1450 and link["address"] == n1.vtep_mac
        addrs = lab.exec(n1, ["ip", "-4", "-o", "addr", "show", "flannel.1"]).stdout
        assert "10.244.1.0/32" in addrs

        neigh = lab.exec(n1, ["ip", "neigh", "show", "dev", "flannel.1"]).stdout
        assert f"10.244.2.0 lladdr {n2.vtep_mac} PERMANENT" in neigh
        fdb = lab.exec(n1, ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
        assert f"{n2.vtep_mac} dst 10.99.0.2 self permanent" in fdb
        routes = lab.exec(n1, ["ip", "route", "show", "10.244.2.0/24"]).stdout
        assert "via 10.244.2.0 dev flannel.1" in routes and "onlink" in routes

        # What flanneld would have left for others: its lease and its subnet.env.
        lease = json.loads((lab.store.root / "subnets" / subnet_key(n2.subnet)).read_text())
        assert lease == {"PublicIP": "10.99.0.2", "PublicIPv6": None, "BackendType": "vxlan",
                         "BackendData": {"VNI": 1, "VtepMAC": n2.vtep_mac}}
        assert n1.subnet_file.read_text() == ("FLANNEL_NETWORK=10.244.0.0/16\n"
                                              "FLANNEL_SUBNET=10.244.1.1/24\n"
                                              "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
        # The pod got its MTU and routes from that file, through the bridge plugin.
        pod = lab.pod(1, 1)
        assert "mtu 1450" in lab.exec(pod, ["ip", "link", "show", "eth0"]).stdout
        assert "10.244.0.0/16 via 10.244.1.1" in lab.exec(pod, ["ip", "route"]).stdout


def test_host_gw_routes_and_jumbo_underlay(prefix: str) -> None:
    with Lab(prefix, nodes=2, pods=1, backend="host-gw", underlay_mtu=9000) as lab:
        routes = lab.exec(lab.node(2), ["ip", "route", "show", "10.244.1.0/24"]).stdout
        assert "via 10.99.0.1 dev eth0" in routes
        assert "FLANNEL_MTU=9000" in lab.node(2).subnet_file.read_text()
        assert lab.ping(lab.pod(1, 1), lab.pod(2, 1))


def node_metrics(lab: Lab, node) -> dict[str, float]:
    code = (f"import urllib.request;print(urllib.request.urlopen("
            f"'http://127.0.0.1:{METRICS_PORT}/metrics', timeout=5).read().decode())")
    return parse_metrics(lab.exec(node, [sys.executable, "-c", code]).stdout)


RECEIVE = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
           "s.bind((sys.argv[1], 9900)); s.settimeout(3); print('READY', flush=True); n=[]\n"
           "try:\n    while True: n.append(len(s.recv(65536)))\n"
           "except socket.timeout: print(n)")
SEGMENTED = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
             "s.setsockopt(socket.SOL_UDP, 103, 1000); s.sendto(bytes(10010), (sys.argv[1], 9900))")


def udp_segment_send(lab: Lab, src, dst) -> list[int]:
    """Sizes of the datagrams dst receives of one 10010-byte UDP_SEGMENT send (1000 each)."""
    rx = subprocess.Popen(["ip", "netns", "exec", dst.netns, sys.executable, "-c", RECEIVE,
                           str(dst.ip)], stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "READY"
        lab.exec(src, [sys.executable, "-c", SEGMENTED, str(dst.ip)])
        return json.loads(rx.communicate(timeout=15)[0].strip())
    finally:
        rx.kill()
        rx.wait()


@pytest.mark.parametrize("offload", ["on", "off"])
def test_tcp_with_a_kernel_flannel_node_as_flanneld_leaves_it(prefix: str, offload: str) -> None:
    """flanneld never touches flannel.1's offloads: over veth the kernel node sends inner
    checksums partial and its TSO and UDP_SEGMENT super-packets whole. Our node must take
    them all, as a kernel receiver does, in either offload mode, and TCP must flow both ways."""
    with Lab(prefix, nodes=2, pods=1, backend="vxlan", kernel_nodes=1,
             daemon_args=["--offload", offload]) as lab:
        ours, kernel = lab.nodes
        assert kernel.backend == "kernel-vxlan"
        features = lab.exec(kernel, ["ethtool", "-k", "flannel.1"]).stdout
        assert "tx-checksumming: on" in features
        assert "tcp-segmentation-offload: on" in features
        assert lab.ping(lab.pod(1, 1), lab.pod(2, 1))
        for src, dst in [(lab.pod(2, 1), lab.pod(1, 1)), (lab.pod(1, 1), lab.pod(2, 1))]:
            result = lab.tcp_check(src, dst, nbytes=16 << 20, timeout=60)
            assert result.ok and result.received == 16 << 20, result
        # A UDP_SEGMENT send on the kernel node crosses veth as one tunnelled skb too.
        assert udp_segment_send(lab, lab.pod(2, 1), lab.pod(1, 1)) == [1000] * 10 + [10]
        m = node_metrics(lab, ours)
        for reason in ("bad-l4-checksum", "oversize", "tun-write-error", "bad-vxlan-flags",
                       "truncated"):
            assert m.get(f'dataplane_drops_total{{direction="ingress",reason="{reason}"}}',
                         0) == 0, reason
        if offload == "on":        # the kernel's GSO frames went up whole
            assert m['dataplane_super_packets_total{direction="ingress"}'] > 0
