"""The Forwarder's decisions, scenario by scenario, in both modes and both implementations."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, IPerror

from dataplane.drops import Direction, Drop
from dataplane.fastpath.types import MODE_UDP, MODE_VXLAN, Action, ForwarderConfig

from .pkts import LOCAL_SUBNET, OWN_MAC, PEER2, PEER3, TUN_ADDR, inner_tcp, inner_udp, recomputed

EG, IN = Direction.EGRESS, Direction.INGRESS
PORT = 8472
MODES = {"udp": MODE_UDP, "vxlan": MODE_VXLAN}


@pytest.fixture(params=sorted(MODES))
def mode(request):
    return MODES[request.param]


def make(impl, mode, **kw):
    fwd = impl.Forwarder(ForwarderConfig(mode=mode, local_subnet=LOCAL_SUBNET, port=PORT, vni=1,
                                         mac=OWN_MAC, **kw))
    for subnet, ip, mac in (PEER2, PEER3):
        fwd.set_peer(subnet, ip, mac)
    return fwd


def from_peer(impl, mode, inner: bytes, peer=PEER2, vni=1):
    """What arrives from a peer: its public IP, its port, the UDP payload."""
    payload = impl.vxlan_encap(inner, vni, OWN_MAC, peer[2]) if mode == MODE_VXLAN else inner
    return (peer[1], PORT, payload)


def ttl_less(pkt: bytes) -> bytes:
    """pkt after a correct TTL decrement (scapy recomputes the checksum)."""
    p = IP(pkt)
    p.ttl -= 1
    p.chksum = None
    return bytes(p)


# ---- egress -------------------------------------------------------------------------------

def test_egress_to_a_known_peer(impl, mode):
    fwd = make(impl, mode)
    pkt = inner_tcp(dst="10.244.3.9")
    [v] = fwd.egress([pkt])
    assert (v.action, v.drop, v.addr, v.port) == (Action.SEND, Drop.NONE, "127.0.0.3", PORT)
    if mode == MODE_UDP:
        assert v.data == ttl_less(pkt)                 # flannel decrements TTL
    else:
        assert v.data == impl.vxlan_encap(pkt, 1, PEER3[2], OWN_MAC)   # Linux does not
    c = fwd.counters()
    assert (c.packets, c.bytes, c.batches, c.drops) == ([1, 0], [len(pkt), 0], [1, 0], {})


def test_egress_trims_what_follows_the_packet(impl, mode):
    fwd = make(impl, mode, ttl_decrement=False)
    pkt = inner_udp()
    [v] = fwd.egress([pkt + b"junk"])
    assert v.data.endswith(pkt) and len(v.data) == len(pkt) + (22 if mode == MODE_VXLAN else 0)


def test_egress_to_nowhere_answers_icmp(impl, mode):
    fwd = make(impl, mode)
    pkt = inner_tcp(dst="10.250.0.9")
    [v] = fwd.egress([pkt])
    assert (v.action, v.drop, v.addr, v.port) == (Action.TUN, Drop.NO_ROUTE, None, 0)
    p = IP(v.data)
    assert v.data == recomputed(p)
    assert (p.src, p.dst, p[ICMP].type, p[ICMP].code) == (TUN_ADDR, "10.244.1.5", 3, 0)
    assert p[IPerror].dst == "10.250.0.9" and p[IPerror].ttl == 64   # quoted as it came
    c = fwd.counters()
    assert c.icmp_sent == 1 and c.dropped(EG, Drop.NO_ROUTE) == 1 and c.packets == [0, 0]


def test_egress_to_nowhere_stays_silent_for_errors(impl, mode):
    fwd = make(impl, mode)
    err = bytes(IP(src="10.244.1.5", dst="10.250.0.9") / ICMP(type=3) / inner_tcp()[:28])
    [v] = fwd.egress([err])
    assert (v.action, v.drop, v.data) == (Action.DROP, Drop.NO_ROUTE, b"")
    assert fwd.counters().icmp_sent == 0


def test_egress_ttl_one(impl, mode):
    fwd = make(impl, mode)
    [v] = fwd.egress([inner_tcp(ttl=1)])
    if mode == MODE_UDP:
        assert (v.action, v.drop) == (Action.DROP, Drop.TTL_EXCEEDED)
        assert fwd.counters().dropped(EG, Drop.TTL_EXCEEDED) == 1
    else:                                              # a kernel VTEP is not a router hop
        assert (v.action, v.drop) == (Action.SEND, Drop.NONE)


def test_ttl_decrement_can_be_forced_either_way(impl):
    on = make(impl, MODE_VXLAN, ttl_decrement=True)
    assert on.egress([inner_tcp(ttl=1)])[0].drop == Drop.TTL_EXCEEDED
    off = make(impl, MODE_UDP, ttl_decrement=False)
    assert off.egress([inner_tcp(ttl=1)])[0].data == inner_tcp(ttl=1)


def test_egress_oversize(impl, mode):
    fwd = make(impl, mode, max_inner=100)
    fits, big = inner_tcp(data=b"x" * 60), inner_tcp(data=b"x" * 61)
    assert len(fits) == 100
    vs = fwd.egress([fits, big, big + b"pad"])
    assert [v.drop for v in vs] == [Drop.NONE, Drop.OVERSIZE, Drop.OVERSIZE]
    assert fwd.counters().dropped(EG, Drop.OVERSIZE) == 2
    # Trailing bytes do not count: the limit is on the IP packet.
    assert fwd.egress([fits + b"pad"])[0].drop == Drop.NONE


def test_ingress_oversize(impl, mode):
    fwd = make(impl, mode, max_inner=100)
    fits = inner_tcp(src="10.244.2.7", dst="10.244.1.5", data=b"x" * 60)
    big = inner_tcp(src="10.244.2.7", dst="10.244.1.5", data=b"x" * 61)
    vs = fwd.ingress([from_peer(impl, mode, fits), from_peer(impl, mode, big)])
    assert [v.drop for v in vs] == [Drop.NONE, Drop.OVERSIZE]


def test_egress_invalid_packets(impl, mode):
    fwd = make(impl, mode)
    vs = fwd.egress([b"", b"\x60" + bytes(39), inner_tcp()[:30], b"\x50" + bytes(39)])
    assert [(v.action, v.drop) for v in vs] == [
        (Action.DROP, Drop.TRUNCATED), (Action.DROP, Drop.IPV6_UNSUPPORTED),
        (Action.DROP, Drop.TRUNCATED), (Action.DROP, Drop.BAD_IP_VERSION)]
    assert all(v.data == b"" and v.addr is None for v in vs)


def test_peers_of_several_lengths(impl, mode):
    fwd = make(impl, mode)
    fwd.set_peer("10.244.4.128/25", "127.0.0.4", bytes.fromhex("020000000004"))
    fwd.set_peer("10.245.0.0/16", "127.0.0.5", bytes.fromhex("020000000005"))
    vs = fwd.egress([inner_tcp(dst="10.244.3.1"), inner_tcp(dst="10.244.4.200"),
                     inner_tcp(dst="10.245.9.9"), inner_tcp(dst="10.244.4.1")])
    assert [v.addr for v in vs] == ["127.0.0.3", "127.0.0.4", "127.0.0.5", None]
    if mode == MODE_VXLAN:
        assert vs[1].data[8:14] == bytes.fromhex("020000000004")   # that peer's VtepMAC


# ---- ingress ------------------------------------------------------------------------------

def test_ingress_from_a_known_peer(impl, mode):
    fwd = make(impl, mode)
    pkt = inner_tcp(src="10.244.2.7", dst="10.244.1.5")
    [v] = fwd.ingress([from_peer(impl, mode, pkt)])
    assert (v.action, v.drop, v.addr, v.port) == (Action.TUN, Drop.NONE, None, 0)
    assert v.data == (ttl_less(pkt) if mode == MODE_UDP else pkt)
    c = fwd.counters()
    assert (c.packets, c.bytes, c.batches, c.drops) == ([0, 1], [0, len(pkt)], [0, 1], {})


def test_ingress_trims_padding(impl, mode):
    fwd = make(impl, mode, ttl_decrement=False)
    pkt = inner_udp(src="10.244.2.7", dst="10.244.1.5")
    src, port, payload = from_peer(impl, mode, pkt)
    [v] = fwd.ingress([(src, port, payload + b"\0" * 12)])
    assert v.data == pkt


@pytest.mark.parametrize("src, inner_src, inner_dst, why", [
    ("127.0.0.9", "10.244.2.7", "10.244.1.5", Drop.UNKNOWN_PEER),      # no lease behind it
    ("127.0.0.2", "10.244.3.7", "10.244.1.5", Drop.SPOOFED_SOURCE),    # peer 3's pod via peer 2
    ("127.0.0.2", "10.250.0.1", "10.244.1.5", Drop.SPOOFED_SOURCE),    # nobody's pod
    ("127.0.0.2", "10.244.2.7", "10.244.3.5", Drop.NOT_LOCAL),         # not for us
    ("127.0.0.2", "10.244.2.7", "10.244.2.8", Drop.NOT_LOCAL),         # hairpin
], ids=["unknown-peer", "other-peers-pod", "nobodys-pod", "not-ours", "hairpin"])
def test_ingress_refusals(impl, mode, src, inner_src, inner_dst, why):
    fwd = make(impl, mode)
    _, port, payload = from_peer(impl, mode, inner_tcp(src=inner_src, dst=inner_dst))
    [v] = fwd.ingress([(src, port, payload)])
    assert (v.action, v.drop, v.data) == (Action.DROP, why, b"")
    assert fwd.counters().dropped(IN, why) == 1 and fwd.counters().packets == [0, 0]


def test_ingress_ttl_one(impl, mode):
    fwd = make(impl, mode)
    [v] = fwd.ingress([from_peer(impl, mode, inner_tcp(src="10.244.2.7", dst="10.244.1.5",
                                                       ttl=1))])
    assert v.drop == (Drop.TTL_EXCEEDED if mode == MODE_UDP else Drop.NONE)


def test_ingress_vxlan_refusals(impl):
    fwd = make(impl, MODE_VXLAN)
    pkt = inner_tcp(src="10.244.2.7", dst="10.244.1.5")
    wrong_vni = from_peer(impl, MODE_VXLAN, pkt, vni=2)
    wrong_mac = ("127.0.0.2", PORT, impl.vxlan_encap(pkt, 1, PEER3[2], PEER2[2]))
    looped = ("127.0.0.2", PORT, impl.vxlan_encap(pkt, 1, OWN_MAC, OWN_MAC))
    raw_ip = ("127.0.0.2", PORT, pkt)                  # udp format sent to a vxlan node
    vs = fwd.ingress([wrong_vni, wrong_mac, looped, raw_ip])
    assert [v.drop for v in vs] == [Drop.WRONG_VNI, Drop.WRONG_INNER_MAC, Drop.LOOPED_INNER_MAC,
                                    Drop.BAD_VXLAN_FLAGS]


def test_vxlan_frame_sent_to_a_udp_node_is_not_ip(impl):
    fwd = make(impl, MODE_UDP)
    pkt = inner_tcp(src="10.244.2.7", dst="10.244.1.5")
    [v] = fwd.ingress([("127.0.0.2", PORT, impl.vxlan_encap(pkt, 1, OWN_MAC, PEER2[2]))])
    assert v.drop == Drop.BAD_IP_VERSION                # 0x08: version 0


# ---- peers come and go --------------------------------------------------------------------

def test_peer_replaced(impl, mode):
    fwd = make(impl, mode)
    new_mac = bytes.fromhex("020000000022")
    fwd.set_peer("10.244.2.0/24", "127.0.0.22", new_mac)      # the node got a new address
    assert fwd.peer_count == 2
    [v] = fwd.egress([inner_tcp(dst="10.244.2.7")])
    assert v.addr == "127.0.0.22"
    if mode == MODE_VXLAN:
        assert v.data[8:14] == new_mac
    pkt = inner_tcp(src="10.244.2.7", dst="10.244.1.5")
    old = ("127.0.0.2",) + from_peer(impl, mode, pkt)[1:]
    new = ("127.0.0.22",) + from_peer(impl, mode, pkt)[1:]
    assert [v.drop for v in fwd.ingress([old, new])] == [Drop.UNKNOWN_PEER, Drop.NONE]


def test_peer_removed(impl, mode):
    fwd = make(impl, mode)
    fwd.del_peer("10.244.2.0/24")
    assert fwd.peer_count == 1
    [v] = fwd.egress([inner_tcp(dst="10.244.2.7")])
    assert (v.action, v.drop) == (Action.TUN, Drop.NO_ROUTE)
    [v] = fwd.ingress([from_peer(impl, mode, inner_tcp(src="10.244.2.7", dst="10.244.1.5"))])
    assert v.drop == Drop.UNKNOWN_PEER
    with pytest.raises(KeyError):
        fwd.del_peer("10.244.2.0/24")
    # Peer 3 is untouched.
    assert fwd.egress([inner_tcp(dst="10.244.3.7")])[0].addr == "127.0.0.3"


def test_two_subnets_behind_one_address(impl, mode):
    # The public IP stays known until the last subnet behind it is gone.
    fwd = make(impl, mode)
    fwd.set_peer("10.244.4.0/24", "127.0.0.2", PEER2[2])
    fwd.del_peer("10.244.2.0/24")
    ok = from_peer(impl, mode, inner_tcp(src="10.244.4.7", dst="10.244.1.5"))
    spoof = from_peer(impl, mode, inner_tcp(src="10.244.2.7", dst="10.244.1.5"))
    assert [v.drop for v in fwd.ingress([ok, spoof])] == [Drop.NONE, Drop.SPOOFED_SOURCE]
    fwd.del_peer("10.244.4.0/24")
    assert fwd.ingress([ok])[0].drop == Drop.UNKNOWN_PEER


def test_slot_reused_after_delete(impl, mode):
    fwd = make(impl, mode)
    for i in range(40):                                  # past the initial peer capacity
        fwd.set_peer(f"10.245.{i}.0/24", f"127.0.1.{i}")
    for i in range(0, 40, 2):
        fwd.del_peer(f"10.245.{i}.0/24")
    fwd.set_peer("10.246.0.0/24", "127.0.2.1")
    assert fwd.peer_count == 2 + 20 + 1
    vs = fwd.egress([inner_tcp(dst=f"10.245.{i}.1") for i in range(40)] +
                    [inner_tcp(dst="10.246.0.1")])
    assert [v.addr for v in vs[:40:2]] == [None] * 20
    assert [v.addr for v in vs[1:40:2]] == [f"127.0.1.{i}" for i in range(1, 40, 2)]
    assert vs[40].addr == "127.0.2.1"


# ---- counters -----------------------------------------------------------------------------

def test_counters_add_up(impl, mode):
    fwd = make(impl, mode)
    eg = [inner_tcp(dst="10.244.2.7"), inner_tcp(dst="10.244.3.7"), inner_tcp(dst="10.250.0.1"),
          inner_tcp()[:10], inner_tcp(dst="10.244.2.7", ttl=1)]
    vs = fwd.egress(eg)
    fwd.egress([])                                       # an empty batch is not a batch
    pkt = inner_tcp(src="10.244.2.7", dst="10.244.1.5")
    ing = [from_peer(impl, mode, pkt), ("127.0.0.99", PORT, b"x"),
           from_peer(impl, mode, inner_tcp(src="10.244.3.7", dst="10.244.1.5"), peer=PEER3)]
    fwd.ingress(ing)
    fwd.ingress(ing[:1])
    c = fwd.counters()
    sent = [v for v in vs if v.action == Action.SEND]
    udp = mode == MODE_UDP
    assert c.packets == [len(sent), 3]
    assert c.bytes == [sum(len(p) for p, v in zip(eg, vs) if v.action == Action.SEND),
                       3 * len(pkt)]                  # inner bytes both ways
    assert c.batches == [1, 2]
    assert c.icmp_sent == 1
    want = {(EG, Drop.NO_ROUTE): 1, (EG, Drop.TRUNCATED): 1, (IN, Drop.UNKNOWN_PEER): 1}
    if udp:
        want[(EG, Drop.TTL_EXCEEDED)] = 1
    assert c.drops == want
    # Every packet is either forwarded or dropped for one reason.
    assert c.packets[0] + sum(n for (d, _), n in c.drops.items() if d == EG) == len(eg)
    assert c.packets[1] + sum(n for (d, _), n in c.drops.items() if d == IN) == 4
