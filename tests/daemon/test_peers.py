"""The lease reconciler (daemon/peers.py) on fakes: store events and listings in, typed peer
calls out. No root, no store, no node."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, UTC
from ipaddress import IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.backends import UDP, VXLAN
from dataplane.daemon.peers import Peer, Peers, Tunnels
from dataplane.fastpath import pyref
from dataplane.fastpath.types import MODE_UDP, MODE_VXLAN, ForwarderConfig
from dataplane.lease import Lease
from dataplane.store.base import LeaseEvent

OURS = IPv4Network("10.244.1.0/24")
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
MAC_A, MAC_B = "0e:00:00:00:00:0a", "0e:00:00:00:00:0b"


class Recorder:
    """A PeerSink that writes down every call, and keeps the peers as a sink would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.held: dict[IPv4Network, Peer] = {}

    def add_peer(self, peer: Peer) -> None:
        assert peer.subnet not in self.held, f"added twice: {peer}"
        self.calls.append(("add", str(peer.subnet), peer.public_ip))
        self.held[peer.subnet] = peer

    def change_peer(self, old: Peer, new: Peer) -> None:
        assert self.held.get(old.subnet) == old, f"changed what it does not hold: {old}"
        self.calls.append(("change", str(new.subnet), old.public_ip, new.public_ip))
        self.held[new.subnet] = new

    def remove_peer(self, peer: Peer) -> None:
        assert self.held.pop(peer.subnet) == peer, f"removed what it does not hold: {peer}"
        self.calls.append(("remove", str(peer.subnet), peer.public_ip))


def udp(subnet: str, ip: str, expires: datetime = T0) -> Lease:
    return Lease(IPv4Network(subnet), ip, expiration=expires)


def vxlan(subnet: str, ip: str, mac: str | None = MAC_A, expires: datetime = T0) -> Lease:
    data = {"VNI": 1} | ({"VtepMAC": mac} if mac else {})
    return Lease(IPv4Network(subnet), ip, "vxlan", data, expiration=expires)


def added(lease: Lease) -> LeaseEvent:
    return LeaseEvent("added", lease)


def removed(lease: Lease) -> LeaseEvent:
    return LeaseEvent("removed", lease)


def peers(backend=UDP) -> tuple[Peers, Recorder]:
    sink = Recorder()
    return Peers(OURS, backend, sink), sink


def test_a_join_adds_a_peer_and_says_so(caplog) -> None:
    caplog.set_level(logging.INFO, logger="dataplane.daemon.node")
    p, sink = peers()
    assert p.update([added(udp("10.244.2.0/24", "10.99.0.2"))]) == []
    assert sink.calls == [("add", "10.244.2.0/24", "10.99.0.2")]
    assert p.admitted == {IPv4Network("10.244.2.0/24"): Peer(
        IPv4Network("10.244.2.0/24"), "10.99.0.2", b"\0" * 6)}
    assert len(p) == 1 and IPv4Network("10.244.2.0/24") in p
    assert "peer 10.244.2.0/24 at 10.99.0.2" in caplog.text


def test_a_new_public_ip_or_vtep_mac_is_a_change() -> None:
    p, sink = peers(VXLAN)
    p.update([added(vxlan("10.244.2.0/24", "10.99.0.2", MAC_A)),
              added(vxlan("10.244.2.0/24", "10.99.0.7", MAC_A)),
              added(vxlan("10.244.2.0/24", "10.99.0.7", MAC_B))])
    assert sink.calls == [("add", "10.244.2.0/24", "10.99.0.2"),
                          ("change", "10.244.2.0/24", "10.99.0.2", "10.99.0.7"),
                          ("change", "10.244.2.0/24", "10.99.0.7", "10.99.0.7")]
    assert sink.held[IPv4Network("10.244.2.0/24")].mac == bytes.fromhex("0e000000000b")


