"""The etcd store against real etcd: flannel's keys and bytes, etcd leases and expiry, compaction,
a restarted etcd, a cluster losing its leader, members that hang."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from datetime import datetime, timedelta, UTC
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest
import uvloop

from dataplane.lease import LeaseAttrs
from dataplane.store.base import ConfigNotFound, NoFreeSubnet, StoreUnavailable, SubnetTaken
from dataplane.store.etcd import DEFAULT_PREFIX, EtcdStore
from dataplane.store.etcd_client import EtcdClient
from tests.etcd.etcd_helpers import (MAC_A, MAC_B, NET_CONF, EtcdKind, etcd_get_prefix,
                                     etcd_revision, etcdctl, net, vxlan)
from tests.etcd.test_store_contract import next_batch

FLANNEL_UDP = b'{"PublicIP":"10.99.0.2","PublicIPv6":null}'
FLANNEL_VXLAN = (b'{"PublicIP":"10.99.0.1","PublicIPv6":null,"BackendType":"vxlan",'
                 b'"BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:0a"}}')


def run_once(coro: Awaitable[Any], timeout: float = 20.0) -> Any:
    """For the slow tests (their own etcd servers): on uvloop only, as the daemon runs."""
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)
    return uvloop.run(bounded())


async def member_status(url: str) -> dict[str, Any]:
    client = EtcdClient(url)
    try:
        return await client.status()
    finally:
        await client.close()


def lease_ttl(url: str, lease_id: int) -> dict[str, Any]:
    return json.loads(etcdctl(url, "lease", "timetolive", format(lease_id, "x"), "-w", "json"))


@pytest.fixture
def default_prefix(etcd_url: str) -> Iterator[str]:
    """flannel's own prefix on the shared etcd, empty before and after the test."""
    etcdctl(etcd_url, "del", "--prefix", DEFAULT_PREFIX + "/")
    etcdctl(etcd_url, "put", f"{DEFAULT_PREFIX}/config", NET_CONF)
    try:
        yield DEFAULT_PREFIX
    finally:
        etcdctl(etcd_url, "del", "--prefix", DEFAULT_PREFIX + "/")


# -- flannel's layout, byte for byte --------------------------------------------------------------

def test_keys_values_and_ttls_are_flannels(run, etcd_url: str, default_prefix: str) -> None:
    async def go() -> None:
        async with EtcdStore(etcd_url) as store:                     # the default prefix
            assert store.location == f"etcd {etcd_url} (prefix /coreos.com/network)"
            await store.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.1.0/24"))
            await store.acquire_lease(LeaseAttrs("10.99.0.2"), requested=net("10.244.2.0/24"),
                                      ttl=600)
    run(go())
    kvs = etcd_get_prefix(etcd_url, "/coreos.com/network/subnets/")
    assert [(kv["key"], kv["value"]) for kv in kvs] == [
        (b"/coreos.com/network/subnets/10.244.1.0-24", FLANNEL_VXLAN),
        (b"/coreos.com/network/subnets/10.244.2.0-24", FLANNEL_UDP)]
    assert [lease_ttl(etcd_url, kv["lease"])["granted-ttl"] for kv in kvs] == [86400, 600]


