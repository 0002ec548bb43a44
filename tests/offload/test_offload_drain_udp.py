"""dp_drain_udp with offloads (csrc/ingress.c): UDP_GRO runs in, coalesced TUN
frames with their virtio_net_hdr out, over loopback peers and a fake TUN (no root).

A peer's UDP_SEGMENT send reaches the node's UDP_GRO socket as one run, with its gso_size in a
cmsg, as a run coalesced off a NIC does. Every test holds the C drain to the reference model
(drain_rig.expect_ingress: pyref's Forwarder.ingress and gro_coalesce, batch by batch) byte for
byte, and checks the frames on their own terms where it can (virtio header fields, the byte
stream). Inner L4 checksums are always valid here: what a bad one becomes is the csum work
package's to define."""

from __future__ import annotations

import random
import socket

import pytest

from dataplane.drops import Drop
from dataplane.fastpath import pyref as P
from dataplane.fastpath.types import (
    Action,
    GSO_TCPV4,
    GSO_UDP_L4,
    IO_TUN_USO,
    IO_UDP_GRO,
    IO_UDP_GSO,
    IO_VNET,
    MODE_UDP,
    MODE_VXLAN,
    VNET_F_NEEDS_CSUM,
    VNET_HLEN,
    VnetHdr,
)
from drain_rig import (
    ALL_OFFLOADS, IN, IN_SEGS, OWN_MAC, PEERS, RECVS, ZERO_VNET, assert_counters, expect_ingress,
    forwarders, open_net, tunnelled_whole,
)
from offload_packets import ACK, PSH, ip_ok, l4_ok, tcp, tcp_fields, udp

BODY = random.Random(13).randbytes(200_000)
POD2, POD3, LOCAL = bytes([10, 244, 2, 7]), bytes([10, 244, 3, 7]), bytes([10, 244, 1, 5])
TS = b"\x01\x01\x08\x0a" + bytes(range(8))


@pytest.fixture
def net():
    n = open_net()
    yield n
    n.close()


@pytest.fixture(params=["udp", "vxlan"])
def mode(request):
    return {"udp": MODE_UDP, "vxlan": MODE_VXLAN}[request.param]


def encap(mode, inner: bytes, peer: str = "127.0.0.2") -> bytes:
    return P.vxlan_encap(inner, 1, OWN_MAC, PEERS[peer][1]) if mode == MODE_VXLAN else inner


def stream(n: int, mss: int = 1448, *, last: int | None = None, src=POD2, sport=40000,
           base=0, **kw) -> list[bytes]:
    """n consecutive TCP segments of one flow (the last `last` bytes long if given)."""
    kw.setdefault("options", TS)
    out = []
    for i in range(n):
        size = last if last is not None and i == n - 1 else mss
        off = base + i * mss
        out.append(tcp(BODY[off:off + size], seq=1000 + off, ident=100 + i + base, src=src,
                       dst=LOCAL, sport=sport, **kw))
    return out


def send(net, mode, runs: list[tuple[str, list[bytes]]]) -> list[tuple[str, list[bytes]]]:
    """Send each run of inner packets from its peer as one UDP_SEGMENT message; returns the
    runs as the node receives them (source IP, encapsulated segments)."""
    wire = []
    for src, inners in runs:
        segs = [encap(mode, p, src if src in PEERS else "127.0.0.2") for p in inners]
        sock = net.peers.get(src) or net.stranger
        net.send_run(sock, segs)
        wire.append((src, segs))
    return wire


def drain(net, mode, runs, io_flags=ALL_OFFLOADS, budget=1000, raw=False, **cfg):
    """Send the runs, drain once, hold the result to the model; returns (written, fwd).
    raw: runs are already encapsulated (hostile payloads); cfg: more ForwarderConfig."""
    fwd, ref = forwarders(mode, net.port, io_flags, **cfg)
    if raw:
        for src, segs in runs:
            net.send_run(net.peers.get(src) or net.stranger, segs)
        wire = runs
    else:
        wire = send(net, mode, runs)
    want = expect_ingress(ref, wire, budget)
    assert fwd.drain_udp(net.node, net.tun.fd, budget) == min(len(runs), budget)
    written = net.tun.written()
    assert written == want.tun
    assert_counters(fwd, want, IN)
    return written, fwd


