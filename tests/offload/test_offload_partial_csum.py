"""Inner checksums as a kernel VXLAN sender on veth leaves them: partial (the folded
pseudo-header sum), complete, UDP 0 ("none") or corrupt, and its TSO super-packets that cross
veth whole. C and the Python reference must make the same bytes, virtio headers, drop reasons
and counters of them, with and without offloads. Checksums are judged by offload_packets'
own arithmetic, not by the code under test."""

from __future__ import annotations

import random
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane.drops import Direction, Drop
from dataplane.fastpath import cnative as C
from dataplane.fastpath import pyref as P
from dataplane.fastpath.types import (
    CSUM_BAD,
    CSUM_PARTIAL,
    CSUM_UNKNOWN,
    CSUM_VALID,
    GRO_TCP,
    GRO_UDP,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_UDP_L4,
    IO_TUN_USO,
    IO_UDP_GRO,
    IO_VNET,
    MODE_VXLAN,
    VNET_F_NEEDS_CSUM,
    VNET_HLEN,
    Action,
    ForwarderConfig,
    VnetHdr,
)
from offload_packets import (
    ACK, CWR, PSH, SYN, budget, inet_sum, ip_ok, ipv4, l4_ok, pseudo_sum, tcp, udp,
)

IN = Direction.INGRESS
PEER_POD, OUR_POD = bytes([10, 244, 2, 5]), bytes([10, 244, 1, 7])
OWN_MAC, PEER_MAC = bytes.fromhex("0efa00000001"), bytes.fromhex("0efa00000002")
BODY = random.Random(11).randbytes(70_000)
TS = b"\x01\x01\x08\x0a" + bytes(range(8))
MTU = 1450


def flow_tcp(payload: bytes = b"hello", csum: str = "partial", **kw) -> bytes:
    kw.setdefault("flags", ACK | PSH)
    return tcp(payload, src=PEER_POD, dst=OUR_POD, csum=csum, **kw)


def flow_udp(payload: bytes = b"dns?", csum: str = "partial", **kw) -> bytes:
    return udp(payload, src=PEER_POD, dst=OUR_POD, csum=csum, **kw)


def field(pkt: bytes) -> int:
    at = 20 + (16 if pkt[9] == 6 else 6)
    return (pkt[at] << 8) | pkt[at + 1]


def is_partial(pkt: bytes) -> bool:
    return field(pkt) == pseudo_sum(pkt[12:16], pkt[16:20], pkt[9], len(pkt) - 20)


def corrupt(pkt: bytes) -> bytes:
    """One bit flipped where it shows: a payload bit under a complete checksum, a bit of the
    field itself in a partial one (whose payload nothing can vouch for)."""
    b = bytearray(pkt)
    if is_partial(pkt):
        b[20 + (16 if pkt[9] == 6 else 6) + 1] ^= 0x01
    else:
        b[-1] ^= 0x01
    return bytes(b)


def completed(pkt: bytes) -> bytes:
    """pkt with its real checksum (what the kernel's skb_checksum_help would write)."""
    b = bytearray(pkt)
    proto, at = pkt[9], 20 + (16 if pkt[9] == 6 else 6)
    b[at:at + 2] = b"\0\0"
    l4 = bytes(b[20:])
    value = ~inet_sum(l4, pseudo_sum(pkt[12:16], pkt[16:20], proto, len(l4))) & 0xFFFF
    b[at:at + 2] = struct.pack("!H", value or (0xFFFF if proto == 17 else 0))
    return bytes(b)


def config(io_flags: int = 0, max_inner: int = MTU) -> ForwarderConfig:
    return ForwarderConfig(mode=MODE_VXLAN, local_subnet="10.244.1.0/24", port=8472,
                           mac=OWN_MAC, max_inner=max_inner, io_flags=io_flags)


def forwarder(impl, io_flags: int = 0, max_inner: int = MTU):
    fwd = impl.Forwarder(config(io_flags, max_inner))
    fwd.set_peer("10.244.2.0/24", "127.0.0.2", PEER_MAC)
    return fwd


def vxlan(inner: bytes) -> bytes:
    return P.vxlan_encap(inner, 1, OWN_MAC, PEER_MAC)


# ---- the states, case by case ---------------------------------------------------------------

