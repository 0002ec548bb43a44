"""Giving a subnet back: decommission() and `dataplane leases release`, on a directory store.
The namespace tests (tests/daemon/test_restart.py) run the same command against real daemons
and etcd; these cover each rule and each error without root."""

from __future__ import annotations

import argparse
import asyncio
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from dataplane import subnetenv
from dataplane.daemon import decommission as dec
from dataplane.errors import CommandError
from dataplane.lease import LeaseAttrs
from dataplane.store import command
from dataplane.store.base import StoreUnavailable
from dataplane.store.directory import DirectoryStore

S1, S2 = IPv4Network("10.244.1.0/24"), IPv4Network("10.244.2.0/24")


DEFAULT_STEPS = list(dec.CLEANUP_STEPS)      # as imported, before the fixture below


@pytest.fixture(autouse=True)
def no_host_cleanup(monkeypatch):
    """These tests run in the host's own namespace: the real steps (netfilter rules, routes)
    are tested in namespaces (tests/daemon/test_netfilter.py); here they are recorded."""
    ran: list[str] = []
    monkeypatch.setattr(dec, "CLEANUP_STEPS", [lambda job: ran.append(str(job.subnet))])
    return ran


def test_the_steps_are_the_rules_the_direct_routes_and_the_blackhole():
    assert [s.__name__ for s in DEFAULT_STEPS] == ["remove_netfilter_rules",
                                                   "remove_direct_routes",
                                                   "remove_blackhole_route"]


def test_a_named_subnet_alone_touches_nothing_of_this_host(store_dir, tmp_path, no_host_cleanup):
    seed(store_dir, tmp_path)
    assert leases("release", "10.244.1.0/24", "--store-dir", str(store_dir)) == 0
    assert no_host_cleanup == []              # any node's lease, released from anywhere


def leases(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="dataplane leases")
    command.configure(parser)
    return command.main(parser.parse_args(list(argv)))


def seed(store_dir: Path, tmp_path: Path) -> Path:
    async def go() -> None:
        store = DirectoryStore(store_dir)
        await store.acquire_lease(LeaseAttrs("10.99.0.1"), requested=S1)
        await store.acquire_lease(LeaseAttrs("10.99.0.2"), requested=S2)
    asyncio.run(go())
    env = tmp_path / "subnet.env"
    subnetenv.write(env, network=IPv4Network("10.244.0.0/16"), subnet=S1, mtu=1450,
                    ipmasq=False)
    return env


def held(store_dir: Path) -> list[IPv4Network]:
    async def go():
        return [l.subnet for l in (await DirectoryStore(store_dir).list_leases())[0]]
    return asyncio.run(go())


def test_release_by_subnet_keeps_subnet_env(store_dir, tmp_path, capsys):
    env = seed(store_dir, tmp_path)
    assert leases("release", str(S2), "--store-dir", str(store_dir)) == 0
    assert "released lease 10.244.2.0/24 (held by 10.99.0.2)" in capsys.readouterr().out
    assert held(store_dir) == [S1] and env.exists()


def test_store_flags_before_or_after_release(store_dir, tmp_path):
    seed(store_dir, tmp_path)
    assert leases("--store-dir", str(store_dir), "release", str(S2)) == 0
    assert held(store_dir) == [S1]


def test_release_by_subnet_file_decommissions_the_node(store_dir, tmp_path, capsys):
    env = seed(store_dir, tmp_path)
    assert leases("release", "--subnet-file", str(env), "--store-dir", str(store_dir)) == 0
    out = capsys.readouterr().out
    assert "released lease 10.244.1.0/24" in out and f"removed {env}" in out
    assert held(store_dir) == [S2] and not env.exists()


def test_subnet_file_whose_lease_is_already_gone_is_still_cleaned_up(store_dir, tmp_path):
    env = seed(store_dir, tmp_path)
    leases("release", str(S1), "--store-dir", str(store_dir))
    assert leases("release", "--subnet-file", str(env), "--store-dir", str(store_dir)) == 0
    assert not env.exists() and held(store_dir) == [S2]


