"""The SubnetStore contract (store/base.py), run against both stores: directory and etcd.

What only one store has (the directory's mtimes and polling, etcd's leases, compaction and
failover) is tested beside it: tests/control/test_directory_store.py, tests/etcd/test_etcd_*.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, UTC
from ipaddress import IPv4Network
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dataplane.lease import InvalidSubnet, Lease
from tests import racing
from dataplane.store.base import (EventKind, LeaseEvent, NoFreeSubnet, StoreError, SubnetStore,
                                  SubnetTaken)
from tests.etcd.etcd_helpers import (MAC_A, MAC_B, SMALL, StoreKind, net, open_spec,
                                     vxlan)

FLANNEL_VXLAN = (b'{"PublicIP":"10.99.0.1","PublicIPv6":null,"BackendType":"vxlan",'
                 b'"BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:0a"}}')


def close_to(a: datetime | None, b: datetime | None, slack: float = 1.5) -> bool:
    """Expirations as two stores see them: etcd's TTLs are whole seconds."""
    return a is not None and b is not None and abs((a - b).total_seconds()) <= slack


def test_is_a_subnet_store(kind: StoreKind) -> None:
    store = kind.new_store()
    assert isinstance(store, SubnetStore)
    assert store.location


# -- config ------------------------------------------------------------------------------------

def test_config(run, kind: StoreKind) -> None:
    cfg = run(kind.new_store().get_network_config())
    assert (str(cfg.network), cfg.backend_type, cfg.vni, cfg.port) == \
        ("10.244.0.0/16", "vxlan", 1, 8472)


# -- acquire, renew, release -------------------------------------------------------------------

def test_acquire_writes_flannels_lease(run, kind: StoreKind) -> None:
    async def go() -> Any:
        store = kind.new_store()
        lease = await store.acquire_lease(vxlan("10.99.0.1"))
        listed, _ = await store.list_leases()
        return lease, listed
    before = datetime.now(UTC)
    lease, listed = run(go())
    assert kind.values() == {lease.key: FLANNEL_VXLAN}
    assert listed == [lease]                  # the expiration exactly as the store reads it
    left = lease.expiration - before
    assert timedelta(hours=23, minutes=59) < left <= timedelta(hours=24, seconds=1)


def test_acquire_accepts_a_mapping_and_seconds(run, kind: StoreKind) -> None:
    lease = run(kind.new_store().acquire_lease({"public_ip": "10.99.0.1"}, ttl=60))
    assert lease.public_ip == "10.99.0.1" and lease.backend_type is None
    assert kind.values() == {lease.key: b'{"PublicIP":"10.99.0.1","PublicIPv6":null}'}
    left = lease.expiration - datetime.now(UTC)
    assert timedelta(seconds=58) < left <= timedelta(seconds=60)
    with pytest.raises(ValueError, match="positive"):
        run(kind.new_store().acquire_lease(vxlan("10.99.0.1"), ttl=0))
    with pytest.raises(ValueError, match="at least 1 s"):
        run(kind.new_store().acquire_lease(vxlan("10.99.0.1"), ttl=0.5))


def test_allocation_stays_between_subnet_min_and_max(run, kind: StoreKind) -> None:
    kind.set_config(SMALL)

    async def go() -> list[IPv4Network]:
        store = kind.new_store()
        got = [(await store.acquire_lease(vxlan(f"10.99.0.{i}"))).subnet for i in range(1, 7)]
        with pytest.raises(NoFreeSubnet, match="10.244.10.0 to 10.244.15.0"):
            await store.acquire_lease(vxlan("10.99.0.7"))
        return got
    got = run(go())
    assert sorted(got) == [net(f"10.244.{i}.0/24") for i in range(10, 16)]