def payloads(frames: list[bytes]) -> bytes:
    """The TCP byte stream the frames carry (each frame one IP packet after its header)."""
    out = b""
    for fr in frames:
        pkt = fr[VNET_HLEN:]
        out += tcp_fields(pkt)["payload"]
    return out


# ---- GRO runs in, super-packets out ----------------------------------------------------

@pytest.mark.parametrize("count, mss", [(1, 1448), (2, 1448), (17, 1448), (43, 1448),
                                        (64, 900), (128, 400)])
def test_a_gro_run_becomes_one_super_packet(net, mode, count, mss):
    run = stream(count, mss)
    written, fwd = drain(net, mode, [("127.0.0.2", run)])
    assert len(written) == 1
    hdr, pkt = VnetHdr.parse(written[0]), written[0][VNET_HLEN:]
    if count == 1:
        assert hdr == VnetHdr() and pkt[20:] == run[0][20:]
    else:
        assert hdr == VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, 52, mss, 20, 16)
        assert fwd.counters().super_packets[IN] == 1
    assert ip_ok(pkt) and len(pkt) == (pkt[2] << 8 | pkt[3]) == 52 + count * mss
    assert payloads(written) == BODY[:count * mss]


@pytest.mark.parametrize("last", [1, 700, 1447])
def test_a_short_last_segment_joins_and_ends_the_frame(net, mode, last):
    run = stream(10, last=last)
    written, _ = drain(net, mode, [("127.0.0.2", run)])
    assert len(written) == 1 and VnetHdr.parse(written[0]).gso_size == 1448
    assert payloads(written) == BODY[:9 * 1448 + last]


def test_a_long_last_segment_does_not_join(net, mode):
    """A tail longer than gso_size cannot be the kernel's; sent as its own datagram it stays
    out of the frame and goes alone, in order."""
    run = stream(5)
    longer = tcp(BODY[5 * 1448:5 * 1448 + 2000], seq=1000 + 5 * 1448, ident=105, src=POD2,
                 dst=LOCAL, options=TS)
    written, _ = drain(net, mode, [("127.0.0.2", run), ("127.0.0.2", [longer])])
    assert [VnetHdr.parse(w).gso_type for w in written] == [GSO_TCPV4, 0]
    assert payloads(written) == BODY[:5 * 1448 + 2000]


def test_the_ip_length_limit_splits_a_run(net, mode):
    """A run that merges past 65535 bytes of IP packet is written as two frames."""
    runs = [("127.0.0.2", stream(40)), ("127.0.0.2", stream(10, base=40 * 1448))]
    written, _ = drain(net, mode, runs)
    assert [VnetHdr.parse(w).gso_type for w in written] == [GSO_TCPV4, GSO_TCPV4]
    assert [len(w) - VNET_HLEN for w in written] == [52 + 45 * 1448, 52 + 5 * 1448]
    assert payloads(written) == BODY[:50 * 1448]


def test_psh_in_a_run_ends_the_frame(net, mode):
    run = stream(6)
    run[2] = tcp(BODY[2 * 1448:3 * 1448], seq=1000 + 2 * 1448, ident=102, src=POD2, dst=LOCAL,
                 options=TS, flags=ACK | PSH)
    written, _ = drain(net, mode, [("127.0.0.2", run)])
    assert [len(w) - VNET_HLEN for w in written] == [52 + 3 * 1448, 52 + 3 * 1448]
    assert tcp_fields(written[0][VNET_HLEN:])["flags"] == ACK | PSH


def test_interleaved_flows_and_peers(net, mode):
    a = stream(30)
    b = stream(30, sport=40001)
    c = stream(20, src=POD3)
    runs = [("127.0.0.2", a[:10]), ("127.0.0.2", b[:15]), ("127.0.0.3", c[:10]),
            ("127.0.0.2", a[10:30]), ("127.0.0.3", c[10:]), ("127.0.0.2", b[15:])]
    written, fwd = drain(net, mode, runs)
    assert fwd.counters().packets[IN] == 80
    assert fwd.counters().super_packets[IN] == len(written) < 10