def test_a_lease_etcdctl_wrote_as_flannel_does_is_used(run, etcd_url: str,
                                                       default_prefix: str) -> None:
    """What flanneld leaves in etcd: lease JSON under a granted etcd lease."""
    lease_id = json.loads(etcdctl(etcd_url, "lease", "grant", "3600", "-w", "json"))["ID"]
    key = f"{DEFAULT_PREFIX}/subnets/10.244.5.0-24"
    flannel_value = ('{"PublicIP":"10.99.0.7","PublicIPv6":null,"BackendType":"vxlan",'
                     '"BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:07"}}')
    etcdctl(etcd_url, "put", f"--lease={lease_id:x}", key, flannel_value)

    async def go() -> None:
        async with EtcdStore(etcd_url) as store:
            [theirs], _ = await store.list_leases()
            assert (theirs.subnet, theirs.public_ip, theirs.vtep_mac) == \
                (net("10.244.5.0/24"), "10.99.0.7", "0a:00:00:00:00:07")
            left = theirs.expiration - datetime.now(UTC)
            assert timedelta(minutes=59) < left <= timedelta(hours=1)
            with pytest.raises(SubnetTaken, match=r"held by 10.99.0.7 \(lease expires in 59m"):
                await store.acquire_lease(vxlan("10.99.0.1"), requested=theirs.subnet)
            # The node restarts as one of ours: it keeps its subnet, now with our attrs.
            ours = await store.acquire_lease(vxlan("10.99.0.7", MAC_B))
            assert ours.subnet == theirs.subnet and ours.vtep_mac == MAC_B
    run(go())
    [kv] = etcd_get_prefix(etcd_url, f"{DEFAULT_PREFIX}/subnets/")
    assert kv["key"].decode() == key and kv["lease"] != lease_id
    assert json.loads(kv["value"])["BackendData"]["VtepMAC"] == MAC_B
    assert lease_ttl(etcd_url, lease_id)["ttl"] == -1          # the replaced lease is revoked


def test_a_key_without_an_etcd_lease_is_a_reservation(run, etcd_url: str) -> None:
    kind = EtcdKind(etcd_url)
    kind.put_raw("10.244.8.0-24", b'{"PublicIP":"10.99.0.8"}')     # flannel's "reservation"

    async def go() -> None:
        async with kind.new_store() as store:
            [reserved], _ = await store.list_leases()
            assert reserved.public_ip == "10.99.0.8" and reserved.expiration is None
            with pytest.raises(SubnetTaken, match="held by 10.99.0.8"):
                await store.acquire_lease(vxlan("10.99.0.1"), requested=reserved.subnet)
            mine = await store.acquire_lease(vxlan("10.99.0.8"))
            assert mine.subnet == reserved.subnet and mine.expiration is None
    run(go())
    [kv] = etcd_get_prefix(etcd_url, f"{kind.prefix}/subnets/")
    assert kv["lease"] == 0 and json.loads(kv["value"])["BackendType"] == "vxlan"


def test_dual_stack_keys_count_as_taken(run, etcd_url: str) -> None:
    kind = EtcdKind(etcd_url, config='{"Network": "10.244.0.0/16", "SubnetMin": "10.244.10.0", '
                                     '"SubnetMax": "10.244.11.0"}')
    kind.put_raw("10.244.11.0-24&fc00:0:0:b::-64", b'{"PublicIP":"10.99.0.11"}')   # flannel's

    async def go() -> None:
        async with kind.new_store() as store:
            assert (await store.list_leases())[0] == []            # not an IPv4 lease we use
            with pytest.raises(SubnetTaken, match="by a dual-stack lease"):
                await store.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.11.0/24"))
            assert (await store.acquire_lease(vxlan("10.99.0.1"))).subnet == net("10.244.10.0/24")
            with pytest.raises(NoFreeSubnet):
                await store.acquire_lease(vxlan("10.99.0.2"))
    run(go())


def test_write_network_config(run, etcd_url: str) -> None:
    kind = EtcdKind(etcd_url, config=None)

    async def go() -> None:
        async with kind.new_store() as store:
            with pytest.raises(ValueError, match="Network"):
                await store.write_network_config('{"Network": "10.244.0.0/33"}')
            with pytest.raises(ConfigNotFound):
                await store.get_network_config()
            written = await store.write_network_config(NET_CONF)
            assert await store.get_network_config() == written
    run(go())
    stored = etcdctl(etcd_url, "get", "--print-value-only", f"{kind.prefix}/config")
    assert stored == NET_CONF + "\n"                    # etcdctl adds a newline


