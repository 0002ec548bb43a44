"""A hostile underlay and a bad day (issue 9): what one peer, one lease or one sender must not be
able to do to the others.

- A lease that overlaps ours or a peer's is refused, so nothing on the wire speaks for our pods.
- A failed set_peer (out of memory) leaves the peer table exactly as it was.
- A datagram from an address with no lease costs its own receive and nothing else: it does not
  use up the segment budget a leased peer's datagrams need.
- The offload drain counts IPv6 as such and rate-limits its ICMP errors like the plain one.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane.drops import Direction, Drop
from dataplane.fastpath import cnative
from dataplane.fastpath.types import (IO_UDP_GRO, IO_VNET, MODE_UDP, MODE_VXLAN,
                                      Action, ForwarderConfig, VnetHdr)

from .pkts import LOCAL_SUBNET, OWN_MAC, PEER2, PEER3, inner_tcp, inner_udp
from .strategies import MACS, PUBLIC_IPS, SUBNETS, addr_in, packets, vxlan_payload
from .test_drain_io import FakeTun, udp_socket

EG, IN = Direction.EGRESS, Direction.INGRESS
PORT = 8472


def make(impl, mode=MODE_UDP, **kw):
    fwd = impl.Forwarder(ForwarderConfig(mode=mode, local_subnet=LOCAL_SUBNET, port=PORT,
                                         mac=OWN_MAC, **kw))
    for subnet, ip, mac in (PEER2, PEER3):
        fwd.set_peer(subnet, ip, mac)
    return fwd


def wire(impl, mode, inner: bytes, public_ip: str, mac: bytes = PEER2[2]):
    payload = impl.vxlan_encap(inner, 1, OWN_MAC, mac) if mode == MODE_VXLAN else inner
    return (public_ip, PORT, payload)


# ---- overlapping leases ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", [MODE_UDP, MODE_VXLAN], ids=["udp", "vxlan"])
@pytest.mark.parametrize("cover", ["10.244.0.0/16", "10.0.0.0/8", "0.0.0.0/0", "10.244.1.128/25",
                                   "10.244.1.7/32"])
def test_a_lease_covering_ours_cannot_speak_for_our_pods(impl, mode, cover):
    # e.g. a /16 left in the store after the network's SubnetLen changed
    fwd = make(impl, mode)
    with pytest.raises(OSError) as exc:
        fwd.set_peer(cover, "127.0.0.9", MACS[2])
    assert exc.value.errno == errno.EEXIST
    assert fwd.peer_count == 2
    spoof = inner_tcp(src="10.244.1.77", dst="10.244.1.5")        # "from" one of our pods
    [v] = fwd.ingress([wire(impl, mode, spoof, "127.0.0.9", MACS[2])])
    assert (v.action, v.drop) == (Action.DROP, Drop.UNKNOWN_PEER)
    [v] = fwd.ingress([wire(impl, mode, spoof, "127.0.0.2")])     # nor may a real peer
    assert (v.action, v.drop) == (Action.DROP, Drop.SPOOFED_SOURCE)


def test_overlapping_peers_are_refused_until_the_other_leaves(impl):
    fwd = make(impl)
    for subnet in ("10.244.2.128/25", "10.244.0.0/22", "10.244.2.9/32"):
        with pytest.raises(OSError) as exc:
            fwd.set_peer(subnet, "127.0.0.9")
        assert exc.value.errno == errno.EEXIST
    fwd.set_peer("10.244.2.0/24", "127.0.0.22", PEER2[2])             # the same lease: replaces
    fwd.set_peer("10.244.4.0/23", "127.0.0.4")                          # beside, not over
    assert fwd.peer_count == 3
    fwd.del_peer("10.244.2.0/24")
    fwd.set_peer("10.244.2.128/25", "127.0.0.9")
    [v] = fwd.egress([inner_tcp(dst="10.244.2.200")])
    assert v.addr == "127.0.0.9"


@given(peers=st.lists(st.tuples(st.sampled_from(SUBNETS + ["10.244.1.0/25", "10.244.1.0/24"]),
                                st.sampled_from(PUBLIC_IPS), st.sampled_from(MACS)), max_size=8),
       local=st.sampled_from(["10.244.1.0/24", "10.244.0.0/16", "10.244.1.5/32"]),
       mode=st.sampled_from([MODE_UDP, MODE_VXLAN]), data=st.data())
def test_no_datagram_ever_delivers_a_source_from_our_subnet(impl, peers, local, mode, data):
    fwd = impl.Forwarder(ForwarderConfig(mode=mode, local_subnet=local, port=PORT,
                                         mac=OWN_MAC))
    accepted = []
    for subnet, ip, mac in peers:
        try:
            fwd.set_peer(subnet, ip, mac)
            accepted = [p for p in accepted if p[0] != subnet] + [(subnet, ip, mac)]
        except OSError as exc:
            assert exc.errno == errno.EEXIST
    nets = [ipaddress.IPv4Network(s, strict=False) for s, _, _ in accepted]
    own = ipaddress.IPv4Network(local, strict=False)
    assert not any(n.overlaps(own) for n in nets)
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
    assert fwd.peer_count == len(accepted)
    # A packet from "our" pods, sent by each peer and by strangers, any shape.
    for public_ip, mac in [(ip, m) for _, ip, m in accepted] + [("192.0.2.1", MACS[0])]:
        inner = data.draw(packets(src=addr_in(local), dst=addr_in(local), intact=20))
        payload = data.draw(vxlan_payload(inner, vni=st.just(1), dst_mac=st.just(OWN_MAC),
                                          src_mac=st.just(mac))) if mode == MODE_VXLAN else inner
        [v] = fwd.ingress([(public_ip, PORT, payload)])
        assert v.action == Action.DROP


# ---- a failed set_peer changes nothing ------------------------------------------------------

def probe(fwd, n: int) -> list:
    """What the forwarder does with a packet to and from each peer subnet 10.245.i.0/24."""
    out = []
    for i in range(n):
        eg = fwd.egress([inner_tcp(src="10.244.1.5", dst=f"10.245.{i}.9")])
        ing = fwd.ingress([(f"127.0.1.{i}", PORT, inner_tcp(src=f"10.245.{i}.9",
                                                            dst="10.244.1.5"))])
        out.append([(v.action, v.drop, v.addr) for v in eg + ing])
    return out


@pytest.mark.parametrize("before", [10, 14], ids=["routes-grow", "peers-grow"])
@pytest.mark.parametrize("nth", [1, 2, 3])
def test_a_failed_set_peer_leaves_the_table_as_it_was(pyimpl, before, nth):
    """With PEER2 and PEER3, 12 peers: the 13th grows both route tables (16 slots, filled to
    three quarters); 16: the 17th grows the peer array (16 entries)."""
    fwd = make(cnative, MODE_UDP)
    ref_without = make(pyimpl, MODE_UDP)
    ref_with = make(pyimpl, MODE_UDP)
    for i in range(before):
        for f in (fwd, ref_without, ref_with):
            f.set_peer(f"10.245.{i}.0/24", f"127.0.1.{i}")
    ref_with.set_peer(f"10.245.{before}.0/24", f"127.0.1.{before}")
    cnative.lib.dp_fault_alloc(nth)
    try:
        fwd.set_peer(f"10.245.{before}.0/24", f"127.0.1.{before}")
        failed = False
    except OSError as exc:
        assert exc.errno == errno.ENOMEM
        failed = True
    finally:
        cnative.lib.dp_fault_alloc(0)
    want = ref_without if failed else ref_with
    assert fwd.peer_count == want.peer_count
    assert probe(fwd, before + 1) == probe(want, before + 1)
    # and the table still works: the same call again, and more peers after it
    fwd.set_peer(f"10.245.{before}.0/24", f"127.0.1.{before}")
    for i in range(before + 1, before + 20):
        fwd.set_peer(f"10.245.{i}.0/24", f"127.0.1.{i}")
        ref_with.set_peer(f"10.245.{i}.0/24", f"127.0.1.{i}")
    assert probe(fwd, before + 20) == probe(ref_with, before + 20)
    # the allocations this set_peer makes: two route tables, or the peer array
    assert failed == (nth <= (2 if before == 10 else 1))


# ---- the byte counters: inner packet bytes both ways ----------------------------------------

@pytest.mark.parametrize("mode", [MODE_UDP, MODE_VXLAN], ids=["udp", "vxlan"])
def test_bytes_count_the_inner_packet_in_both_directions(impl, mode):
    a = make(impl, mode, ttl_decrement=False)
    pkt = inner_udp(src="10.244.1.5", dst="10.244.2.7", data=b"z" * 333)
    [v] = a.egress([pkt])
    b = impl.Forwarder(ForwarderConfig(mode=mode, local_subnet="10.244.2.0/24", port=PORT,
                                       mac=PEER2[2], ttl_decrement=False))
    b.set_peer(LOCAL_SUBNET, "127.0.0.1", OWN_MAC)
    [w] = b.ingress([("127.0.0.1", PORT, v.data)])
    assert w.data == pkt
    assert a.counters().bytes == [len(pkt), 0] and b.counters().bytes == [0, len(pkt)]


# ---- the offload egress drain: IPv6 and the ICMP limit ----------------------------------

def vnet_plain(pkt: bytes) -> bytes:
    return VnetHdr().pack() + pkt


def test_offload_drain_counts_ipv6_as_unsupported():
    tun = FakeTun()
    node = udp_socket("127.0.0.1")
    try:
        fwd = make(cnative, io_flags=IO_VNET)
        ipv6 = bytes.fromhex("6000000000083a40") + bytes(32) + bytes(8)
        tun.inject(vnet_plain(ipv6), vnet_plain(b"\x50" + bytes(39)))
        assert fwd.drain_tun(tun.fd, node, 8) == 2
        c = fwd.counters()
        assert c.dropped(EG, Drop.IPV6_UNSUPPORTED) == 1
        assert c.dropped(EG, Drop.BAD_IP_VERSION) == 1
    finally:
        tun.close()
        node.close()


@pytest.mark.parametrize("io_flags", [0, IO_VNET], ids=["plain", "offload"])
def test_drains_rate_limit_icmp_errors(io_flags):
    tun = FakeTun()
    node = udp_socket("127.0.0.1")
    try:
        fwd = make(cnative, io_flags=io_flags, icmp_rate=1, icmp_burst=4)
        pkt = inner_tcp(dst="10.250.0.9")
        tun.inject(*[vnet_plain(pkt) if io_flags else pkt] * 30)
        assert fwd.drain_tun(tun.fd, node, 64) == 30
        written = tun.delivered()
        c = fwd.counters()
        # a refill of 1 a second: at most one more while 30 packets go through
        assert 4 <= len(written) == c.icmp_sent <= 5
        assert c.icmp_suppressed == 30 - c.icmp_sent
        assert c.dropped(EG, Drop.NO_ROUTE) == 30
    finally:
        tun.close()
        node.close()


def test_python_drain_rate_limits_too(pyimpl):
    tun = FakeTun()
    node = udp_socket("127.0.0.1")
    try:
        fwd = make(pyimpl, icmp_rate=1, icmp_burst=4)
        tun.inject(*[inner_tcp(dst="10.250.0.9")] * 30)
        assert fwd.drain_tun(tun.fd, node, 64) == 30
        c = fwd.counters()
        assert 4 <= len(tun.delivered()) == c.icmp_sent <= 5
        assert c.icmp_suppressed == 30 - c.icmp_sent
    finally:
        tun.close()
        node.close()


# ---- the lease before the segment budget (UDP_GRO runs over loopback) ---------------------

SOL_UDP, UDP_SEGMENT, UDP_GRO, SO_RCVBUFFORCE = 17, 103, 104, 33


def test_unleased_gro_runs_do_not_starve_a_leased_peer():
    """20 runs of 128 segments from an address with no lease, then 10 datagrams from a peer,
    all in one recvmmsg: 2,560 unleased segments would fill the 2,048 the drain decides at
    once, and the peer's datagrams would be dropped as oversize."""
    tun = FakeTun()
    node = udp_socket("127.0.0.1")
    port = node.getsockname()[1]
    peer = udp_socket("127.0.0.2")
    flood = udp_socket("127.0.0.9")
    try:
        node.setsockopt(SOL_UDP, UDP_GRO, 1)
        try:
            node.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        except PermissionError:
            node.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        fwd = cnative.Forwarder(ForwarderConfig(mode=MODE_UDP, local_subnet=LOCAL_SUBNET,
                                                port=port, io_flags=IO_UDP_GRO,
                                                ttl_decrement=False))
        fwd.set_peer(*PEER2)
        seg = 100
        try:
            for _ in range(20):
                flood.sendmsg([b"\x45" * (seg * 128)],
                              [(SOL_UDP, UDP_SEGMENT, struct.pack("H", seg))], 0,
                              ("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                pytest.skip("UDP_SEGMENT takes 64 segments before Linux 6.18: 32 runs of 64 "
                            "fit the budget exactly, so there is nothing to starve")
            raise
        mine = [inner_udp(src="10.244.2.7", dst="10.244.1.5", data=bytes([i]) * 50)
                for i in range(10)]
        for pkt in mine:
            peer.sendto(pkt, ("127.0.0.1", port))
        n = fwd.drain_udp(node, tun.fd, 64)
        assert n == 30, "the runs did not arrive coalesced"
        assert tun.delivered() == mine
        c = fwd.counters()
        assert c.dropped(IN, Drop.OVERSIZE) == 0
        assert c.dropped(IN, Drop.UNKNOWN_PEER) == 20 * 128       # segments, as ever
        assert c.packets[1] == 10
    finally:
        for s in (node, peer, flood):
            s.close()
        tun.close()


def test_leased_runs_beyond_one_budget_are_all_delivered():
    """32 runs of 128 segments from a peer: twice the budget, all delivered, in order."""
    tun = FakeTun()
    node = udp_socket("127.0.0.1")
    port = node.getsockname()[1]
    peer = udp_socket("127.0.0.2")
    try:
        node.setsockopt(SOL_UDP, UDP_GRO, 1)
        try:
            node.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        except PermissionError:
            node.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        tun.dev.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 << 20)
        tun.kernel.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        fwd = cnative.Forwarder(ForwarderConfig(mode=MODE_UDP, local_subnet=LOCAL_SUBNET,
                                                port=port, io_flags=IO_UDP_GRO,
                                                ttl_decrement=False))
        fwd.set_peer(*PEER2)
        pkts = [inner_udp(src="10.244.2.7", dst="10.244.1.5", data=i.to_bytes(2, "big") * 36)
                for i in range(32 * 128)]
        assert len({len(p) for p in pkts}) == 1
        try:
            for r in range(32):
                peer.sendmsg([b"".join(pkts[r * 128:(r + 1) * 128])],
                             [(SOL_UDP, UDP_SEGMENT, struct.pack("H", len(pkts[0])))], 0,
                             ("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                pytest.skip("UDP_SEGMENT takes 64 segments before Linux 6.18")
            raise
        assert fwd.drain_udp(node, tun.fd, 64) == 32
        assert tun.delivered() == pkts
        c = fwd.counters()
        assert c.drops == {} and c.packets[1] == len(pkts)
    finally:
        node.close()
        peer.close()
        tun.close()
