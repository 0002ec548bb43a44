"""Restarts keep the node's subnet, as flanneld's do: a stop leaves the lease (to run out on its
TTL) and subnet.env, the next start takes the same subnet back; `dataplane leases release`
gives it back on purpose. Nodes in this process on FakeHost (the lease's life is the node's
logic, not the kernel's), with the directory store and with a real etcd on loopback."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from dataplane import cli
from dataplane.daemon.decommission import decommission
from dataplane.store.etcd_server import INSTALL_HINT, EtcdServer, find_etcd
from tests.daemon.inprocess import in_cluster

PINNED = "10.244.7.0/24"
NET_CONF = '{"Network": "10.244.0.0/16"}'


@pytest.fixture(scope="module")
def etcd_url():
    if find_etcd() is None:
        pytest.skip(f"etcd is not installed ({INSTALL_HINT})")
    data = Path(tempfile.mkdtemp(prefix="etcd-restart-", dir="/dev/shm"))
    server = EtcdServer(data / "data", fast=True)
    try:
        server.start()
        yield server.client_url
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


class Store:
    """One store the nodes of a test share: its clients, its command-line flags."""

    def __init__(self, kind: str, tmp: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        if kind == "directory":
            self.dir = tmp / "store"
            self.dir.mkdir()
            (self.dir / "config").write_text(NET_CONF)
            self.args = ["--store-dir", str(self.dir)]
        else:
            self.url = request.getfixturevalue("etcd_url")
            self.prefix = f"/dataplane-{secrets.token_hex(4)}/network"   # this test's own
            self.args = ["--etcd-endpoints", self.url, "--etcd-prefix", self.prefix]
            asyncio.run(self._configure())

    def client(self):
        if self.kind == "directory":
            from dataplane.store.directory import DirectoryStore
            return DirectoryStore(self.dir)
        from dataplane.store.etcd import EtcdStore
        return EtcdStore(self.url, prefix=self.prefix)

    async def _configure(self) -> None:
        async with self.client() as store:
            await store.write_network_config(NET_CONF)

    async def leases(self) -> dict[str, str]:
        async with self.client() as store:
            leases, _ = await store.list_leases()
        return {str(lease.subnet): lease.public_ip for lease in leases}

    async def release(self, subnet: str | None = None, subnet_file: Path | None = None) -> str:
        """`dataplane leases release` (the host's clean-up steps are the namespace tests')."""
        from ipaddress import IPv4Network
        async with self.client() as store:
            job = await decommission(store, IPv4Network(subnet) if subnet else None,
                                     str(subnet_file) if subnet_file else None, steps=[])
        return "; ".join(job.done)


@pytest.fixture(params=["directory", "etcd"])
def store(request, tmp_path):
    return Store(request.param, tmp_path, request)


def run(tmp_path, store: Store, test) -> None:
    in_cluster(tmp_path, test, new_store=store.client)


def subnet_of(cluster, side: str = "a") -> str:
    for line in cluster.env_file(side).read_text().splitlines():
        if line.startswith("FLANNEL_SUBNET="):
            gateway, length = line.split("=", 1)[1].split("/")
            return f"{gateway.rsplit('.', 1)[0]}.0/{length}"
    raise AssertionError(cluster.env_file(side).read_text())


class Log:
    """The log lines from here on (what the daemon's stdout would show)."""

    def __init__(self, caplog) -> None:
        self.caplog, self.start = caplog, len(caplog.records)

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.caplog.records[self.start:])


