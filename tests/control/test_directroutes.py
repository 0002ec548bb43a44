"""DirectRouting's bookkeeping on a fake routing table, and the node's peer placement: a
directly routed peer is never in the forwarder, a tunnelled one always is (no root needed)."""

from __future__ import annotations

from ipaddress import IPv4Network

from dataplane.backends import VXLAN
from dataplane.daemon.directroutes import DirectRoutes
from dataplane.daemon.node import vtep_mac
from dataplane.daemon.peers import Peers, Tunnels
from dataplane.lease import Lease
from dataplane.store.base import LeaseEvent
from dataplane.testing.fakehost import FakeRoutes

ON_LINK = "10.99.0."          # the fake underlay subnet: these addresses are reached directly


class FakeTable(FakeRoutes):
    """dataplane.testing's route table on a fake underlay subnet: ON_LINK addresses are
    reached directly."""

    def __init__(self, routes: dict[str, str] | None = None) -> None:
        super().__init__(set(), dict(routes or {}))

    def reaches_directly(self, address: str) -> bool:
        return address.startswith(ON_LINK)


def lease(subnet: str, ip: str, mac: str = "0e:00:00:00:00:02") -> Lease:
    return Lease(IPv4Network(subnet), ip, "vxlan", {"VNI": 1, "VtepMAC": mac})


def test_same_subnet_peer_is_routed_and_others_are_not() -> None:
    table = FakeTable()
    direct = DirectRoutes(table, Tunnels(), threaded=False)
    assert direct.place(lease("10.244.2.0/24", "10.99.0.2"))
    assert not direct.place(lease("10.244.3.0/24", "10.98.0.3"))
    assert table.routes == {"10.244.2.0/24": "10.99.0.2"}
    assert IPv4Network("10.244.2.0/24") in direct
    assert IPv4Network("10.244.3.0/24") not in direct


def test_changes_replace_and_moves_away_remove_the_route() -> None:
    table = FakeTable()
    direct = DirectRoutes(table, Tunnels(), threaded=False)
    direct.place(lease("10.244.2.0/24", "10.99.0.2"))
    direct.place(lease("10.244.2.0/24", "10.99.0.2"))           # unchanged: no netlink call
    assert table.calls == [("replace", "10.244.2.0/24", "10.99.0.2")]
    direct.place(lease("10.244.2.0/24", "10.99.0.7"))           # new public IP, still on link
    assert table.routes == {"10.244.2.0/24": "10.99.0.7"}
    assert not direct.place(lease("10.244.2.0/24", "10.98.0.7"))   # moved off our subnet
    assert table.routes == {} and IPv4Network("10.244.2.0/24") not in direct


def test_forget_and_withdraw_all() -> None:
    table = FakeTable()
    direct = DirectRoutes(table, Tunnels(), threaded=False)
    direct.place(lease("10.244.2.0/24", "10.99.0.2"))
    direct.place(lease("10.244.4.0/24", "10.99.0.4"))
    assert direct.forget(IPv4Network("10.244.2.0/24"))
    assert not direct.forget(IPv4Network("10.244.2.0/24"))
    assert table.routes == {"10.244.4.0/24": "10.99.0.4"}
    direct.withdraw_all()
    assert table.routes == {} and direct.routes == {}


def test_a_restart_adopts_its_routes_and_prunes_departed_peers() -> None:
    table = FakeTable({"10.244.2.0/24": "10.99.0.2", "10.244.5.0/24": "10.99.0.5"})
    direct = DirectRoutes(table, Tunnels(), threaded=False)
    direct.adopt()
    direct.place(lease("10.244.2.0/24", "10.99.0.2"))     # still there
    direct.prune()                                         # 10.244.5.0/24 left meanwhile
    assert table.routes == {"10.244.2.0/24": "10.99.0.2"}
    assert ("delete", "10.244.5.0/24", "10.99.0.5") in table.calls


def test_netlink_failure_falls_back_to_tunnelling() -> None:
    class Broken(FakeTable):
        def replace(self, subnet: str, gateway: str) -> None:
            raise OSError("EPERM")

    direct = DirectRoutes(Broken(), Tunnels(), threaded=False)
    assert not direct.place(lease("10.244.2.0/24", "10.99.0.2"))
    assert direct.routes == {}