def test_more_runs_than_one_recvmmsg(net, mode):
    runs = [("127.0.0.2" if i % 2 else "127.0.0.3",
             stream(3, src=POD2 if i % 2 else POD3, sport=30000 + i)) for i in range(RECVS * 2 + 5)]
    written, fwd = drain(net, mode, runs)
    assert fwd.counters().packets[IN] == 3 * len(runs)


def test_budget_counts_datagrams(net):
    runs = [("127.0.0.2", stream(4, sport=30000 + i)) for i in range(7)]
    fwd, _ = forwarders(MODE_UDP, net.port, ALL_OFFLOADS)
    send(net, MODE_UDP, runs)
    assert [fwd.drain_udp(net.node, net.tun.fd, 3) for _ in range(4)] == [3, 3, 1, 0]
    assert len(net.tun.written()) == 7


@pytest.mark.parametrize("uso", [True, False])
def test_udp_runs_merge_only_when_the_tun_takes_uso(net, mode, uso):
    dgrams = [udp(BODY[i * 1200:(i + 1) * 1200], src=POD2, dst=LOCAL, ident=i)
              for i in range(20)]
    dgrams.append(udp(BODY[:333], src=POD2, dst=LOCAL, ident=20))
    flags = ALL_OFFLOADS if uso else ALL_OFFLOADS & ~IO_TUN_USO
    written, _ = drain(net, mode, [("127.0.0.2", dgrams)], io_flags=flags)
    if uso:
        (frame,) = written
        assert VnetHdr.parse(frame) == VnetHdr(VNET_F_NEEDS_CSUM, GSO_UDP_L4, 28, 1200, 20, 6)
        assert frame[VNET_HLEN + 28:] == BODY[:20 * 1200] + BODY[:333]
    else:
        assert [w[:VNET_HLEN] for w in written] == [ZERO_VNET] * 21


def test_without_vnet_every_packet_is_written_plain(net, mode):
    """UDP_GRO on, the TUN without IFF_VNET_HDR: runs are cut, nothing is merged and no
    virtio_net_hdr goes in front."""
    run = stream(12)
    written, _ = drain(net, mode, [("127.0.0.2", run)], io_flags=IO_UDP_GRO | IO_UDP_GSO)
    assert len(written) == 12
    assert b"".join(tcp_fields(w)["payload"] for w in written) == BODY[:12 * 1448]


def test_vnet_without_udp_gro(net, mode):
    """IFF_VNET_HDR but no UDP_GRO flag: separate datagrams are still merged on the way in."""
    runs = [("127.0.0.2", [p]) for p in stream(8)]
    written, _ = drain(net, mode, runs, io_flags=IO_VNET)
    assert len(written) == 1 and payloads(written) == BODY[:8 * 1448]


def test_maximal_datagram(net):
    """The largest UDP datagram (65507 bytes) carrying one inner packet in flannel udp mode."""
    big = udp(BODY[:65507 - 28], src=POD2, dst=LOCAL)
    assert len(big) == 65507
    written, _ = drain(net, MODE_UDP, [("127.0.0.2", [big])])
    assert len(written) == 1 and written[0][VNET_HLEN + 28:] == BODY[:65507 - 28]


# ---- hostile runs: every piece counted, nothing crashes ----------------------------------

def test_a_run_of_one_byte_segments(net, mode):
    """gso_size 1: the kernel hands over a run of 1-byte datagrams; every one is counted."""
    written, fwd = drain(net, mode, [("127.0.0.2", [b"\x45"] * 100),
                                     ("127.0.0.2", [encap(mode, stream(1)[0])])], raw=True)
    assert len(written) == 1
    assert fwd.counters().drops == {(IN, Drop.TRUNCATED): 100}


