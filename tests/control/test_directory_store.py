"""The directory store: its files, mtimes as expiry, polling watch, several processes at once.

The SubnetStore contract itself (allocation, requested/previous subnets, renew, release, watch
events, races) runs against both stores in tests/etcd/test_store_contract.py.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime, timedelta, UTC
from ipaddress import IPv4Network
from pathlib import Path
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import FakeClock, make_store_dir
from tests import racing
from dataplane.lease import Lease, LeaseAttrs
from dataplane.netconf import ConfigError
from dataplane.store.base import (ConfigNotFound, EventKind, LeaseEvent, StoreUnavailable,
                                  SubnetTaken)
from dataplane.store.directory import DirectoryStore

MAC_A = "0a:00:00:00:00:0a"
MAC_B = "0a:00:00:00:00:0b"


def vxlan(ip: str, mac: str = MAC_A) -> LeaseAttrs:
    return LeaseAttrs(ip, "vxlan", {"VNI": 1, "VtepMAC": mac})


def net(s: str) -> IPv4Network:
    return IPv4Network(s)


def files(store_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (store_dir / "subnets").iterdir()
            if not p.name.startswith(".")}


SMALL = ('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.10.0", "SubnetMax": "10.244.15.0", '
         '"Backend": {"Type": "vxlan"}}')     # six subnets


# -- config --------------------------------------------------------------------------------------

def test_missing_directory_names_the_path(run, tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "nope")
    for call in (store.get_network_config, store.list_leases,
                 lambda: store.acquire_lease(vxlan("10.99.0.1"))):
        with pytest.raises(ConfigNotFound, match=f"{tmp_path / 'nope'}: no such store directory"):
            run(call())


def test_missing_config_names_the_path(run, tmp_path: Path) -> None:
    d = make_store_dir(tmp_path / "s", config=None)
    with pytest.raises(ConfigNotFound, match=f"{d / 'config'}: no network config"):
        run(DirectoryStore(d).get_network_config())


def test_invalid_config_names_file_and_line(run, tmp_path: Path) -> None:
    d = make_store_dir(tmp_path / "s", config='{\n  "Network": "10.244.0.0/33"\n}\n')
    with pytest.raises(ConfigError, match=f"{d / 'config'}, line 2: Network"):
        run(DirectoryStore(d).get_network_config())


# -- acquire, renew, release ---------------------------------------------------------------------

def test_acquire_writes_flannels_lease_file(run, store_dir: Path) -> None:
    async def go() -> Any:
        store = DirectoryStore(store_dir)
        lease = await store.acquire_lease(vxlan("10.99.0.1"))
        listed, _ = await store.list_leases()
        return lease, listed
    before = datetime.now(UTC)
    lease, listed = run(go())
    assert files(store_dir) == {lease.key: (
        b'{"PublicIP":"10.99.0.1","PublicIPv6":null,"BackendType":"vxlan",'
        b'"BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:0a"}}')}
    assert listed == [lease]                  # expiration exactly as read back from disk
    left = lease.expiration - before
    assert timedelta(hours=23, minutes=59) < left <= timedelta(hours=24, seconds=1)
    mtime = os.stat(store_dir / "subnets" / lease.key).st_mtime
    assert abs(mtime - lease.expiration.timestamp()) < 1e-3








def test_renew_pushes_expiry_and_keeps_the_file(run, store_dir: Path, clock: FakeClock) -> None:
    async def go() -> None:
        store = DirectoryStore(store_dir, clock=clock)
        lease = await store.acquire_lease(vxlan("10.99.0.1"), ttl=100)
        path = store_dir / "subnets" / lease.key
        inode, content = os.stat(path).st_ino, path.read_bytes()
        clock.advance(60)
        renewed = await store.renew_lease(lease, ttl=100)
        assert renewed.expiration - lease.expiration >= timedelta(seconds=60)
        assert (os.stat(path).st_ino, path.read_bytes()) == (inode, content)   # a utime only
        assert (await store.list_leases())[0] == [renewed]
        # Renewing with new attrs rewrites the content.
        changed = await store.renew_lease(
            Lease.from_attrs(lease.subnet, vxlan("10.99.0.1", MAC_B), renewed.expiration))
        assert json.loads(path.read_bytes())["BackendData"]["VtepMAC"] == MAC_B
        assert (await store.list_leases())[0] == [changed]
    run(go())



def test_renew_of_a_lease_taken_over_fails(run, store_dir: Path, clock: FakeClock) -> None:
    async def go() -> None:
        store = DirectoryStore(store_dir, clock=clock)
        mine = await store.acquire_lease(vxlan("10.99.0.1"), ttl=10)
        clock.advance(11)                                     # expired: free for others
        theirs = await store.acquire_lease(vxlan("10.99.0.2", MAC_B), requested=mine.subnet)
        with pytest.raises(SubnetTaken, match="held by 10.99.0.2.*taken over"):
            await store.renew_lease(mine)
        assert (await store.list_leases())[0] == [theirs]
    run(go())



# -- expiry ------------------------------------------------------------------------------------

def test_expired_leases_are_free_and_collected(run, store_dir: Path, clock: FakeClock) -> None:
    async def go() -> None:
        store = DirectoryStore(store_dir, clock=clock)
        a = await store.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.5.0/24"), ttl=30)
        b = await store.acquire_lease(vxlan("10.99.0.2", MAC_B), ttl=3600)
        clock.advance(31)
        assert (await store.list_leases())[0] == [b]
        assert a.key in files(store_dir)                        # expired, not yet collected
        assert [l.subnet for l in await store.list_all_leases()] == sorted([a.subnet, b.subnet])
        c = await store.acquire_lease(vxlan("10.99.0.3"), requested=a.subnet)
        assert c.public_ip == "10.99.0.3"
        d = await store.acquire_lease(vxlan("10.99.0.4"))
        assert files(store_dir).keys() == {b.key, c.key, d.key}
        assert (await store.list_leases())[0] == sorted([b, c, d], key=lambda l: l.subnet)
    run(go())


def test_expired_file_is_deleted_by_the_next_acquire(run, store_dir: Path,
                                                     clock: FakeClock) -> None:
    async def go() -> None:
        store = DirectoryStore(store_dir, clock=clock)
        a = await store.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.5.0/24"), ttl=5)
        clock.advance(6)
        b = await store.acquire_lease(vxlan("10.99.0.2", MAC_B), requested=net("10.244.77.0/24"))
        assert files(store_dir).keys() == {b.key} != {a.key}
    run(go())


def test_hand_written_lease_counts_as_renewed_when_written(run, store_dir: Path) -> None:
    (store_dir / "subnets").mkdir()
    (store_dir / "subnets" / "10.244.5.0-24").write_bytes(b'{"PublicIP":"10.99.0.9"}')
    leases, _ = run(DirectoryStore(store_dir).list_leases())
    assert [(str(l.subnet), l.public_ip) for l in leases] == [("10.244.5.0/24", "10.99.0.9")]
    left = leases[0].expiration - datetime.now(UTC)
    assert timedelta(hours=23, minutes=59) < left <= timedelta(hours=24)


def test_shortest_ttl_reads_back_as_itself(run, store_dir: Path) -> None:
    # Not as a hand-written file (24 h): the write must keep mtime ahead of ctime.
    async def go() -> None:
        store = DirectoryStore(store_dir)
        for _ in range(20):
            lease = await store.acquire_lease(vxlan("10.99.0.1"), ttl=1)
            listed = await store.list_all_leases()
            assert listed == [lease]
            assert lease.expiration - datetime.now(UTC) <= timedelta(seconds=1)
    run(go())


def test_touch_renews_for_a_day(run, store_dir: Path) -> None:
    lease = run(DirectoryStore(store_dir).acquire_lease(vxlan("10.99.0.1"), ttl=60))
    os.utime(store_dir / "subnets" / lease.key)           # touch: mtime = ctime = now
    [touched] = run(DirectoryStore(store_dir).list_all_leases())
    assert touched.expiration - datetime.now(UTC) > timedelta(hours=23)


def test_temp_files_are_not_leases(run, store_dir: Path) -> None:
    # (Unreadable and foreign files: the contract's test_unreadable_and_foreign_values.)
    sub = store_dir / "subnets"
    sub.mkdir()
    (sub / ".10.244.7.0-24.123.abcd.tmp").write_bytes(b'{"PublicIP":"10.99.0.7"}')

    async def go() -> None:
        store = DirectoryStore(store_dir)
        assert (await store.list_leases())[0] == []
        lease = await store.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.7.0/24"))
        assert (await store.list_leases())[0] == [lease]
    run(go())


# -- watch -------------------------------------------------------------------------------------

async def next_batch(events: AsyncIterator[list[LeaseEvent]]) -> list[tuple[str, str, str]]:
    batch = await asyncio.wait_for(events.__anext__(), 3)
    assert batch, "watch yielded an empty batch"
    return [(str(e.kind), str(e.lease.subnet), e.lease.vtep_mac or "") for e in batch]


def test_watch_reports_exact_renewals_and_expiry(run, store_dir: Path,
                                                 clock: FakeClock) -> None:
    # (Added, changed, removed: the contract's test_watch_reports_add_change_renew_remove.)
    async def go() -> None:
        watcher = DirectoryStore(store_dir, poll_interval=0.02, clock=clock)
        node = DirectoryStore(store_dir, clock=clock)
        seed = await node.acquire_lease(vxlan("10.99.0.9"), requested=net("10.244.9.0/24"))
        leases, cursor = await watcher.list_leases()
        assert leases == [seed]                        # the same expiration, to the microsecond
        events = watcher.watch_leases(cursor)

        a = await node.acquire_lease(vxlan("10.99.0.1", MAC_B), requested=net("10.244.1.0/24"))
        assert await next_batch(events) == [("added", "10.244.1.0/24", MAC_B)]
        clock.advance(5)
        renewed = await node.renew_lease(Lease.from_attrs(a.subnet, vxlan("10.99.0.1", MAC_B)))
        batch = await asyncio.wait_for(events.__anext__(), 3)
        assert batch == [LeaseEvent(EventKind.ADDED, renewed)]               # new expiration
        await node.release_lease(a.subnet)
        assert await next_batch(events) == [("removed", "10.244.1.0/24", MAC_B)]

        await node.acquire_lease(vxlan("10.99.0.2"), requested=net("10.244.2.0/24"), ttl=10)
        assert await next_batch(events) == [("added", "10.244.2.0/24", MAC_A)]
        clock.advance(11)                                 # the file stays; the lease is gone
        assert await next_batch(events) == [("removed", "10.244.2.0/24", MAC_A)]

        await watcher.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(events.__anext__(), 1)
    run(go())


def test_watch_batches_changes_between_polls(run, store_dir: Path) -> None:
    """Where inotify is refused the watch polls; what changed between two looks is one batch."""
    async def go() -> None:
        watcher = DirectoryStore(store_dir, poll_interval=0.3, inotify=False)
        node = DirectoryStore(store_dir)
        _, cursor = await watcher.list_leases()
        events = watcher.watch_leases(cursor)
        first = asyncio.ensure_future(events.__anext__())
        await asyncio.gather(*(node.acquire_lease(vxlan(f"10.99.0.{i}")) for i in range(1, 4)))
        batch = await asyncio.wait_for(first, 3)
        assert [e.kind for e in batch] == ["added"] * 3
        await watcher.close()
    run(go())


def test_inotify_watch_hears_a_write_long_before_any_poll(run, store_dir: Path) -> None:
    """With inotify, adds, changes, renewals and removals by another process arrive in a
    fraction of a second although the full rescan is a minute away."""
    async def go() -> None:
        watcher = DirectoryStore(store_dir, poll_interval=60)
        node = DirectoryStore(store_dir)
        _, cursor = await watcher.list_leases()
        events = watcher.watch_leases(cursor)
        first = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.1)                   # the watch is in place
        a = await node.acquire_lease(vxlan("10.99.0.1", MAC_A), requested=net("10.244.1.0/24"))
        batch = await asyncio.wait_for(first, 1)
        assert [(e.kind, e.lease) for e in batch] == [("added", a)]
        b = await node.acquire_lease(vxlan("10.99.0.1", MAC_B), requested=net("10.244.1.0/24"))
        assert await asyncio.wait_for(events.__anext__(), 1) == [LeaseEvent(EventKind.ADDED, b)]
        renewed = await node.renew_lease(b, ttl=7200)              # a utime only
        batch = await asyncio.wait_for(events.__anext__(), 1)
        assert batch == [LeaseEvent(EventKind.ADDED, renewed)]
        await node.release_lease(a.subnet)
        assert await next_batch(events) == [("removed", "10.244.1.0/24", MAC_B)]
        await watcher.close()
    run(go())


def test_inotify_watch_reports_expiry_when_it_happens(run, store_dir: Path) -> None:
    async def go() -> None:
        node = DirectoryStore(store_dir)
        await node.acquire_lease(vxlan("10.99.0.2"), requested=net("10.244.2.0/24"), ttl=1)
        watcher = DirectoryStore(store_dir, poll_interval=60)
        leases, cursor = await watcher.list_leases()
        assert len(leases) == 1
        events = watcher.watch_leases(cursor)
        # no file event announces it: the watch wakes at the lease's own expiry
        assert await next_batch(events) == [("removed", "10.244.2.0/24", MAC_A)]
        await watcher.close()
    run(go())


def test_inotify_overflow_falls_back_to_a_full_look(run, store_dir: Path, monkeypatch) -> None:
    from dataplane.store import dirwatch

    async def go() -> None:
        watcher = DirectoryStore(store_dir, poll_interval=60)
        node = DirectoryStore(store_dir)
        _, cursor = await watcher.list_leases()
        real = dirwatch.DirWatch.read
        monkeypatch.setattr(dirwatch.DirWatch, "read",
                            lambda self: real(self) and None)   # drained, as on an overflow
        events = watcher.watch_leases(cursor)
        first = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.1)
        await node.acquire_lease(vxlan("10.99.0.3"), requested=net("10.244.3.0/24"))
        batch = await asyncio.wait_for(first, 2)
        assert [(e.kind, str(e.lease.subnet)) for e in batch] == [("added", "10.244.3.0/24")]
        await watcher.close()
    run(go())


def test_watch_of_a_vanished_store_raises_store_unavailable(run, tmp_path: Path) -> None:
    d = make_store_dir(tmp_path / "s")

    async def go() -> None:
        store = DirectoryStore(d, poll_interval=0.02)
        _, cursor = await store.list_leases()
        d.joinpath("config").unlink()
        d.rmdir()
        with pytest.raises(StoreUnavailable, match="no such store directory"):
            await asyncio.wait_for(store.watch_leases(cursor).__anext__(), 3)
    run(go())




# -- several processes -------------------------------------------------------------------------

def race(path: Path, n: int, requested: str | None = None, skew: float = 0) -> dict[str, str]:
    """n processes acquire at once (10.99.0.1...); skew: seconds their clocks run ahead."""
    def make_store() -> DirectoryStore:
        clock = FakeClock()
        clock.advance(skew)
        return DirectoryStore(path, clock=clock)
    return racing.race(make_store, n, requested, timeout=20)



@pytest.mark.parametrize("round_", range(3))
def test_processes_racing_for_expired_subnets_never_share_one(run, tmp_path: Path,
                                                              round_: int) -> None:
    d = make_store_dir(tmp_path / "s", SMALL)

    async def fill() -> None:
        store = DirectoryStore(d)
        for i in range(6):
            await store.acquire_lease(vxlan(f"10.98.0.{i + 1}"), ttl=10)
    run(fill())
    got = race(d, 9, skew=60)                     # in the racers' time, all six have expired
    subnets = [v for v in got.values() if v.startswith("10.")]
    assert sorted(got.values()).count("full") == 3, got
    assert len(subnets) == len(set(subnets)) == 6, got
    on_disk = {k: json.loads(v)["PublicIP"] for k, v in files(d).items()}
    assert on_disk == {s.replace("/", "-"): ip for ip, s in got.items() if s.startswith("10.")}