def test_requested_subnet(run, kind: StoreKind) -> None:
    async def go() -> None:
        store = kind.new_store()
        a = await store.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.7.0/24"))
        assert a.subnet == net("10.244.7.0/24")
        with pytest.raises(SubnetTaken, match=r"10.244.7.0/24 is held by 10.99.0.1 "
                                              r"\(lease expires in 23h5\dm\)") as taken:
            await store.acquire_lease(vxlan("10.99.0.2", MAC_B), requested=net("10.244.7.0/24"))
        assert taken.value.holder.public_ip == "10.99.0.1"
        with pytest.raises(InvalidSubnet, match="/24 subnets"):
            await store.acquire_lease(vxlan("10.99.0.2"), requested=net("10.244.8.0/25"))
        with pytest.raises(InvalidSubnet, match="outside SubnetMin"):
            await store.acquire_lease(vxlan("10.99.0.2"), requested=net("10.244.0.0/24"))
        # The same node asking for another subnet moves there: one node, one lease.
        b = await store.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.9.0/24"))
        assert [l.subnet for l in (await store.list_leases())[0]] == [b.subnet]
    run(go())
    assert list(kind.values()) == ["10.244.9.0-24"]


def test_same_public_ip_keeps_its_subnet_with_new_attrs(run, kind: StoreKind) -> None:
    async def go() -> None:
        store = kind.new_store()
        first = await store.acquire_lease(vxlan("10.99.0.1", MAC_A))
        again = await store.acquire_lease(vxlan("10.99.0.1", MAC_B),
                                          previous=net("10.244.200.0/24"))
        assert again.subnet == first.subnet and again.vtep_mac == MAC_B
        assert (await store.list_leases())[0] == [again]
    run(go())


def test_previous_subnet(run, kind: StoreKind) -> None:
    async def go() -> None:
        store = kind.new_store()
        a = await store.acquire_lease(vxlan("10.99.0.1"), previous=net("10.244.42.0/24"))
        assert a.subnet == net("10.244.42.0/24")
        # Held by someone else: ignored, another subnet is picked.
        b = await store.acquire_lease(vxlan("10.99.0.2"), previous=net("10.244.42.0/24"))
        assert b.subnet != a.subnet
        # Not one this config hands out: ignored.
        c = await store.acquire_lease(vxlan("10.99.0.3"), previous=net("10.244.0.0/24"))
        assert c.subnet not in (a.subnet, b.subnet, net("10.244.0.0/24"))
    run(go())


def test_own_lease_incompatible_with_new_config_is_replaced(run, kind: StoreKind) -> None:
    async def go() -> None:
        store = kind.new_store()
        old = await store.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.3.0/24"))
        kind.set_config('{"Network": "10.244.0.0/16", "SubnetLen": 25}')
        new = await store.acquire_lease(vxlan("10.99.0.1"))
        assert new.subnet.prefixlen == 25 and not new.subnet.overlaps(net("10.244.0.0/24"))
        assert [l.subnet for l in (await store.list_leases())[0]] == [new.subnet]
        assert old.key not in kind.values()
    run(go())


def test_renew_pushes_expiry_and_takes_new_attrs(run, kind: StoreKind) -> None:
    async def go() -> None:
        store = kind.new_store()
        lease = await store.acquire_lease(vxlan("10.99.0.1"), ttl=100)
        renewed = await store.renew_lease(lease, ttl=3600)
        assert renewed.expiration - lease.expiration > timedelta(seconds=3400)
        assert renewed.attrs == lease.attrs and renewed.subnet == lease.subnet
        assert (await store.list_leases())[0] == [renewed]
        changed = await store.renew_lease(
            Lease.from_attrs(lease.subnet, vxlan("10.99.0.1", MAC_B), renewed.expiration))
        assert json.loads(kind.values()[lease.key])["BackendData"]["VtepMAC"] == MAC_B
        assert (await store.list_leases())[0] == [changed]
    run(go())


def test_renew_after_release_writes_it_again(run, kind: StoreKind) -> None:
    async def go() -> Lease:
        store = kind.new_store()
        lease = await store.acquire_lease(vxlan("10.99.0.1"))
        await store.release_lease(lease.subnet)
        assert kind.values() == {}
        renewed = await store.renew_lease(lease)
        assert (await store.list_leases())[0] == [renewed]
        return lease
    lease = run(go())
    assert kind.values() == {lease.key: FLANNEL_VXLAN}