def test_disabled_routes_nothing() -> None:
    direct = DirectRoutes(None, Tunnels())
    assert not direct.place(lease("10.244.2.0/24", "10.99.0.2"))
    assert not direct.forget(IPv4Network("10.244.2.0/24"))


def test_the_threaded_path_runs_netlink_off_the_caller() -> None:
    table = FakeTable()
    direct = DirectRoutes(table, Tunnels())
    try:
        assert direct.place(lease("10.244.2.0/24", "10.99.0.2"))
    finally:
        direct.close()
    assert table.routes == {"10.244.2.0/24": "10.99.0.2"}


class FakeForwarder:
    def __init__(self) -> None:
        self.peers: dict[str, tuple] = {}

    def set_peer(self, subnet: IPv4Network, ip: str, mac: bytes) -> None:
        self.peers[str(subnet)] = (ip, mac)

    def del_peer(self, subnet: IPv4Network) -> None:
        self.peers.pop(str(subnet))     # KeyError if the node deletes what it never set


class PeersNode:
    """What of a node the peers touch: its reconciler in front of DirectRouting's routes."""

    def __init__(self, table: FakeTable) -> None:
        self.fwd = FakeForwarder()
        self.direct = DirectRoutes(table, Tunnels([self.fwd]), threaded=False)
        self.peers = Peers(IPv4Network("10.244.1.0/24"), VXLAN, self.direct)

    def _apply(self, event: LeaseEvent) -> None:
        self.peers.update([event])


def node_with(table: FakeTable) -> tuple[PeersNode, FakeForwarder]:
    node = PeersNode(table)
    return node, node.fwd


def test_node_keeps_direct_peers_out_of_the_forwarder() -> None:
    table = FakeTable()
    node, fwd = node_with(table)
    near, far = lease("10.244.2.0/24", "10.99.0.2"), lease("10.244.3.0/24", "10.98.0.3")
    node._apply(LeaseEvent("added", near))
    node._apply(LeaseEvent("added", far))
    assert set(fwd.peers) == {"10.244.3.0/24"}
    assert table.routes == {"10.244.2.0/24": "10.99.0.2"}
    assert set(node.peers.admitted) == {near.subnet, far.subnet}     # both count as peers

    # the far peer moves onto our subnet: out of the forwarder, routed
    node._apply(LeaseEvent("added", lease("10.244.3.0/24", "10.99.0.3")))
    assert fwd.peers == {}
    assert table.routes == {"10.244.2.0/24": "10.99.0.2", "10.244.3.0/24": "10.99.0.3"}
    # the near one moves away: into the forwarder, its route gone
    node._apply(LeaseEvent("added", lease("10.244.2.0/24", "10.98.0.2")))
    assert set(fwd.peers) == {"10.244.2.0/24"} and "10.244.2.0/24" not in table.routes

    node._apply(LeaseEvent("removed", lease("10.244.3.0/24", "10.99.0.3")))
    node._apply(LeaseEvent("removed", lease("10.244.2.0/24", "10.98.0.2")))
    assert fwd.peers == {} and table.routes == {} and node.peers.admitted == {}


def test_our_own_lease_is_never_routed() -> None:
    table = FakeTable()
    node, fwd = node_with(table)
    node._apply(LeaseEvent("added", lease("10.244.1.0/24", "10.99.0.1")))
    assert table.calls == [] and fwd.peers == {}


def test_mac_prefix_builds_the_vtep_mac_from_the_public_ip() -> None:
    assert vtep_mac("10.99.0.7", 1, bytes([0x0E, 0x2A])) == bytes.fromhex("0e2a0a630007")
    assert vtep_mac("10.99.0.7", 1, bytes([0x0E, 0x2A])) != \
        vtep_mac("10.99.0.8", 1, bytes([0x0E, 0x2A]))
    derived = vtep_mac("10.99.0.7", 1)
    assert derived[0] & 0x03 == 0x02          # without: derived, local, unicast as before
