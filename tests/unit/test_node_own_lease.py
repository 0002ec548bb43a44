"""Two nodes configured with the same public IP share one lease without noticing (each takes
the other's as its own): the daemon that sees its lease renewed by someone else warns, naming
the subnet, the public IP and both renewals. On fakes: no root, no store."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, UTC
from ipaddress import IPv4Network

import pytest

from dataplane.daemon.node import Node, NodeOptions
from dataplane.lease import Lease
from dataplane.store.base import LeaseEvent

SUBNET = IPv4Network("10.244.1.0/24")
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def lease(ip: str = "10.99.0.1", expires: datetime = T0) -> Lease:
    return Lease(SUBNET, ip, expiration=expires)


@pytest.fixture
def node():
    n = Node(NodeOptions(store=None, lease_ttl=24 * 3600))
    n.lease = lease()
    n.own.wrote(n.lease)                  # as _start records its acquire
    return n


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_our_own_write_coming_back_is_not_a_warning(node, caplog):
    node._own_lease(LeaseEvent("added", lease(expires=T0 + timedelta(microseconds=300))))
    assert warnings(caplog) == []


def test_another_writer_a_second_apart_is_still_seen(node, caplog):
    """Two nodes started within a second of each other: their expiries differ by less than
    etcd's whole-second TTLs, but not by less than a millisecond."""
    node._own_lease(LeaseEvent("added", lease(expires=T0 + timedelta(milliseconds=900))))
    assert len(warnings(caplog)) == 1


def test_an_older_write_of_ours_arriving_late_is_ours(node, caplog):
    async def renew() -> Lease:
        return lease(expires=T0 + timedelta(hours=1))
    asyncio.run(node.own.write(renew, node._hold))
    node._own_lease(LeaseEvent("added", lease(expires=T0)))    # the first write's event, late
    assert warnings(caplog) == []


def test_a_renewal_by_another_node_with_our_public_ip_is_named(node, caplog):
    node._own_lease(LeaseEvent("added", lease(expires=T0 + timedelta(minutes=7))))
    (message,) = warnings(caplog)
    for word in ("10.244.1.0/24", "10.99.0.1", "another node",
                 (T0 + timedelta(minutes=7)).astimezone().isoformat(timespec="seconds"),
                 T0.astimezone().isoformat(timespec="seconds")):
        assert word in message, message
    # the same foreign write seen again (a resync) is not repeated
    node._own_lease(LeaseEvent("added", lease(expires=T0 + timedelta(minutes=7))))
    assert len(warnings(caplog)) == 1


def test_a_lease_taken_by_another_public_ip_is_the_renewal_s_business(node, caplog):
    node._own_lease(LeaseEvent("added", lease("10.99.0.2", T0 + timedelta(minutes=7))))
    assert warnings(caplog) == []


def test_events_during_our_own_write_wait_for_its_result(node, caplog):
    async def go(result: Lease, seen: Lease) -> None:
        async def write() -> Lease:
            node._own_lease(LeaseEvent("added", seen))   # the watch reports it before we return
            return result
        await node.own.write(write, node._hold)

    renewed = lease(expires=T0 + timedelta(hours=1))
    asyncio.run(go(renewed, renewed))                 # it was our renewal: quiet
    assert warnings(caplog) == [] and node.lease == renewed
    other = lease(expires=T0 + timedelta(hours=3))
    asyncio.run(go(lease(expires=T0 + timedelta(hours=2)), other))     # it was not
    assert len(warnings(caplog)) == 1