def test_renew_of_a_lease_taken_over_fails(run, kind: StoreKind) -> None:
    async def go() -> None:
        store = kind.new_store()
        mine = await store.acquire_lease(vxlan("10.99.0.1"))
        await store.release_lease(mine.subnet)          # e.g. an operator, or expiry
        theirs = await store.acquire_lease(vxlan("10.99.0.2", MAC_B), requested=mine.subnet)
        with pytest.raises(SubnetTaken, match="held by 10.99.0.2.*taken over"):
            await store.renew_lease(mine)
        assert (await store.list_leases())[0] == [theirs]
    run(go())


def test_release(run, kind: StoreKind) -> None:
    async def go() -> None:
        store = kind.new_store()
        a = await store.acquire_lease(vxlan("10.99.0.1"))
        b = await store.acquire_lease(vxlan("10.99.0.2", MAC_B))
        await store.release_lease(a.subnet)
        await store.release_lease(net("10.244.250.0/24"))       # none there: no error
        assert (await store.list_leases())[0] == [b]
    run(go())


def test_unreadable_and_foreign_values(run, kind: StoreKind,
                                       caplog: pytest.LogCaptureFixture) -> None:
    kind.put_raw("10.244.6.0-24", b"garbage")
    kind.put_raw("README", b"not a lease")

    async def go() -> None:
        store = kind.new_store()
        assert (await store.list_leases())[0] == []
        with pytest.raises(SubnetTaken, match="10.244.6.0-24 is unreadable"):
            await store.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.6.0/24"))
        lease = await store.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.7.0/24"))
        assert (await store.list_leases())[0] == [lease]
    run(go())
    assert "10.244.6.0-24: not a flannel lease" in caplog.text


# -- watch -------------------------------------------------------------------------------------

async def next_batch(events: AsyncIterator[list[LeaseEvent]]) -> list[tuple[str, str, str]]:
    batch = await asyncio.wait_for(events.__anext__(), 5)
    assert batch, "watch yielded an empty batch"
    return [(str(e.kind), str(e.lease.subnet), e.lease.vtep_mac or "") for e in batch]


def test_watch_reports_add_change_renew_remove(run, kind: StoreKind) -> None:
    async def go() -> None:
        watcher, node = kind.new_store(), kind.new_store()
        seed = await node.acquire_lease(vxlan("10.99.0.9"), requested=net("10.244.9.0/24"))
        leases, cursor = await watcher.list_leases()
        assert [l.attrs for l in leases] == [seed.attrs]
        assert close_to(leases[0].expiration, seed.expiration)
        events = watcher.watch_leases(cursor)

        a = await node.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.1.0/24"))
        assert await next_batch(events) == [("added", "10.244.1.0/24", MAC_A)]
        await node.acquire_lease(vxlan("10.99.0.1", MAC_B))                   # new attrs
        assert await next_batch(events) == [("added", "10.244.1.0/24", MAC_B)]
        renewed = await node.renew_lease(Lease.from_attrs(a.subnet, vxlan("10.99.0.1", MAC_B)),
                                         ttl=7200)
        [event] = await asyncio.wait_for(events.__anext__(), 5)
        assert event.kind == EventKind.ADDED and event.lease.attrs == renewed.attrs
        assert close_to(event.lease.expiration, renewed.expiration)          # the new expiry
        await node.release_lease(a.subnet)
        assert await next_batch(events) == [("removed", "10.244.1.0/24", MAC_B)]

        await watcher.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(events.__anext__(), 2)
        await node.close()
    run(go())


def test_watch_events_for_own_lease_come_too(run, kind: StoreKind) -> None:
    async def go() -> None:
        store = kind.new_store()
        _, cursor = await store.list_leases()
        events = store.watch_leases(cursor)
        first = asyncio.ensure_future(events.__anext__())
        lease = await store.acquire_lease(vxlan("10.99.0.1"))
        batch = await asyncio.wait_for(first, 5)
        assert batch == [LeaseEvent("added", lease)]
        await store.close()
    run(go())


def test_closed_store_refuses_work(run, kind: StoreKind) -> None:
    async def go() -> None:
        store = kind.new_store()
        async with store:
            pass
        with pytest.raises(StoreError, match="closed"):
            await store.list_leases()
        with pytest.raises(StoreError, match="closed"):
            await store.acquire_lease(vxlan("10.99.0.1"))
    run(go())