def test_missing_config_names_the_key(run, etcd_url: str) -> None:
    kind = EtcdKind(etcd_url, config=None)
    with pytest.raises(ConfigNotFound, match=f"{etcd_url}: no network config at "
                                             f"{kind.prefix}/config"):
        run(kind.new_store().get_network_config())
    kind.set_config('{"Network": "10.244.0.0/33"}')
    with pytest.raises(ValueError, match=f"etcd {kind.prefix}/config, line 1: Network"):
        run(kind.new_store().get_network_config())


# -- etcd leases: renewal, expiry ---------------------------------------------------------------

def test_renew_puts_again_with_a_new_etcd_lease(run, etcd_url: str) -> None:
    kind = EtcdKind(etcd_url)

    async def go() -> tuple[Any, Any]:
        async with kind.new_store() as store:
            lease = await store.acquire_lease(vxlan("10.99.0.1"), ttl=100)
            [before] = etcd_get_prefix(etcd_url, f"{kind.prefix}/subnets/")
            await store.renew_lease(lease, ttl=200)
            [after] = etcd_get_prefix(etcd_url, f"{kind.prefix}/subnets/")
            return before, after
    before, after = run(go())
    assert after["value"] == before["value"] == FLANNEL_VXLAN
    assert after["mod_revision"] > before["mod_revision"]          # watchers see the renewal
    assert after["lease"] != before["lease"]
    assert lease_ttl(etcd_url, after["lease"])["granted-ttl"] == 200
    assert lease_ttl(etcd_url, before["lease"])["ttl"] == -1       # the old one is revoked


def test_release_revokes_the_etcd_lease(run, etcd_url: str) -> None:
    kind = EtcdKind(etcd_url)

    async def go() -> None:
        async with kind.new_store() as store:
            lease = await store.acquire_lease(vxlan("10.99.0.1"))
            [kv] = etcd_get_prefix(etcd_url, f"{kind.prefix}/subnets/")
            await store.release_lease(lease.subnet)
            assert kind.values() == {}
            assert lease_ttl(etcd_url, kv["lease"])["ttl"] == -1
    run(go())


def test_expiry_is_a_removed_event_and_frees_the_subnet(run, etcd_url: str) -> None:
    kind = EtcdKind(etcd_url)

    async def go() -> None:
        watcher, node = kind.new_store(), kind.new_store()
        _, cursor = await watcher.list_leases()
        events = watcher.watch_leases(cursor)
        short = await node.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.3.0/24"),
                                         ttl=1)
        assert await next_batch(events) == [("added", "10.244.3.0/24", MAC_A)]
        [(kind_, lease)] = [(e.kind, e.lease) for e in
                            await asyncio.wait_for(events.__anext__(), 5)]
        assert kind_ == "removed" and lease.subnet == short.subnet        # etcd deleted it
        other = await node.acquire_lease(vxlan("10.99.0.2", MAC_B), requested=short.subnet)
        assert other.public_ip == "10.99.0.2"
        # Our node renews late: its key is gone, so it is written again... unless taken.
        with pytest.raises(SubnetTaken, match="held by 10.99.0.2"):
            await node.renew_lease(short)
        await watcher.close()
        await node.close()
    run(go())


def test_renew_after_expiry_writes_it_again(run, etcd_url: str) -> None:
    kind = EtcdKind(etcd_url)

    async def go() -> None:
        async with kind.new_store() as store:
            lease = await store.acquire_lease(vxlan("10.99.0.1"), ttl=1)
            for _ in range(60):
                if not kind.values():
                    break
                await asyncio.sleep(0.1)
            assert kind.values() == {}, "etcd did not expire the lease"
            renewed = await store.renew_lease(lease, ttl=60)
            assert (await store.list_leases())[0] == [renewed]
    run(go())


