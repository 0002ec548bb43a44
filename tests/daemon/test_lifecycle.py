"""The daemon between two namespaces: forwarding, join and leave, forged input, clean stop
(which keeps lease and subnet.env, as flanneld), decommissioning, restart after SIGKILL. Each
runs for both backends and both fast paths."""

from __future__ import annotations

import sys
import json
import os
import signal
import socket
import struct
import subprocess
import time

import pytest

from dataplane.daemon.metrics import parse_metrics
from tests import netns

BACKENDS = ["udp", "vxlan"]
FASTPATHS = ["c", "python"]
SUBNET_A, SUBNET_B = "10.244.1.0/24", "10.244.2.0/24"


@pytest.fixture(params=[(b, f) for b in BACKENDS for f in FASTPATHS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def cluster(request, host):
    backend, fastpath = request.param
    host.config(json.dumps({"Network": "10.244.0.0/16", "Backend": {"Type": backend}}))
    procs = []

    def start(side: str, *extra: str, ask_subnet: bool = True) -> subprocess.Popen:
        ns, ip, subnet, port = ((host.ns, "10.99.0.1", SUBNET_A, 9101) if side == "a" else
                                (host.peer_ns, "10.99.0.2", SUBNET_B, 9102))
        ask = ["--subnet", subnet] if ask_subnet else []
        proc = host.start(*ask, "--fastpath", fastpath, "--healthz-ip", "127.0.0.1",
                          "--healthz-port", str(port), *extra, ns=ns, ip=ip,
                          env_file=f"{side}.env")
        procs.append(proc)
        netns.wait_for(lambda: (host.tmp / f"{side}.env").exists() or proc.poll() is not None,
                       what=f"node {side} to be ready")
        assert proc.poll() is None, proc.stdout.read()
        return proc

    host.backend, host.start_node = backend, start
    yield host
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def ping(ns: str, dst: str, count: int = 2) -> bool:
    return netns.run("ip", "netns", "exec", ns, "ping", "-c", str(count), "-i", "0.2", "-W", "1",
                     dst, check=False).returncode == 0


def metrics(ns: str, port: int) -> dict[str, float]:
    code = (f"import urllib.request;print(urllib.request.urlopen("
            f"'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())")
    return parse_metrics(netns.run("ip", "netns", "exec", ns, sys.executable, "-c", code).stdout)


def tun_name(backend: str) -> str:
    return "flannel0" if backend == "udp" else "flannel.1"


def test_forwarding_and_clean_stop(cluster):
    a = cluster.start_node("a")
    cluster.start_node("b")
    assert netns.wait_for(lambda: ping(cluster.ns, "10.244.2.0"), what="a -> b")
    assert ping(cluster.peer_ns, "10.244.1.0")
    assert tun_name(cluster.backend) in cluster.links()
    assert "10.244.1.0-24" in cluster.leases()

    env_before = (cluster.tmp / "a.env").read_text()
    a.send_signal(signal.SIGTERM)
    assert a.wait(timeout=15) == 0, a.stdout.read()
    assert tun_name(cluster.backend) not in cluster.links()
    routes = netns.run("ip", "-n", cluster.ns, "route", "show").stdout
    assert "10.244." not in routes
    # As flanneld: the lease (to run out on its TTL) and subnet.env stay for the next start.
    assert cluster.leases()["10.244.1.0-24"]["PublicIP"] == "10.99.0.1"
    assert (cluster.tmp / "a.env").read_text() == env_before
    # Giving the subnet back is explicit.
    release(cluster, "a")
    assert "10.244.1.0-24" not in cluster.leases()
    assert not (cluster.tmp / "a.env").exists()


def release(cluster, side: str) -> str:
    """Decommission a stopped node: `dataplane leases release --subnet-file` in its namespace."""
    ns = cluster.ns if side == "a" else cluster.peer_ns
    out = netns.run("ip", "netns", "exec", ns, *netns.dataplane_cmd(
        "leases", "release", "--store-dir", str(cluster.store), "--subnet-file",
        str(cluster.tmp / f"{side}.env")), env=netns.env()).stdout
    assert "released lease" in out, out
    return out


def test_join_and_leave_without_restart(cluster):
    cluster.start_node("a")
    assert metrics(cluster.ns, 9101)["dataplane_peers"] == 0
    b = cluster.start_node("b")
    netns.wait_for(lambda: metrics(cluster.ns, 9101)["dataplane_peers"] == 1, what="b joins")
    assert netns.wait_for(lambda: ping(cluster.ns, "10.244.2.0"), what="a -> b")
    b.send_signal(signal.SIGTERM)
    b.wait(timeout=15)
    # A stopped node keeps its lease: a restart is not a leave (its pods keep their subnet).
    time.sleep(1.5)                                   # three polls of the directory store
    assert metrics(cluster.ns, 9101)["dataplane_peers"] == 1
    release(cluster, "b")
    netns.wait_for(lambda: metrics(cluster.ns, 9101)["dataplane_peers"] == 0, what="b leaves")
    assert not ping(cluster.ns, "10.244.2.0", count=1)


def test_restart_after_sigkill(cluster):
    a = cluster.start_node("a")
    cluster.start_node("b")
    assert netns.wait_for(lambda: ping(cluster.peer_ns, "10.244.1.0"), what="b -> a")
    a.send_signal(signal.SIGKILL)
    a.wait()
    assert "10.244.1.0-24" in cluster.leases(), "a killed node cannot release its lease"
    os.unlink(cluster.tmp / "a.env")
    # no --subnet and no subnet.env this time: the lease our public IP still holds is reused
    cluster.start_node("a", ask_subnet=False)
    assert "FLANNEL_SUBNET=10.244.1.1/24" in (cluster.tmp / "a.env").read_text()
    assert netns.wait_for(lambda: ping(cluster.peer_ns, "10.244.1.0"), what="b -> a again")


def _ipv4(src: str, dst: str, payload: bytes = b"x" * 8, proto: int = 17) -> bytes:
    from dataplane.fastpath import pyref
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto,
                                0, socket.inet_aton(src), socket.inet_aton(dst)))
    struct.pack_into("!H", hdr, 10, pyref.checksum(bytes(hdr)))
    return bytes(hdr) + payload