def test_a_run_cut_across_an_inner_packet(net, mode):
    """An inner packet longer than the run's gso_size: the first piece claims more than it
    holds (truncated), the rest are not IPv4; the packet after the run still arrives. A last
    short piece after it keeps the inner length from covering the whole datagram (that would
    be one tunnelled super-packet: the next test)."""
    inner = tcp(BODY[:3000], src=POD2, dst=LOCAL)
    wire = encap(mode, inner)
    pieces = [wire[i:i + 1000] for i in range(0, len(wire), 1000)] + [b"\0" * 100]
    assert not tunnelled_whole(mode, b"".join(pieces))
    ok = stream(1)[0]
    written, fwd = drain(net, mode, [("127.0.0.2", pieces), ("127.0.0.2", [encap(mode, ok)])],
                         raw=True)
    assert len(written) == 1 and tcp_fields(written[0][VNET_HLEN:])["payload"] == BODY[:1448]
    c = fwd.counters()
    cut = -(-sum(map(len, pieces)) // 1000)         # the drain cuts it at gso_size
    assert sum(c.drops.values()) == cut and c.dropped(IN, Drop.TRUNCATED) >= 1


def test_a_run_whose_inner_packet_covers_it_is_one_packet(net, mode):
    """csum's tunnelled_whole: a datagram with a gso_size whose inner IPv4 length covers all of
    it is taken whole (what a kernel peer's UDP_SEGMENT send over veth looks like), not cut; a
    complete packet within max_inner is delivered as it is."""
    inner = tcp(BODY[:3000], src=POD2, dst=LOCAL, options=TS)
    wire = encap(mode, inner)
    pieces = [wire[i:i + 1000] for i in range(0, len(wire), 1000)]
    written, fwd = drain(net, mode, [("127.0.0.2", pieces)], raw=True)
    assert len(written) == 1 and written[0][:VNET_HLEN] == ZERO_VNET
    assert tcp_fields(written[0][VNET_HLEN:])["payload"] == BODY[:3000]
    assert fwd.counters().drops == {} and fwd.counters().packets[IN] == 1


def test_padded_segments_in_a_run(net, mode):
    """Inner packets shorter than the run's stride: the padding after each IP packet goes."""
    run = stream(6, mss=1000)
    padded = [encap(mode, p) + b"\0" * 300 for p in run[:-1]] + [encap(mode, run[-1])]
    written, _ = drain(net, mode, [("127.0.0.2", padded)], raw=True)
    assert payloads(written) == BODY[:6 * 1000]


def test_runs_from_strangers_and_spoofers_are_dropped_per_segment(net, mode):
    spoofed = stream(7, src=POD3)                  # peer 3's pods, sent by peer 2
    runs = [("127.0.0.9", stream(5)), ("127.0.0.2", spoofed), ("127.0.0.2", stream(3))]
    written, fwd = drain(net, mode, runs)
    c = fwd.counters()
    assert c.dropped(IN, Drop.UNKNOWN_PEER) == 5 and c.dropped(IN, Drop.SPOOFED_SOURCE) == 7
    assert c.packets[IN] == 3 and len(written) == 1


def test_vxlan_damage_inside_a_run(net):
    good = stream(8)
    segs = [encap(MODE_VXLAN, p) for p in good]
    segs[2] = b"\x0c" + segs[2][1:]                                  # flags
    segs[4] = segs[4][:4] + b"\x00\x00\x02" + segs[4][7:]           # VNI 2
    segs[5] = segs[5][:8] + bytes(6) + segs[5][14:]                  # not our MAC
    segs[6] = segs[6][:20] + b"\x86\xdd" + segs[6][22:]              # IPv6 EtherType
    written, fwd = drain(net, MODE_VXLAN, [("127.0.0.2", segs)], raw=True)
    c = fwd.counters()
    assert {k[1]: n for k, n in c.drops.items()} == {
        Drop.BAD_VXLAN_FLAGS: 1, Drop.WRONG_VNI: 1, Drop.WRONG_INNER_MAC: 1,
        Drop.BAD_ETHERTYPE: 1}
    assert c.packets[IN] == 4


def test_empty_and_tiny_datagrams(net, mode):
    runs = [("127.0.0.2", [b""]), ("127.0.0.2", [b"\x45"]), ("127.0.0.2", [bytes(21)]),
            ("127.0.0.2", [encap(mode, stream(1)[0])])]
    written, fwd = drain(net, mode, runs, raw=True)
    assert len(written) == 1 and sum(fwd.counters().drops.values()) == 3


def test_garbage_runs_never_crash_and_match_the_model(net, mode):
    rng = random.Random(99)
    runs = []
    for i in range(40):
        segs = [bytearray(encap(mode, p)) for p in stream(rng.randint(1, 20), 600,
                                                          sport=20000 + i)]
        for s in segs:
            for _ in range(rng.randint(0, 2)):
                s[rng.randrange(min(len(s), 80))] = rng.randrange(256)
        runs.append(("127.0.0.2", [bytes(s) for s in segs]))
    _, fwd = drain(net, mode, runs, raw=True)
    # damage inside the inner TCP header reaches the checksum check: that reason is modelled too
    assert fwd.counters().dropped(IN, Drop.BAD_L4_CHECKSUM) > 0


def test_more_segments_than_a_batch_holds_are_delivered_in_parts(net):
    """32 runs of 128 segments exceed the 2048 segments one batch decides: a full batch is
    decided and delivered, and the next starts again; nothing is dropped (it used to be OVERSIZE),
    every run arrives complete and in order, the first 16 runs in the first part."""
    runs = [("127.0.0.2", stream(128, 400, sport=10000 + i)) for i in range(RECVS)]
    written, fwd = drain(net, MODE_UDP, runs)
    c = fwd.counters()
    assert c.drops == {} and c.packets[IN] == RECVS * 128
    sports = [int.from_bytes(w[VNET_HLEN + 20:VNET_HLEN + 22], "big") for w in written]
    assert sports == [10000 + i for i in range(RECVS)]
    assert payloads(written) == b"".join(tcp_fields(p)["payload"] for _, r in runs for p in r)
    assert IN_SEGS // 128 == 16 and c.batches[IN] >= 2


def test_unleased_runs_take_none_of_a_batch(net):
    """The lease is checked before a run takes any room: 15 strangers' runs of 64 segments
    between 16 peer runs that fill a batch exactly are UNKNOWN_PEER once per segment, and the
    peer's 2048 segments are decided and coalesced as one batch, as if the strangers were not
    there (with the strangers counted first, the batch would be cut and frames split)."""
    peer = [("127.0.0.2", stream(128, 90, base=128 * 90 * i)) for i in range(16)]
    mixed = [peer[0]]
    for run in peer[1:]:
        mixed += [("127.0.0.9", stream(64, 90, sport=20000)), run]
    alone = expect_ingress(forwarders(MODE_UDP, net.port, ALL_OFFLOADS)[1], peer)  # udp: as sent
    written, fwd = drain(net, MODE_UDP, mixed)
    c = fwd.counters()
    assert c.drops == {(IN, Drop.UNKNOWN_PEER): 15 * 64} and c.packets[IN] == 16 * 128
    assert written == alone.tun
    assert payloads(written) == BODY[:16 * 128 * 90]


def test_a_full_tun_counts_every_member_of_a_refused_frame(net, mode):
    """The TUN refuses writes when its queue is full: a refused frame moves each of its
    members from forwarded to TUN_WRITE_ERROR, so nothing is lost silently."""
    net.tun.dev.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)     # a tiny queue
    fwd, _ = forwarders(mode, net.port, ALL_OFFLOADS)
    runs = [("127.0.0.2", stream(3, 400, sport=30000 + i)) for i in range(12)]
    send(net, mode, runs)
    assert fwd.drain_udp(net.node, net.tun.fd, 100) == 12
    written = net.tun.written()
    c = fwd.counters()
    refused = c.dropped(IN, Drop.TUN_WRITE_ERROR)
    assert 0 < refused < 36 and refused % 3 == 0
    assert c.packets[IN] == 3 * len(written) and c.packets[IN] + refused == 36
    assert c.bytes[IN] == sum(len(w) - VNET_HLEN + 2 * 52 for w in written)


