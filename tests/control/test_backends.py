"""The backend facts (dataplane/backends.py) against flannel's spec and against real packets."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from dataplane import explain
from dataplane.backends import BACKENDS, UDP, VXLAN
from dataplane.lease import Lease


def test_the_facts_are_flannels() -> None:
    assert (UDP.port, UDP.overhead, UDP.device(1), UDP.lease_type) == (8285, 28, "flannel0", None)
    assert (VXLAN.port, VXLAN.overhead, VXLAN.device(1), VXLAN.lease_type) == \
        (8472, 50, "flannel.1", "vxlan")
    assert VXLAN.device(4096) == "flannel.4096"
    assert VXLAN.backend_data(1, bytes.fromhex("0e0000000001")) == \
        {"VNI": 1, "VtepMAC": "0e:00:00:00:00:01"}
    assert UDP.backend_data(1, b"\0" * 6) is None
    assert set(BACKENDS) == {"udp", "vxlan"}


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_the_overhead_is_what_a_real_packet_carries(name: str) -> None:
    segments = explain.build(name, 1500, 100, 1, "python")
    inner = next(i for i, s in enumerate(segments) if s.label.startswith("inner IPv4"))
    assert sum(len(s.data) for s in segments[:inner]) == BACKENDS[name].overhead


def test_a_peer_mac_comes_from_a_vxlan_lease_only() -> None:
    net = IPv4Network("10.244.2.0/24")
    good = Lease(net, "10.99.0.2", "vxlan", {"VNI": 1, "VtepMAC": "0e:00:00:00:00:02"})
    assert VXLAN.peer_mac(good) == bytes.fromhex("0e0000000002")
    assert UDP.peer_mac(Lease(net, "10.99.0.2")) == b"\0" * 6
    for bad in (Lease(net, "10.99.0.2"), Lease(net, "10.99.0.2", "vxlan", {"VNI": 1}),
                Lease(net, "10.99.0.2", "vxlan", {"VtepMAC": "zz"})):
        with pytest.raises(ValueError):
            VXLAN.peer_mac(bad)