def test_forged_datagrams_are_counted_and_dropped(cluster):
    cluster.start_node("a")
    cluster.start_node("b", "--public-ip", "10.99.0.2")
    assert netns.wait_for(lambda: ping(cluster.ns, "10.244.2.0"), what="a -> b")
    netns.run("ip", "-n", cluster.peer_ns, "addr", "add", "10.99.0.3/24", "dev",
              cluster.links(cluster.peer_ns)[-1])
    port = 8285 if cluster.backend == "udp" else 8472
    from dataplane.daemon.node import vtep_mac
    from dataplane.fastpath import pyref
    mac_a, mac_b = vtep_mac("10.99.0.1", 1), vtep_mac("10.99.0.2", 1)

    def wrap(inner: bytes) -> bytes:
        return inner if cluster.backend == "udp" else pyref.vxlan_encap(inner, 1, mac_a, mac_b)

    forged = [
        ("10.99.0.3", wrap(_ipv4("10.244.2.5", "10.244.1.5")), "unknown-peer"),
        ("10.99.0.2", wrap(_ipv4("10.244.9.5", "10.244.1.5")), "spoofed-source"),
        ("10.99.0.2", wrap(_ipv4("10.244.2.5", "10.244.3.5")), "not-local"),
        ("10.99.0.2", wrap(_ipv4("10.244.2.5", "10.244.1.5")[:2] + b"\x00\x0a" + os.urandom(28)),
         "bad-ip-header"),                                   # total length 10 < header 20
        ("10.99.0.2", wrap(b"\x60" + os.urandom(40)), "bad-ip-version"),
        ("10.99.0.2", b"", "truncated"),
    ]
    if cluster.backend == "vxlan":
        forged += [("10.99.0.2", pyref.vxlan_encap(_ipv4("10.244.2.5", "10.244.1.5"), 2, mac_a,
                                                   mac_b), "wrong-vni"),
                   ("10.99.0.2", pyref.vxlan_encap(_ipv4("10.244.2.5", "10.244.1.5"), 1,
                                                   b"\x02" * 6, mac_b), "wrong-inner-mac")]
    code = ("import socket,sys\n"
            "for line in sys.stdin:\n"
            "    src, hexdata = line.split()\n"
            "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "    s.bind((src, 0)); s.sendto(bytes.fromhex(hexdata) if hexdata != '-' else b'', "
            f"('10.99.0.1', {port})); s.close()\n")
    before = metrics(cluster.ns, 9101)
    lines = "".join(f"{src} {data.hex() or '-'}\n" for src, data, _ in forged)
    netns.run("ip", "netns", "exec", cluster.peer_ns, sys.executable, "-c", code, input=lines)
    for _src, _data, reason in forged:
        key = f'dataplane_drops_total{{direction="ingress",reason="{reason}"}}'
        netns.wait_for(lambda: metrics(cluster.ns, 9101).get(key, 0) > before.get(key, 0),
                       timeout=5, what=f"a drop counted as {reason}")
    # and the node still forwards
    received = metrics(cluster.ns, 9101)['dataplane_packets_total{direction="ingress"}']
    assert ping(cluster.ns, "10.244.2.0")
    assert metrics(cluster.ns, 9101)['dataplane_packets_total{direction="ingress"}'] > received