@pytest.mark.parametrize("pinned", [True, False], ids=["with-subnet", "without-subnet"])
def test_three_restarts_keep_the_subnet_then_release_gives_it_back(tmp_path, store, pinned,
                                                                     caplog):
    caplog.set_level("INFO")
    ask = PINNED if pinned else None

    async def test(cluster):
        ip_a = cluster.hosts["a"].address
        await cluster.start("a", ask, lease_ttl=600)
        subnet = subnet_of(cluster)
        if pinned:
            assert subnet == PINNED
        env_text = cluster.env_file("a").read_text()
        for restart in range(3):
            log = Log(caplog)
            await cluster.stop("a")
            assert "kept until" in log.text(), log.text()
            # Stopped: lease and subnet.env stay, exactly as they were.
            assert await store.leases() == {subnet: ip_a}, f"after stop {restart + 1}"
            assert cluster.env_file("a").read_text() == env_text
            await cluster.start("a", ask, lease_ttl=600)
            assert subnet_of(cluster) == subnet, f"restart {restart + 1} moved the node"
            assert await store.leases() == {subnet: ip_a}
        await cluster.stop("a")

        # Decommissioned: the lease and subnet.env are gone...
        out = await store.release(subnet_file=cluster.env_file("a"))
        assert f"released lease {subnet}" in out and "removed" in out, out
        assert await store.leases() == {}
        assert not cluster.env_file("a").exists()
        # ...so the subnet is free for another node, and a's next start takes another one.
        await cluster.start("b", subnet, lease_ttl=600)
        assert subnet_of(cluster, "b") == subnet
        await cluster.start("a", None, lease_ttl=600)
        assert subnet_of(cluster, "a") != subnet
        assert await store.leases() == {subnet: cluster.hosts["b"].address,
                                         subnet_of(cluster, "a"): ip_a}
    run(tmp_path, store, test)


def test_restart_after_the_lease_was_released_takes_subnet_env_s_subnet_back(tmp_path, store):
    """subnet.env alone brings the subnet back (flanneld's ReadCIDRFromSubnetFile) once our
    public IP holds no lease any more, e.g. released by an operator while the node was down."""
    async def test(cluster):
        await cluster.start("a", None, lease_ttl=600)
        subnet = subnet_of(cluster)
        await cluster.stop("a")
        await store.release(subnet)
        assert await store.leases() == {} and cluster.env_file("a").exists()
        await cluster.start("a", None, lease_ttl=600)
        assert subnet_of(cluster) == subnet
        assert await store.leases() == {subnet: cluster.hosts["a"].address}
    run(tmp_path, store, test)


def test_release_errors_are_one_line(store, tmp_path, capsys):
    assert cli.main(["leases", "release", "10.244.99.0/24", *store.args]) == 1
    err = capsys.readouterr().err
    assert "no lease on 10.244.99.0/24" in err and "Traceback" not in err
    (tmp_path / "junk.env").write_text("FLANNEL_NETWORK=10.244.0.0/16\n")
    assert cli.main(["leases", "release", "--subnet-file", str(tmp_path / "junk.env"),
                     *store.args]) == 1
    assert "no FLANNEL_SUBNET" in capsys.readouterr().err
    assert (tmp_path / "junk.env").exists()         # nothing removed on a refusal


def test_two_nodes_with_one_public_ip_are_told(tmp_path, store, caplog):
    """Nodes a and b are (mis)configured with one public IP, 10.99.0.9: b takes a's lease as
    its own, as flanneld would. a sees its lease renewed by someone else and says so, naming
    the subnet, the IP and both renewals."""
    caplog.set_level("INFO")

    async def test(cluster):
        for side in ("a", "b"):
            cluster.hosts[side] = cluster.net.host(public_ip="10.99.0.9")
        await cluster.start("a", None, lease_ttl=600)
        subnet = subnet_of(cluster, "a")
        log = Log(caplog)
        await cluster.start("b", None, lease_ttl=600)
        assert subnet_of(cluster, "b") == subnet                # the same lease, reused
        assert await store.leases() == {subnet: "10.99.0.9"}
        await asyncio.sleep(2)                                  # a's watch sees b's write
        await cluster.stop("a")
        warning = next((line for line in log.text().splitlines()
                        if "renewed by another node" in line), None)
        assert warning is not None, log.text()
        assert subnet in warning and "10.99.0.9" in warning and "until" in warning
    run(tmp_path, store, test)