def test_a_batch_with_nothing_to_deliver_writes_nothing(net, mode):
    written, fwd = drain(net, mode, [("127.0.0.9", stream(4))])
    assert written == [] and fwd.counters().drops == {(IN, Drop.UNKNOWN_PEER): 4}


def test_without_vnet_drops_and_a_full_tun_are_counted(net, mode):
    net.tun.dev.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)     # a tiny queue
    fwd, _ = forwarders(mode, net.port, IO_UDP_GRO)
    send(net, mode, [("127.0.0.9", stream(3)), ("127.0.0.2", stream(20, 400))])
    assert fwd.drain_udp(net.node, net.tun.fd, 100) == 2
    written = net.tun.written()
    c = fwd.counters()
    assert c.dropped(IN, Drop.UNKNOWN_PEER) == 3 and 0 < c.dropped(IN, Drop.TUN_WRITE_ERROR) < 20
    assert c.packets[IN] == len(written)
    assert c.packets[IN] + c.dropped(IN, Drop.TUN_WRITE_ERROR) == 20


def test_a_receive_error_raises(net):
    fwd, _ = forwarders(MODE_UDP, net.port, ALL_OFFLOADS)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as not_connected:
        with pytest.raises(OSError):
            fwd.drain_udp(not_connected, net.tun.fd, 8)