@pytest.mark.parametrize("build, csum, want", [
    (flow_tcp, "partial", CSUM_PARTIAL), (flow_tcp, "full", CSUM_VALID),
    (flow_udp, "partial", CSUM_PARTIAL), (flow_udp, "full", CSUM_VALID),
    (flow_udp, "zero", CSUM_UNKNOWN),                 # UDP 0: "no checksum", not an error
])
def test_l4_csum_states(impl, build, csum, want):
    pkt = build(csum=csum)
    assert impl.l4_csum(pkt) == want
    assert impl.l4_csum(corrupt(pkt)) == (CSUM_UNKNOWN if csum == "zero" else CSUM_BAD)


def test_the_partial_form_is_what_the_kernel_leaves(impl):
    """Folded, not complemented: src + dst + protocol + L4 length (seen on a kernel flannel.1
    over veth: tcpdump reports e.g. 'cksum 0x191a (incorrect -> 0x39cc)')."""
    pkt = flow_tcp()
    assert field(pkt) == pseudo_sum(PEER_POD, OUR_POD, 6, len(pkt) - 20)
    b = bytearray(pkt)
    struct.pack_into("!H", b, 36, ~field(pkt) & 0xFFFF)    # the complemented form: corruption
    assert impl.l4_csum(bytes(b)) == CSUM_BAD


def test_a_partial_checksum_vouches_for_nothing(impl):
    """As for a kernel receiver: a partial packet's payload is taken on trust."""
    b = bytearray(flow_tcp(b"payload"))
    b[-1] ^= 0x01
    assert impl.l4_csum(bytes(b)) == CSUM_PARTIAL


def test_fragments_and_other_protocols_are_not_judged(impl):
    # A fragment's checksum covers bytes it does not hold; the kernel completes partial
    # checksums before it fragments, so a fragment is passed on as it is.
    first = corrupt(flow_tcp(csum="full", df=False, frag=0x2000))
    later = corrupt(flow_udp(csum="full", df=False, frag=0x0010))
    echo = ipv4(1, b"\x08\0\xff\xff" + bytes(8), src=PEER_POD, dst=OUR_POD)  # bad ICMP sum
    for pkt in (first, later, echo):
        assert impl.l4_csum(pkt) == CSUM_UNKNOWN


@pytest.mark.parametrize("build", [flow_tcp, flow_udp])
def test_complete_writes_the_real_checksum(impl, build):
    pkt = bytearray(build(BODY[:999]))
    impl.l4_csum_complete(pkt)
    assert bytes(pkt) == completed(build(BODY[:999])) and l4_ok(bytes(pkt))
    assert impl.l4_csum(bytes(pkt)) == CSUM_VALID


# ---- the ingress decision -----------------------------------------------------------------

@pytest.mark.parametrize("build", [flow_tcp, flow_udp])
def test_ingress_completes_partial_checksums_without_offload(impl, build):
    fwd = forwarder(impl)
    [v] = fwd.ingress([("127.0.0.2", 40000, vxlan(build()))])
    assert (v.action, v.drop, v.csum) == (Action.TUN, Drop.NONE, CSUM_VALID)
    assert v.data == completed(build()) and l4_ok(v.data)


@pytest.mark.parametrize("build", [flow_tcp, flow_udp])
def test_ingress_leaves_partial_checksums_to_a_vnet_tun(impl, build):
    fwd = forwarder(impl, IO_VNET)
    [v] = fwd.ingress([("127.0.0.2", 40000, vxlan(build()))])
    assert (v.action, v.drop, v.csum) == (Action.TUN, Drop.NONE, CSUM_PARTIAL)
    assert v.data == build()


@pytest.mark.parametrize("io_flags", [0, IO_VNET])
def test_ingress_drops_corrupt_checksums_and_passes_the_rest(impl, io_flags):
    fwd = forwarder(impl, io_flags)
    good = [flow_tcp(csum="full"), flow_udp(csum="full"), flow_udp(csum="zero"),
            corrupt(flow_udp(csum="zero"))]
    bad = [corrupt(flow_tcp()), corrupt(flow_tcp(csum="full")), corrupt(flow_udp())]
    vs = fwd.ingress([("127.0.0.2", 1, vxlan(p)) for p in good + bad])
    assert [v.drop for v in vs] == [Drop.NONE] * 4 + [Drop.BAD_L4_CHECKSUM] * 3
    assert [v.csum for v in vs[:4]] == [CSUM_VALID, CSUM_VALID, CSUM_UNKNOWN, CSUM_UNKNOWN]
    assert [v.data for v in vs[:4]] == good
    c = fwd.counters()
    assert c.dropped(IN, Drop.BAD_L4_CHECKSUM) == 3 and c.packets[IN] == 4