def test_a_renewal_reaches_the_sink_but_no_forwarder() -> None:
    fwd = pyref.Forwarder(ForwarderConfig(mode=MODE_VXLAN, local_subnet=str(OURS),
                                          port=VXLAN.port, vni=1, mac=b"\x0e\0\0\0\0\x01"))
    calls: list[str] = []

    class Counting:
        def set_peer(self, *args: object) -> None:
            calls.append("set")
            fwd.set_peer(*args)

        def del_peer(self, *args: object) -> None:
            calls.append("del")
            fwd.del_peer(*args)

    p = Peers(OURS, VXLAN, Tunnels([Counting()]))
    first = vxlan("10.244.2.0/24", "10.99.0.2")
    p.update([added(first), added(vxlan("10.244.2.0/24", "10.99.0.2",
                                        expires=T0 + timedelta(hours=1)))])
    assert calls == ["set"] and fwd.peer_count == 1
    assert p.leases[first.subnet].expiration == T0 + timedelta(hours=1)   # the newer write
    p.update([removed(first)])
    assert calls == ["set", "del"] and fwd.peer_count == 0


def test_a_leave_removes_and_an_unknown_leave_is_nothing() -> None:
    p, sink = peers()
    p.update([removed(udp("10.244.9.0/24", "10.99.0.9")),        # never known: no call
              added(udp("10.244.2.0/24", "10.99.0.2")),
              removed(udp("10.244.2.0/24", "10.99.0.2")),
              removed(udp("10.244.2.0/24", "10.99.0.2"))])        # twice: once
    assert sink.calls == [("add", "10.244.2.0/24", "10.99.0.2"),
                          ("remove", "10.244.2.0/24", "10.99.0.2")]
    assert p.admitted == {} and p.leases == {}


def test_expiry_removes_the_peer_by_event_or_by_a_listing_without_it() -> None:
    p, sink = peers()
    a, b = udp("10.244.2.0/24", "10.99.0.2"), udp("10.244.3.0/24", "10.99.0.3")
    p.reset([a, b])
    p.update([removed(a)])                        # the store's watch: a expired
    p.reset([])                                   # b expired while the watch was down
    assert sink.calls[2:] == [("remove", "10.244.2.0/24", "10.99.0.2"),
                              ("remove", "10.244.3.0/24", "10.99.0.3")]
    assert sink.held == {} and len(p) == 0


def test_a_resync_adds_changes_and_removes_what_changed_meanwhile() -> None:
    p, sink = peers()
    p.reset([udp("10.244.2.0/24", "10.99.0.2"), udp("10.244.3.0/24", "10.99.0.3"),
             udp("10.244.4.0/24", "10.99.0.4")])
    sink.calls.clear()
    own = p.reset([udp("10.244.3.0/24", "10.99.0.33"), udp("10.244.4.0/24", "10.99.0.4"),
                   udp("10.244.5.0/24", "10.99.0.5")])
    assert own == []
    assert sink.calls == [("remove", "10.244.2.0/24", "10.99.0.2"),
                          ("change", "10.244.3.0/24", "10.99.0.3", "10.99.0.33"),
                          ("add", "10.244.5.0/24", "10.99.0.5")]   # 10.244.4.0/24: untouched
    assert set(map(str, p.admitted)) == {"10.244.3.0/24", "10.244.4.0/24", "10.244.5.0/24"}


def test_overlaps_are_refused_and_admitted_when_the_other_goes_in_a_resync() -> None:
    p, sink = peers()
    p.reset([udp("10.244.0.0/16", "10.99.0.16"),             # holds ours
             udp("10.244.2.0/24", "10.99.0.2")])
    p.update([added(udp("10.244.2.0/23", "10.99.0.23"))])    # holds the peer's
    assert sink.calls == [("add", "10.244.2.0/24", "10.99.0.2")]
    assert set(map(str, p.refused)) == {"10.244.0.0/16", "10.244.2.0/23"}
    p.reset([udp("10.244.0.0/16", "10.99.0.16"), udp("10.244.2.0/23", "10.99.0.23")])
    assert sink.calls[1:] == [("remove", "10.244.2.0/24", "10.99.0.2"),
                              ("add", "10.244.2.0/23", "10.99.0.23")]
    assert set(map(str, p.refused)) == {"10.244.0.0/16"}      # still over our own


def test_our_own_lease_is_never_a_peer_and_goes_back_to_the_node() -> None:
    p, sink = peers()
    mine = udp(str(OURS), "10.99.0.1")
    events = [added(mine), removed(mine)]
    assert p.update(events) == events
    assert p.reset([mine]) == [added(mine)]
    assert sink.calls == [] and p.admitted == {} and p.refused == {}
    assert p.leases == {OURS: mine}                # known, as the store shows it
    renewed = udp(str(OURS), "10.99.0.1", T0 + timedelta(hours=1))
    p.remember(renewed)                            # our own write: no event for it later
    assert p.reset([renewed]) == []