def test_cursor_from_another_store_type_is_refused(run, kind: StoreKind) -> None:
    async def go() -> None:
        with pytest.raises(TypeError, match="cursor"):
            await kind.new_store().watch_leases(42).__anext__()
    run(go())


# -- concurrency -------------------------------------------------------------------------------

def test_coroutines_of_one_process_never_share_a_subnet(run, kind: StoreKind) -> None:
    kind.set_config(SMALL)

    async def go() -> list[Any]:
        stores = [kind.new_store() for _ in range(3)]
        return await asyncio.gather(*(stores[i % 3].acquire_lease(vxlan(f"10.99.0.{i + 1}"))
                                      for i in range(8)), return_exceptions=True)
    got = run(go(), timeout=30)
    subnets = [r.subnet for r in got if not isinstance(r, BaseException)]
    assert len(subnets) == len(set(subnets)) == 6, got
    assert sum(isinstance(r, NoFreeSubnet) for r in got) == 2, got


def race(kind: StoreKind, n: int, requested: str | None = None) -> dict[str, str]:
    """n processes, each its own store (and etcd client), acquire at once (10.99.0.1...)."""
    spec = kind.spec()
    return racing.race(lambda: open_spec(spec), n, requested)


@pytest.mark.parametrize("round_", range(2))
def test_processes_racing_for_few_subnets_never_share_one(kind: StoreKind, round_: int) -> None:
    kind.set_config(SMALL)
    got = race(kind, 9)                                       # nine nodes, six subnets
    subnets = [v for v in got.values() if v.startswith("10.")]
    assert sorted(got.values()).count("full") == 3, got
    assert len(subnets) == len(set(subnets)) == 6, got
    stored = {k: json.loads(v)["PublicIP"] for k, v in kind.values().items()}
    assert stored == {s.replace("/", "-"): ip for ip, s in got.items() if s.startswith("10.")}


def test_processes_requesting_one_subnet_one_wins(kind: StoreKind) -> None:
    kind.set_config(SMALL)
    got = race(kind, 6, requested="10.244.12.0/24")
    assert sorted(got.values()) == ["10.244.12.0/24"] + ["taken"] * 5, got
    winner = next(ip for ip, v in got.items() if v != "taken")
    assert json.loads(kind.values()["10.244.12.0-24"])["PublicIP"] == winner


def test_a_node_that_restarts_keeps_its_subnet(run, kind: StoreKind) -> None:
    async def go() -> None:
        async with kind.new_store() as first_run:
            lease = await first_run.acquire_lease(vxlan("10.99.0.1"))
        async with kind.new_store() as second_run:
            again = await second_run.acquire_lease(vxlan("10.99.0.1"))
        assert again.subnet == lease.subnet
    run(go())
    assert len(kind.values()) == 1


def test_previous_held_by_our_old_public_ip_is_not_taken(run, kind: StoreKind, caplog) -> None:
    """The node's public IP changed, its subnet.env names the subnet its old IP still holds:
    that may as well be a live node, so (as flanneld) another subnet is taken, and the log
    says which lease is in the way and how to give it back."""
    async def go() -> tuple[Lease, Lease]:
        store = kind.new_store()
        old = await store.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.42.0/24"))
        new = await store.acquire_lease(vxlan("10.99.0.9"), previous=old.subnet)
        return old, new
    with caplog.at_level("WARNING", logger="dataplane.store"):
        old, new = run(go())
    assert new.subnet != old.subnet
    assert sorted(kind.values()) == sorted(["10.244.42.0-24",
                                            str(new.subnet).replace("/", "-")])
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert ("10.244.42.0/24" in warning and "10.99.0.1" in warning and "10.99.0.9" in warning
            and "dataplane leases release 10.244.42.0/24" in warning), warning


def test_previous_is_taken_back_once_the_old_lease_expired(run, kind: StoreKind) -> None:
    async def go() -> Lease:
        store = kind.new_store()
        await store.acquire_lease(vxlan("10.99.0.1"), requested=net("10.244.43.0/24"), ttl=1)
        await asyncio.sleep(2.5)                      # etcd: 1 s minimum with fast=True
        return await store.acquire_lease(vxlan("10.99.0.9"), previous=net("10.244.43.0/24"))
    assert run(go(), timeout=15).subnet == net("10.244.43.0/24")