# ---- L4 checksum states and a kernel peer's super-packets (csrc/l4csum.c) -------------------

SUPER_MTU = 1500                # max_inner: what a kernel peer's super-packet is larger than


def bad(pkt: bytes) -> bytes:
    """The packet with its L4 checksum off by one."""
    b = bytearray(pkt)
    at = 20 + (16 if b[9] == 6 else 6)
    b[at + 1] ^= 1
    return bytes(b)


def test_a_bad_l4_checksum_is_dropped_and_the_run_coalesces_around_it(net, mode):
    run = stream(7)
    written, fwd = drain(net, mode, [("127.0.0.2", run[:3] + [bad(run[3])] + run[4:])])
    assert fwd.counters().drops == {(IN, Drop.BAD_L4_CHECKSUM): 1}
    assert payloads_cut(written) == BODY[:3 * 1448] + BODY[4 * 1448:7 * 1448]
    assert [w[1] for w in written] == [GSO_TCPV4, GSO_TCPV4]


def test_partial_segments_coalesce_and_a_lone_one_goes_up_as_needs_csum(net, mode):
    run = stream(5, csum="partial")
    lone = stream(1, csum="partial", sport=41000)
    written, fwd = drain(net, mode, [("127.0.0.2", run), ("127.0.0.2", lone)])
    assert fwd.counters().drops == {}
    assert len(written) == 2 and written[0][1] == GSO_TCPV4
    h = VnetHdr.parse(written[1][:VNET_HLEN])
    assert (h.flags, h.gso_type, h.csum_start, h.csum_offset) == (VNET_F_NEEDS_CSUM, 0, 20, 16)
    assert written[1][VNET_HLEN:][20:] == lone[0][20:]        # left for the kernel to finish


def test_without_vnet_a_partial_checksum_is_completed(net, mode):
    run = stream(3, csum="partial")
    written, _ = drain(net, mode, [("127.0.0.2", run)], io_flags=IO_UDP_GRO)
    assert len(written) == 3 and all(l4_ok(w) for w in written)
    assert b"".join(tcp_fields(w)["payload"] for w in written) == BODY[:3 * 1448]


@pytest.mark.parametrize("io_flags", [ALL_OFFLOADS, IO_UDP_GRO])
def test_a_kernel_tso_super_packet_goes_on_whole_or_cut(net, mode, io_flags):
    big = tcp(BODY[:6000], src=POD2, dst=LOCAL, csum="partial", options=TS)
    whole = tcp(BODY[:6000], src=POD2, dst=LOCAL, options=TS, sport=41000)   # complete: no
    written, fwd = drain(net, mode, [("127.0.0.2", [big]), ("127.0.0.2", [whole])],
                         io_flags=io_flags, max_inner=SUPER_MTU)
    assert fwd.counters().drops == {(IN, Drop.OVERSIZE): 1}
    if io_flags & IO_VNET:
        assert len(written) == 1
        h = VnetHdr.parse(written[0][:VNET_HLEN])
        assert (h.gso_type, h.gso_size) == (GSO_TCPV4, SUPER_MTU - 52)
        assert fwd.counters().super_packets[IN] == 1
    else:
        assert len(written) == 5 and all(len(w) <= SUPER_MTU and l4_ok(w) for w in written)
        assert b"".join(tcp_fields(w)["payload"] for w in written) == BODY[:6000]