def test_cheaper_reasons_come_first(impl):
    """The checksum is the last check (the only one that reads the payload)."""
    fwd = forwarder(impl)
    elsewhere = tcp(b"x", src=PEER_POD, dst=bytes([10, 244, 9, 9]), csum="zero")
    [v] = fwd.ingress([("127.0.0.2", 1, vxlan(elsewhere))])
    assert v.drop == Drop.NOT_LOCAL


def super_packet(n: int = 40_000, **kw) -> bytes:
    """A kernel TSO super-packet as it crosses veth inside one VXLAN datagram."""
    kw.setdefault("options", TS)
    return flow_tcp(BODY[:n], seq=5000, ident=300, **kw)


def test_kernel_super_packets_are_accepted_only_when_partial_tcp(impl):
    fwd = forwarder(impl)
    sup = super_packet()
    big_full = super_packet(csum="full")
    big_udp = flow_udp(BODY[:5000])                  # USO: its datagram size is not on the wire
    vs = fwd.ingress([("127.0.0.2", 1, vxlan(p)) for p in (sup, big_full, big_udp)])
    assert [(v.drop, v.csum) for v in vs] == [(Drop.NONE, CSUM_PARTIAL),
                                              (Drop.OVERSIZE, 0), (Drop.OVERSIZE, 0)]
    assert vs[0].data == sup
    assert impl.super_gso(sup, MTU) == MTU - 52
    assert impl.super_gso(sup, 52 + 47) == 0               # below the kernel's least MSS
    hdr = VnetHdr.parse(impl.super_vnet(sup, MTU - 52))
    assert hdr == VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, 52, MTU - 52, 20, 16)
    cwr = super_packet(flags=ACK | CWR)
    assert VnetHdr.parse(impl.super_vnet(cwr, 100)).gso_type == GSO_TCPV4 | GSO_ECN


def test_udp_super_packets_need_the_kernels_datagram_size(impl):
    """A UDP_SEGMENT send: only the receiving kernel's UDP_GRO report says where datagrams
    end, so without it the packet stays OVERSIZE; each datagram must fit the TUN."""
    big = flow_udp(BODY[:10_000])
    assert impl.super_gso(big, MTU) == 0
    assert impl.super_gso(big, MTU, 1000) == 1000
    assert impl.super_gso(big, MTU, MTU - 27) == 0               # a datagram past the MTU
    assert impl.super_gso(flow_udp(BODY[:10_000], csum="full"), MTU, 1000) == 0
    assert impl.super_gso(flow_udp(BODY[:900]), 100, 1000) == 0  # one datagram, not several
    assert VnetHdr.parse(impl.super_vnet(big, 1000)) == VnetHdr(
        VNET_F_NEEDS_CSUM, GSO_UDP_L4, 28, 1000, 20, 6)


# ---- coalescing ---------------------------------------------------------------------------

def test_a_partial_packet_alone_goes_up_as_needs_csum(impl):
    syn = flow_tcp(b"", flags=SYN)
    dgram = flow_udp()
    frames = impl.gro_coalesce([syn, dgram], GRO_TCP | GRO_UDP, csum=[CSUM_PARTIAL] * 2)
    heads = [VnetHdr.parse(f.data) for f in frames]
    assert heads == [VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 38, 0, 20, 16),
                     VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 28, 0, 20, 6)]
    assert [f.data[VNET_HLEN:] for f in frames] == [syn, dgram]
    # Without the state the coalescer sums it itself, as before: no header, left alone.
    assert [f.data[:VNET_HLEN] for f in impl.gro_coalesce([syn])] == [bytes(VNET_HLEN)]


def segments(csum: str, n: int = 12, mss: int = 1398) -> list[bytes]:
    return [flow_tcp(BODY[i * mss:(i + 1) * mss], csum=csum, seq=1000 + i * mss, ident=i,
                     flags=ACK, options=TS) for i in range(n)]


def test_partial_segments_of_a_flow_still_merge(impl):
    partial, full = segments("partial"), segments("full")
    merged = impl.gro_coalesce(partial, GRO_TCP, csum=[CSUM_PARTIAL] * 12)
    assert [f.members for f in merged] == [tuple(range(12))]
    # The merged frame is byte for byte what the complete segments make.
    assert merged == impl.gro_coalesce(full, GRO_TCP)
    # Unjudged partial segments are refused, as the coalescer cannot verify them.
    assert len(impl.gro_coalesce(partial, GRO_TCP)) == 12


