"""Leases become peers (daemon/peers.py): one that overlaps our lease or a peer's is refused,
logged once, and admitted when what it overlapped leaves. No root: the forwarder is the pure-
Python reference and the store is never called."""

from __future__ import annotations

import ipaddress
import logging
import types

import pytest

from dataplane.backends import UDP
from dataplane.daemon.peers import Peers, Tunnels
from dataplane.fastpath import pyref
from dataplane.fastpath.types import MODE_UDP, ForwarderConfig
from dataplane.lease import Lease
from dataplane.store.base import LeaseEvent
from tests.wire.pkts import inner_tcp

OURS = ipaddress.IPv4Network("10.244.1.0/24")


def lease(subnet: str, ip: str) -> Lease:
    return Lease(ipaddress.IPv4Network(subnet), ip)


@pytest.fixture
def node():
    fwds = [pyref.Forwarder(ForwarderConfig(mode=MODE_UDP, local_subnet=str(OURS),
                                            port=UDP.port))]
    peers = Peers(OURS, UDP, Tunnels(fwds))
    return types.SimpleNamespace(peers=peers, fwds=fwds)


def apply(node, kind, subnet, ip):
    node.peers.update([LeaseEvent(kind, lease(subnet, ip))])


def refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refusing lease" in r.getMessage()]


def test_a_lease_covering_ours_is_refused_and_logged_once(node, caplog):
    caplog.set_level(logging.INFO, logger="dataplane.daemon.node")
    for _ in range(3):                                     # renewals, a resync
        apply(node, "added", "10.244.0.0/16", "10.99.0.7")
    assert refusals(caplog) == ["refusing lease 10.244.0.0/16 of 10.99.0.7: it overlaps our "
                                "own 10.244.1.0/24"]
    assert node.peers.admitted == {} and node.fwds[0].peer_count == 0
    assert list(node.peers.refused) == [ipaddress.IPv4Network("10.244.0.0/16")]
    apply(node, "removed", "10.244.0.0/16", "10.99.0.7")
    assert node.peers.refused == {}


def test_an_overlapping_peer_waits_until_the_other_leaves(node, caplog):
    caplog.set_level(logging.INFO, logger="dataplane.daemon.node")
    apply(node, "added", "10.244.2.0/24", "10.99.0.2")
    apply(node, "added", "10.244.2.0/23", "10.99.0.3")
    apply(node, "added", "10.244.2.0/23", "10.99.0.3")
    assert refusals(caplog) == ["refusing lease 10.244.2.0/23 of 10.99.0.3: it overlaps peer "
                                "10.244.2.0/24 (10.99.0.2)"]
    assert list(node.peers.admitted) == [ipaddress.IPv4Network("10.244.2.0/24")]
    apply(node, "removed", "10.244.2.0/24", "10.99.0.2")
    assert list(node.peers.admitted) == [ipaddress.IPv4Network("10.244.2.0/23")]
    assert node.peers.refused == {} and node.fwds[0].peer_count == 1
    [v] = node.fwds[0].egress([inner_tcp(src="10.244.1.5", dst="10.244.3.9")])
    assert v.addr == "10.99.0.3"                           # the /23 now carries its pods