@pytest.mark.parametrize("io_flags", [ALL_OFFLOADS, ALL_OFFLOADS & ~IO_TUN_USO, IO_UDP_GRO])
def test_a_kernel_uso_super_packet_from_a_tunnelled_run(net, mode, io_flags):
    """A partial UDP datagram whose inner length covers the whole run: the run's gso_size is
    the hint super_gso needs; USO takes it whole, no vnet cuts it, vnet without USO cannot."""
    big = udp(BODY[:4000], src=POD2, dst=LOCAL, csum="partial")
    wire = encap(mode, big)
    written, fwd = drain(net, mode, [("127.0.0.2", [wire[i:i + 1000]
                                                    for i in range(0, len(wire), 1000)])],
                         io_flags=io_flags, raw=True, max_inner=SUPER_MTU)
    if io_flags & IO_TUN_USO:
        assert fwd.counters().drops == {} and len(written) == 1
        h = VnetHdr.parse(written[0][:VNET_HLEN])
        assert (h.gso_type, h.gso_size) == (GSO_UDP_L4, 1000)
    elif io_flags & IO_VNET:
        assert written == [] and fwd.counters().drops == {(IN, Drop.OVERSIZE): 1}
    else:
        assert fwd.counters().drops == {} and len(written) == 4
        assert all(l4_ok(w) for w in written)
        assert b"".join(w[28:] for w in written) == BODY[:4000]


def payloads_cut(frames: list[bytes]) -> bytes:
    """The TCP byte stream of GSO frames (each cut back into its segments first)."""
    out = b""
    for fr in frames:
        res = P.gso_segment(fr[:VNET_HLEN], fr[VNET_HLEN:])
        assert not res.drop
        out += b"".join(tcp_fields(s)["payload"] for s in res.segments)
    return out


@pytest.mark.parametrize("io_flags", [ALL_OFFLOADS, ALL_OFFLOADS & ~IO_TUN_USO, IO_UDP_GRO])
@pytest.mark.parametrize("hint", [0, 1000, 1400, 1600])
def test_ingress_hints_are_the_same_in_c_and_the_reference(mode, io_flags, hint):
    """Forwarder.ingress(hints=): what the drain passes in dp_pkt.gso_size, both twins alike
    (this is what the model above feeds the reference with)."""
    fwd, ref = forwarders(mode, 8472, io_flags, max_inner=SUPER_MTU)
    pkts = [udp(BODY[:4000], src=POD2, dst=LOCAL, csum="partial"),
            udp(BODY[:4000], src=POD2, dst=LOCAL),
            tcp(BODY[:6000], src=POD2, dst=LOCAL, csum="partial")]
    dgrams = [("127.0.0.2", 8472, encap(mode, p)) for p in pkts]
    got = fwd.ingress(dgrams, [hint] * 3)
    assert got == ref.ingress(dgrams, [hint] * 3)
    assert fwd.counters().drops == ref.counters().drops
    # the partial UDP one is a super-packet exactly when the hint makes it one
    super_packet = hint in (1000, 1400) and bool(io_flags & IO_TUN_USO or not io_flags & IO_VNET)
    assert (got[0].action == Action.TUN) == super_packet


def test_a_frame_of_more_pieces_than_one_writev_takes(net, mode):
    """1280 segments of 8 bytes merge into one frame of 1281 pieces, more than writev's 1024
    (UIO_MAXIOV): that frame is copied into one buffer and written whole, as the model says."""
    whole = stream(1280, 8)
    runs = [("127.0.0.2", whole[k:k + 64]) for k in range(0, len(whole), 64)]
    written, fwd = drain(net, mode, runs)
    assert len(written) == 1 and VnetHdr.parse(written[0]).gso_size == 8
    assert fwd.counters().super_packets[IN] == 1 and fwd.counters().drops == {}
    assert payloads(written) == BODY[:1280 * 8]
