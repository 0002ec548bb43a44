"""Restarts keep the node's subnet, as flanneld's do: a stop leaves the lease (to run out on its
TTL) and subnet.env, the next start takes the same subnet back; `dataplane leases release`
gives it back on purpose. Real daemons in namespaces, with the directory store and with a real
etcd (in the node's namespace, on its underlay address, so the peer namespace reaches it too)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from dataplane.lab.nsthread import call_in_netns
from dataplane.store.etcd_server import INSTALL_HINT, EtcdServer, find_etcd
from tests import netns

pytestmark = pytest.mark.netns

PINNED = "10.244.7.0/24"


class _NsEtcd(EtcdServer):
    """etcd inside a namespace (its process and its health checks)."""

    def __init__(self, ns: str, data_dir: Path, host: str) -> None:
        super().__init__(data_dir, host=host, client_port=2379, peer_port=2380, fast=True)
        self.ns = ns

    def argv(self, etcd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *super().argv(etcd)]

    def healthy(self) -> bool:
        return call_in_netns(self.ns, super().healthy)


@pytest.fixture(params=["directory", "etcd"])
def store_args(request, host):
    if request.param == "directory":
        yield ["--store-dir", str(host.store)]
        return
    if find_etcd() is None:
        pytest.skip(f"etcd is not installed ({INSTALL_HINT})")
    data = Path(tempfile.mkdtemp(prefix="etcd-restart-", dir="/dev/shm"))
    server = _NsEtcd(host.ns, data / "data", host.ip)
    try:
        server.start()
        from dataplane.store.etcd import EtcdStore

        async def configure() -> None:
            async with EtcdStore(server.client_url) as store:
                await store.write_network_config('{"Network": "10.244.0.0/16"}')
        call_in_netns(host.ns, lambda: asyncio.run(configure()))
        yield ["--etcd-endpoints", server.client_url]
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


class Nodes:
    """Daemons of node a (10.99.0.1) and b (10.99.0.2), started and stopped one at a time."""

    def __init__(self, host, store_args: list[str]) -> None:
        self.host, self.store_args = host, store_args
        self.procs: list[subprocess.Popen] = []

    def env_file(self, side: str) -> Path:
        return self.host.tmp / f"{side}.env"

    def start(self, side: str = "a", *extra: str, ip: str | None = None) -> subprocess.Popen:
        """Start one node and wait until it has written subnet.env anew (a stop leaves the old
        one, so a new inode, not the file's presence, says this start is ready)."""
        ns, default_ip = ((self.host.ns, "10.99.0.1") if side == "a" else
                          (self.host.peer_ns, "10.99.0.2"))
        ip = ip or default_ip
        path = self.env_file(side)
        before = path.stat().st_ino if path.exists() else None
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *netns.dataplane_cmd(
                "-v", "run", *self.store_args, "--public-ip", ip, "--subnet-file", str(path),
                "--lease-ttl", "600", *extra)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=netns.env())
        self.procs.append(proc)
        netns.wait_for(lambda: (path.exists() and path.stat().st_ino != before)
                       or proc.poll() is not None, timeout=30, what=f"node {side} ready")
        assert proc.poll() is None, proc.stdout.read()
        return proc

    def stop(self, proc: subprocess.Popen) -> str:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        return proc.stdout.read()

    def subnet(self, side: str = "a") -> str:
        for line in self.env_file(side).read_text().splitlines():
            if line.startswith("FLANNEL_SUBNET="):
                gateway, length = line.split("=", 1)[1].split("/")
                return f"{gateway.rsplit('.', 1)[0]}.0/{length}"
        raise AssertionError(self.env_file(side).read_text())

    def dataplane(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return netns.run("ip", "netns", "exec", self.host.ns,
                         *netns.dataplane_cmd(*argv, *self.store_args), env=netns.env(),
                         check=check)

    def leases(self) -> dict[str, str]:
        out = self.dataplane("leases", "--json").stdout
        return {lease["subnet"]: lease["public_ip"] for lease in json.loads(out)}

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def nodes(host, store_args):
    n = Nodes(host, store_args)
    try:
        yield n
    finally:
        n.close()


@pytest.mark.parametrize("pinned", [True, False], ids=["with-subnet", "without-subnet"])
def test_three_restarts_keep_the_subnet_then_release_gives_it_back(nodes, pinned):
    ask = ["--subnet", PINNED] if pinned else []
    proc = nodes.start("a", *ask)
    subnet = nodes.subnet()
    if pinned:
        assert subnet == PINNED
    env_text = nodes.env_file("a").read_text()
    for restart in range(3):
        log = nodes.stop(proc)
        assert "kept until" in log, log
        # Stopped: lease and subnet.env stay, exactly as they were.
        assert nodes.leases() == {subnet: "10.99.0.1"}, f"after stop {restart + 1}"
        assert nodes.env_file("a").read_text() == env_text
        proc = nodes.start("a", *ask)
        assert nodes.subnet() == subnet, f"restart {restart + 1} moved the node"
        assert nodes.leases() == {subnet: "10.99.0.1"}
    nodes.stop(proc)

    # Decommissioned: the lease and subnet.env are gone...
    out = nodes.dataplane("leases", "release", "--subnet-file", str(nodes.env_file("a"))).stdout
    assert f"released lease {subnet}" in out and "removed" in out, out
    assert nodes.leases() == {}
    assert not nodes.env_file("a").exists()
    # ...so the subnet is free for another node, and a's next start takes another one.
    nodes.start("b", "--subnet", subnet)
    assert nodes.subnet("b") == subnet
    nodes.start("a")
    assert nodes.subnet("a") != subnet
    assert nodes.leases() == {subnet: "10.99.0.2", nodes.subnet("a"): "10.99.0.1"}


def test_restart_after_the_lease_was_released_takes_subnet_env_s_subnet_back(nodes):
    """subnet.env alone brings the subnet back (flanneld's ReadCIDRFromSubnetFile) once our
    public IP holds no lease any more, e.g. released by an operator while the node was down."""
    proc = nodes.start("a")
    subnet = nodes.subnet()
    nodes.stop(proc)
    nodes.dataplane("leases", "release", subnet)
    assert nodes.leases() == {} and nodes.env_file("a").exists()
    nodes.start("a")
    assert nodes.subnet() == subnet
    assert nodes.leases() == {subnet: "10.99.0.1"}


def test_release_errors_are_one_line(nodes, host):
    missing = nodes.dataplane("leases", "release", "10.244.99.0/24", check=False)
    assert missing.returncode == 1 and "no lease on 10.244.99.0/24" in missing.stderr
    assert "Traceback" not in missing.stderr
    (host.tmp / "junk.env").write_text("FLANNEL_NETWORK=10.244.0.0/16\n")
    junk = nodes.dataplane("leases", "release", "--subnet-file", str(host.tmp / "junk.env"),
                           check=False)
    assert junk.returncode == 1 and "no FLANNEL_SUBNET" in junk.stderr, junk.stderr
    assert (host.tmp / "junk.env").exists()         # nothing removed on a refusal


def test_two_nodes_with_one_public_ip_are_told(nodes, host):
    """Nodes a and b are (mis)configured with one public IP, 10.99.0.9 (on both of them): b
    takes a's lease as its own, as flanneld would. a sees its lease renewed by someone else
    and says so, naming the subnet, the IP and both renewals."""
    for ns in (host.ns, host.peer_ns):
        netns.run("ip", "-n", ns, "addr", "add", "10.99.0.9/32", "dev",
                  next(n for n in host.links(ns) if n != "lo"))
    a = nodes.start("a", ip="10.99.0.9")
    subnet = nodes.subnet("a")
    nodes.start("b", ip="10.99.0.9")
    assert nodes.subnet("b") == subnet                # the same lease, reused
    assert nodes.leases() == {subnet: "10.99.0.9"}
    time.sleep(2)                                     # a's watch sees b's write
    log = nodes.stop(a)
    warning = next((line for line in log.splitlines() if "renewed by another node" in line),
                   None)
    assert warning is not None, log
    assert subnet in warning and "10.99.0.9" in warning and "until" in warning