def test_a_super_packet_goes_alone_as_gso_and_closes_its_flow(impl):
    segs = segments("partial", n=3)
    sup = super_packet()
    states = [CSUM_PARTIAL] * 4
    frames = impl.gro_coalesce(segs[:2] + [sup] + segs[2:], GRO_TCP, csum=states,
                               gso=[0, 0, MTU - 52, 0])
    assert [f.members for f in frames] == [(0, 1), (2,), (3,)]
    assert frames[1].data == impl.super_vnet(sup, MTU - 52) + sup


# ---- C and Python agree on random input ---------------------------------------------------

@st.composite
def l4_packets(draw):
    proto = draw(st.sampled_from([6, 17, 6, 17, 1]))
    csum = draw(st.sampled_from(["partial", "full", "zero", "partial", "full"]))
    n = draw(st.integers(0, 60) | st.sampled_from([1400, 3000, 20_000]))
    payload = BODY[:n]
    kw = dict(ident=draw(st.integers(0, 0xFFFF)), df=draw(st.booleans()),
              frag=draw(st.sampled_from([0, 0, 0, 0x2000, 0x0004])))
    if proto == 6:
        pkt = flow_tcp(payload, csum=csum, options=draw(st.sampled_from([b"", TS])),
                       flags=draw(st.sampled_from([ACK, ACK | PSH, SYN, ACK | CWR])), **kw)
    elif proto == 17:
        pkt = flow_udp(payload, csum=csum, **kw)
    else:
        pkt = bytes(P.outer_udp4(payload, "10.244.2.5", "10.244.1.7", 1, 2))
    if draw(st.integers(0, 3)) == 0:                        # a byte changed somewhere in L4
        b = bytearray(pkt)
        b[draw(st.integers(20, len(b) - 1))] = draw(st.integers(0, 255))
        pkt = bytes(b)
    return pkt


@budget(150)
@given(pkt=l4_packets(), max_inner=st.sampled_from([MTU, 1500, 65535, 100, 0]),
       udp_gso=st.sampled_from([0, 0, 1000, 1, 1422]) | st.integers(0, 0xFFFF))
def test_primitives_agree(pkt, max_inner, udp_gso):
    assert C.l4_csum(pkt) == P.l4_csum(pkt)
    a, b = bytearray(pkt), bytearray(pkt)
    C.l4_csum_complete(a)
    P.l4_csum_complete(b)
    assert a == b
    if P.l4_csum(pkt) == CSUM_PARTIAL:
        assert l4_ok(bytes(a)) or pkt[9] == 17 and field(bytes(a)) == 0
    gso = C.super_gso(pkt, max_inner, udp_gso)
    assert gso == P.super_gso(pkt, max_inner, udp_gso)
    assert C.super_vnet(pkt, gso) == P.super_vnet(pkt, gso)


@budget(100)
@given(pkts=st.lists(l4_packets(), max_size=10),
       io_flags=st.sampled_from([0, IO_VNET, IO_VNET | IO_UDP_GRO, IO_VNET | IO_TUN_USO]),
       max_inner=st.sampled_from([MTU, 65535, 1500]))
def test_ingress_and_coalescing_agree(pkts, io_flags, max_inner):
    fwds = [forwarder(C, io_flags, max_inner), forwarder(P, io_flags, max_inner)]
    batch = [("127.0.0.2", 1, vxlan(p)) for p in pkts]
    vc, vp = (f.ingress(batch) for f in fwds)
    assert vc == vp
    assert fwds[0].counters() == fwds[1].counters()
    out = [v for v in vc if v.action == Action.TUN]
    states = [v.csum for v in out]
    sizes = [P.super_gso(v.data, max_inner) if len(v.data) > max_inner else 0 for v in out]
    data = [v.data for v in out]
    frames = C.gro_coalesce(data, GRO_TCP | GRO_UDP, csum=states, gso=sizes)
    assert frames == P.gro_coalesce(data, GRO_TCP | GRO_UDP, csum=states, gso=sizes)


# ---- the drains: real descriptors, a fake TUN ---------------------------------------------

@pytest.fixture
def rig():
    """Our node's socket on 127.0.0.1, the kernel peer on 127.0.0.2, a fake TUN (a datagram
    socketpair: one packet per read and write, as with IFF_NO_PI)."""
    dev, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (dev, kernel):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        s.setblocking(False)
    node = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    node.bind(("127.0.0.1", 0))
    node.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    node.setblocking(False)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.2", 0))
    yield dev, kernel, node, peer
    for s in (dev, kernel, node, peer):
        s.close()


