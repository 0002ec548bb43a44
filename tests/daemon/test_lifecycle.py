"""The daemon between two namespaces: forwarding, clean stop (which keeps lease and subnet.env,
as flanneld, and the kernel removes the TUN and its route), decommissioning, restart after
SIGKILL. Each runs for both backends and both fast paths. Joining, leaving and forged input are
the daemon's logic: test_peers_fake.py, in one process."""

from __future__ import annotations

import sys
import json
import os
import signal
import subprocess

import pytest

from dataplane.daemon.metrics import parse_metrics
from tests import netns

pytestmark = pytest.mark.netns

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