def test_junk_written_over_a_lease_removes_it(run, etcd_url: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    kind = EtcdKind(etcd_url)

    async def go() -> None:
        async with kind.new_store() as store:
            lease = await store.acquire_lease(vxlan("10.99.0.1"))
            _, cursor = await store.list_leases()
            events = store.watch_leases(cursor)
            first = asyncio.ensure_future(events.__anext__())
            await asyncio.to_thread(kind.put_raw, lease.key, b"{not json")
            batch = await asyncio.wait_for(first, 5)
            assert [(e.kind, e.lease) for e in batch] == [("removed", lease)]
            await asyncio.to_thread(kind.put_raw, lease.key, lease.to_json())
            assert await next_batch(events) == [("added", str(lease.subnet), MAC_A)]
    with caplog.at_level(logging.WARNING):
        run(go())
    assert "not a flannel lease" in caplog.text


# -- compaction ----------------------------------------------------------------------------------

def test_compacted_watch_lists_again_and_loses_nothing(run, etcd_url: str) -> None:
    kind = EtcdKind(etcd_url)

    async def go() -> None:
        async with kind.new_store() as watcher, kind.new_store() as node:
            seed = await node.acquire_lease(vxlan("10.99.0.9"), requested=net("10.244.9.0/24"))
            gone = await node.acquire_lease(vxlan("10.99.0.8"), requested=net("10.244.8.0/24"))
            _, cursor = await watcher.list_leases()
            # While the watcher is not looking: one lease goes, one changes, one comes and goes,
            # one comes; then the history of all of it is compacted away.
            await node.release_lease(gone.subnet)
            await node.acquire_lease(vxlan("10.99.0.9", MAC_B))
            brief = await node.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.1.0/24"))
            await node.release_lease(brief.subnet)
            new = await node.acquire_lease(vxlan("10.99.0.2"), requested=net("10.244.2.0/24"))
            client = EtcdClient(etcd_url)
            await client.compact(etcd_revision(etcd_url))
            await client.close()

            events = watcher.watch_leases(cursor)
            assert await next_batch(events) == [("removed", "10.244.8.0/24", MAC_A),
                                                ("added", "10.244.2.0/24", MAC_A),
                                                ("added", "10.244.9.0/24", MAC_B)]
            # ...and the watch goes on from the new revision.
            await node.release_lease(new.subnet)
            assert await next_batch(events) == [("removed", "10.244.2.0/24", MAC_A)]
            assert seed.subnet in {l.subnet for l in (await watcher.list_leases())[0]}
    run(go())


# -- etcd going away ---------------------------------------------------------------------------

def test_etcd_restarted_under_a_watch(etcd_factory) -> None:
    server = etcd_factory.one()
    kind = EtcdKind(server.client_url)

    async def go() -> None:
        store = EtcdStore(server.client_url, prefix=kind.prefix, timeout=2)
        lease = await store.acquire_lease(vxlan("10.99.0.1"))
        _, cursor = await store.list_leases()
        pending = asyncio.ensure_future(store.watch_leases(cursor).__anext__())
        await asyncio.sleep(0.2)
        await asyncio.to_thread(server.stop)
        with pytest.raises(StoreUnavailable, match=server.client_url):
            await asyncio.wait_for(pending, 5)
        with pytest.raises(StoreUnavailable,
                           match=f"{server.client_url}: connection refused"):
            await store.list_leases()
        await asyncio.to_thread(server.start)
        leases, cursor = await store.list_leases()
        assert leases == [lease]                             # etcd kept it, and its lease
        events = store.watch_leases(cursor)
        await store.acquire_lease(vxlan("10.99.0.2", MAC_B), requested=net("10.244.2.0/24"))
        assert await next_batch(events) == [("added", "10.244.2.0/24", MAC_B)]
        await store.close()
    run_once(go())


@pytest.mark.parametrize("victim", ["leader", "follower"])
def test_cluster_keeps_serving_when_a_member_dies(etcd_factory, victim: str) -> None:
    members = etcd_factory.cluster(3)
    statuses = [run_once(member_status(m.client_url)) for m in members]
    leader_id = statuses[0]["leader"]
    dead = next(m for m, s in zip(members, statuses)
                if (s["header"]["member_id"] == leader_id) == (victim == "leader"))
    # The victim first: calls and the watch go to it until it dies.
    urls = ",".join(m.client_url for m in sorted(members, key=lambda m: m is not dead))
    kind = EtcdKind(urls)

    async def go() -> None:
        store = EtcdStore(urls, prefix=kind.prefix, timeout=5)
        lease = await store.acquire_lease(vxlan("10.99.0.1"))
        _, cursor = await store.list_leases()
        pending = asyncio.ensure_future(store.watch_leases(cursor).__anext__())
        await asyncio.sleep(0.2)
        dead.kill()
        with pytest.raises(StoreUnavailable, match=dead.client_url):
            await asyncio.wait_for(pending, 5)
        leases, cursor = await store.list_leases()
        assert leases == [lease]
        events = store.watch_leases(cursor)
        renewed = await store.renew_lease(lease, ttl=600)
        second = await store.acquire_lease(vxlan("10.99.0.2", MAC_B))
        seen = []
        while len(seen) < 2:
            seen += [(e.kind, e.lease.subnet) for e in
                     await asyncio.wait_for(events.__anext__(), 5)]
        assert seen == [("added", renewed.subnet), ("added", second.subnet)]
        await store.release_lease(second.subnet)
        await store.close()
    run_once(go(), timeout=30)


def test_a_member_that_loses_quorum_ends_the_watch(etcd_factory) -> None:
    members = etcd_factory.cluster(3)
    kind = EtcdKind(members[0].client_url)

    async def go() -> None:
        store = EtcdStore(members[0].client_url, prefix=kind.prefix, timeout=1, idle_check=0.5)
        _, cursor = await store.list_leases()
        pending = asyncio.ensure_future(store.watch_leases(cursor).__anext__())
        await asyncio.sleep(0.2)
        for m in members[1:]:
            m.kill()
        with pytest.raises(StoreUnavailable, match=members[0].client_url):
            await asyncio.wait_for(pending, 5)          # no leader: cancelled, or found out
        with pytest.raises(StoreUnavailable):
            await store.list_leases()
        await store.close()
    run_once(go())


def test_a_member_that_hangs_ends_the_watch(etcd_factory) -> None:
    server = etcd_factory.one()
    kind = EtcdKind(server.client_url)

    async def go() -> None:
        store = EtcdStore(server.client_url, prefix=kind.prefix, timeout=1, idle_check=0.5)
        _, cursor = await store.list_leases()
        pending = asyncio.ensure_future(store.watch_leases(cursor).__anext__())
        await asyncio.sleep(0.2)
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            started = asyncio.get_running_loop().time()
            with pytest.raises(StoreUnavailable, match=r"watch idle for 0.5 s and the member "
                               r"does not answer a status request \(no answer"):
                await asyncio.wait_for(pending, 5)
            assert asyncio.get_running_loop().time() - started < 3
            with pytest.raises(StoreUnavailable, match="no answer within 1 s"):
                await store.list_leases()
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert (await store.list_leases())[0] == []
        await store.close()
    run_once(go())


def test_unreachable_endpoint_is_named(run) -> None:
    with pytest.raises(StoreUnavailable, match=r"http://127.0.0.1:1: connection refused"):
        run(EtcdStore("http://127.0.0.1:1").list_leases())


def test_closing_the_store_ends_a_waiting_watch(run, etcd_url: str) -> None:
    kind = EtcdKind(etcd_url)

    async def go() -> None:
        store = kind.new_store()
        _, cursor = await store.list_leases()
        pending = asyncio.ensure_future(store.watch_leases(cursor).__anext__())
        await asyncio.sleep(0.1)
        await store.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, 2)
    run(go())