def delivered(kernel: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(kernel.recv(70_000))
        except BlockingIOError:
            return out


def drain(impl, io_flags: int, rig, inners: list[bytes]):
    dev, kernel, node, peer = rig
    fwd = forwarder(impl, io_flags)
    for p in inners:
        peer.sendto(vxlan(p), node.getsockname())
    assert fwd.drain_udp(node, dev.fileno(), 64) == len(inners)
    return delivered(kernel), fwd.counters()


def test_drains_without_offload_complete_and_cut_identically(rig):
    """The daemon with --offload off (C) and with --fastpath python: the same bytes on the
    TUN, every checksum complete, the super-packet cut to the MTU, the corrupt one counted."""
    sup = super_packet()
    inners = [flow_tcp(b"", flags=SYN), flow_udp(), sup, corrupt(flow_tcp()), flow_udp(csum="zero")]
    got = {}
    for impl in (C, P):
        got[impl.NAME], c = drain(impl, 0, rig, inners)
        assert c.dropped(IN, Drop.BAD_L4_CHECKSUM) == 1 and c.packets[IN] == 4
        assert c.syscalls[IN] > 0
    assert got["c"] == got["python"]
    out = got["c"]
    assert out[0] == completed(inners[0]) and out[1] == completed(inners[1])
    assert out[-1] == inners[-1]
    cut = out[2:-1]
    assert len(cut) == -(-(len(sup) - 52) // (MTU - 52)) and all(len(s) <= MTU for s in cut)
    assert all(ip_ok(s) and l4_ok(s) for s in cut)
    assert b"".join(s[52:] for s in cut) == sup[52:]


@pytest.mark.parametrize("io_flags", [IO_VNET, IO_VNET | IO_UDP_GRO])
def test_drain_with_offload_hands_partial_checksums_on(rig, io_flags):
    sup = super_packet()
    syn, dgram = flow_tcp(b"", flags=SYN), flow_udp()
    frames, c = drain(C, io_flags, rig, [syn, dgram, corrupt(dgram), sup])
    assert c.dropped(IN, Drop.BAD_L4_CHECKSUM) == 1 and c.packets[IN] == 3
    assert [VnetHdr.parse(f) for f in frames] == [
        VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 38, 0, 20, 16),
        VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 28, 0, 20, 6),
        VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, 52, MTU - 52, 20, 16)]
    assert [f[VNET_HLEN:] for f in frames] == [syn, dgram, sup]
    assert c.super_packets[IN] == 1          # the kernel peer's GSO frame, passed on whole


UDP_SEGMENT, UDP_GRO = 103, 104


@pytest.mark.parametrize("io_flags", [IO_VNET | IO_UDP_GRO | IO_TUN_USO, IO_UDP_GRO,
                                      IO_VNET | IO_UDP_GRO])
def test_a_kernel_peers_udp_segment_send_is_not_taken_for_a_gro_run(rig, io_flags):
    """A kernel peer's UDP_SEGMENT send crosses veth as one tunnelled skb, and UDP_GRO reports
    the inner datagram size. Loopback plays it: the same bytes sent with UDP_SEGMENT arrive
    whole at a UDP_GRO socket with that size. Handed on as GSO_UDP_L4 to a TUN with USO, cut
    for a TUN without virtio headers, refused (OVERSIZE) by a vnet TUN without USO."""
    dev, kernel, node, peer = rig
    node.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    sup = flow_udp(BODY[:10_000], ident=40)
    peer.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 1000)
    peer.sendto(vxlan(sup), node.getsockname())
    fwd = forwarder(C, io_flags)
    assert fwd.drain_udp(node, dev.fileno(), 64) == 1
    out, c = delivered(kernel), fwd.counters()
    if io_flags & IO_TUN_USO:
        assert out == [VnetHdr(VNET_F_NEEDS_CSUM, GSO_UDP_L4, 28, 1000, 20, 6).pack() + sup]
        assert c.packets[IN] == 1 and c.super_packets[IN] == 1
    elif io_flags & IO_VNET:
        assert out == [] and c.dropped(IN, Drop.OVERSIZE) == 1
    else:
        assert [d[28:] for d in out] == [BODY[i:i + 1000] for i in range(0, 10_000, 1000)]
        assert all(ip_ok(d) and l4_ok(d) and len(d) == 1028 for d in out)
        assert c.packets[IN] == 1 and c.drops == {}