@pytest.mark.parametrize("argv,words", [
    (["release", "10.244.9.0/24"], ["no lease on 10.244.9.0/24", "10.244.1.0/24"]),
    (["release"], ["SUBNET", "--subnet-file"]),
    (["release", "--subnet-file", "/nonexistent/subnet.env"],
     ["/nonexistent/subnet.env", "no such file"]),
    (["release", "10.244.2.0/24", "--subnet-file", "ENV"], ["names 10.244.1.0/24",
                                                            "not 10.244.2.0/24"]),
])
def test_release_errors_name_what_is_wrong(store_dir, tmp_path, argv, words):
    env = seed(store_dir, tmp_path)
    argv = [str(env) if a == "ENV" else a for a in argv]
    with pytest.raises(CommandError) as exc:
        leases(*argv, "--store-dir", str(store_dir))
    assert all(w in str(exc.value) for w in words), exc.value
    assert held(store_dir) == [S1, S2] and env.exists()         # nothing touched


@pytest.mark.parametrize("content,words", [
    ("FLANNEL_NETWORK=10.244.0.0/16\n", ["no FLANNEL_SUBNET"]),
    ("FLANNEL_SUBNET=banana\n", ["FLANNEL_SUBNET=banana", "not an IPv4 subnet"]),
    (b"FLANNEL_SUBNET=\xff\n", ["cannot read"]),
])
def test_unreadable_subnet_env(store_dir, tmp_path, content, words):
    seed(store_dir, tmp_path)
    env = tmp_path / "bad.env"
    env.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CommandError) as exc:
        leases("release", "--subnet-file", str(env), "--store-dir", str(store_dir))
    assert all(w in str(exc.value) for w in words), exc.value
    assert env.exists() and held(store_dir) == [S1, S2]


def test_unreachable_store_is_one_line():
    with pytest.raises(CommandError) as exc:
        leases("release", "10.244.1.0/24", "--etcd-endpoints", "http://127.0.0.1:1")
    assert "127.0.0.1:1" in str(exc.value) and "\n" not in str(exc.value)


def test_cleanup_steps_run_between_the_lease_and_subnet_env(store_dir, tmp_path, monkeypatch):
    env = seed(store_dir, tmp_path)
    seen = []

    async def async_step(job: dec.Decommission) -> None:
        left = [l.subnet for l in (await DirectoryStore(store_dir).list_leases())[0]]
        seen.append(("async", job.subnet, left, env.exists()))

    def sync_step(job: dec.Decommission) -> None:
        seen.append(("sync", job.lease.public_ip))
        job.done.append("removed the rules")

    monkeypatch.setattr(dec, "CLEANUP_STEPS", [async_step, sync_step])
    job = asyncio.run(dec.decommission(DirectoryStore(store_dir), subnet_file=str(env)))
    # after the lease is gone, before subnet.env is: in order, sync or async
    assert seen == [("async", S1, [S2], True), ("sync", "10.99.0.1")]
    assert job.done == ["released lease 10.244.1.0/24 (held by 10.99.0.1)",
                        "removed the rules", f"removed {env}"]
    assert not env.exists()


def test_a_failing_cleanup_step_leaves_subnet_env_to_run_again(store_dir, tmp_path):
    env = seed(store_dir, tmp_path)

    def broken(job: dec.Decommission) -> None:
        raise StoreUnavailable("rules: iptables is locked")

    with pytest.raises(StoreUnavailable):
        asyncio.run(dec.decommission(DirectoryStore(store_dir), subnet_file=str(env),
                                     steps=[broken]))
    assert env.exists()
    asyncio.run(dec.decommission(DirectoryStore(store_dir), subnet_file=str(env), steps=[]))
    assert not env.exists()