def test_a_vxlan_lease_without_a_vtep_mac_is_ignored(caplog) -> None:
    p, sink = peers(VXLAN)
    p.update([added(vxlan("10.244.2.0/24", "10.99.0.2", mac=None)),
              added(udp("10.244.3.0/24", "10.99.0.3")),               # a udp node's lease
              added(vxlan("10.244.4.0/24", "10.99.0.4", mac="not-a-mac"))])
    assert sink.calls == [] and p.admitted == {}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned[0] == "ignoring lease 10.244.2.0/24 of 10.99.0.2: not a vxlan lease"
    assert len(warned) == 3


def test_tunnels_change_each_forwarder_on_its_own_worker() -> None:
    ran: list[tuple[int, str]] = []

    class Worker:
        def __init__(self, i: int) -> None:
            self.i = i

        def call(self, fn, *args) -> None:
            ran.append((self.i, fn.__name__))
            fn(*args)

    fwds = [pyref.Forwarder(ForwarderConfig(mode=MODE_UDP, local_subnet=str(OURS), port=UDP.port))
            for _ in range(2)]
    tunnels = Tunnels(fwds)
    tunnels.workers = [Worker(0), Worker(1)]
    p = Peers(OURS, UDP, tunnels)
    p.update([added(udp("10.244.2.0/24", "10.99.0.2"))])
    assert sorted(ran) == [(0, "set_peer"), (1, "set_peer")]
    assert [f.peer_count for f in fwds] == [1, 1]
    p.update([removed(udp("10.244.2.0/24", "10.99.0.2"))])
    assert [f.peer_count for f in fwds] == [0, 0] and len(ran) == 4


# ---- any order --------------------------------------------------------------------------

SUBNETS = ["10.244.0.0/16", "10.244.1.0/24", "10.244.2.0/23", "10.244.2.0/24",
           "10.244.3.0/24", "10.244.3.128/25", "10.244.4.0/24", "10.244.5.0/24"]
events = st.lists(st.tuples(st.booleans(), st.sampled_from(SUBNETS),
                            st.sampled_from(["10.99.0.2", "10.99.0.3"])), max_size=30)


@settings(max_examples=200, deadline=None)
@given(events, st.lists(st.sampled_from(SUBNETS), unique=True))
def test_events_in_any_order_keep_the_peers_consistent(history, listing) -> None:
    fwd = pyref.Forwarder(ForwarderConfig(mode=MODE_UDP, local_subnet=str(OURS), port=UDP.port))
    sink = Recorder()

    class Both:                                     # the recorder, and a real forwarder
        def add_peer(self, peer: Peer) -> None:
            sink.add_peer(peer)
            Tunnels([fwd]).add_peer(peer)

        def change_peer(self, old: Peer, new: Peer) -> None:
            sink.change_peer(old, new)
            Tunnels([fwd]).change_peer(old, new)

        def remove_peer(self, peer: Peer) -> None:
            sink.remove_peer(peer)
            Tunnels([fwd]).remove_peer(peer)

    p = Peers(OURS, UDP, Both())

    def check() -> None:
        assert sink.held == p.admitted               # the sink holds exactly the admitted
        assert fwd.peer_count == len(p.admitted)     # and so does the forwarder (it refuses
        nets = list(p.admitted)                      # overlaps itself: none reached it)
        assert not any(n.overlaps(OURS) for n in nets)
        assert not any(a != b and a.overlaps(b) for a in nets for b in nets)
        for subnet in p.leases:                      # every known lease has its place
            assert (subnet == OURS) or (subnet in p.admitted) != (subnet in p.refused)
        assert set(p.admitted) | set(p.refused) <= set(p.leases)
        for subnet in p.refused:                     # refused only while it overlaps
            assert subnet.overlaps(OURS) or any(subnet.overlaps(n) for n in nets)

    for add, subnet, ip in history:
        p.update([(added if add else removed)(udp(subnet, ip))])
        check()
    p.reset([udp(s, "10.99.0.4") for s in listing])  # a resync ends wherever we were
    check()
    assert set(p.leases) == {IPv4Network(s) for s in listing}
    assert all(peer.public_ip == "10.99.0.4" for peer in p.admitted.values())
