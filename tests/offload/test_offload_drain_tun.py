"""dp_drain_tun with offloads (csrc/egress.c): TUN super-packets with their
virtio_net_hdr in, UDP_SEGMENT sends out, over a fake TUN and loopback peers (no root).

Every test holds the C drain to the reference model (drain_rig.expect_egress: pyref's
gso_segment and Forwarder.egress in egress.c's order) byte for byte, and checks the
segments on their own terms as well (valid IP and L4 checksums, the byte stream intact)."""

from __future__ import annotations

import errno
import os
import random
import socket

import pytest

from dataplane.drops import Drop
from dataplane.fastpath import pyref as P
from dataplane.fastpath.types import (
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    IO_UDP_GSO,
    IO_VNET,
    MODE_UDP,
    MODE_VXLAN,
    VNET_F_NEEDS_CSUM,
    VNET_HLEN,
    VXLAN_OVERHEAD,
    VnetHdr,
)
from drain_rig import (
    ALL_OFFLOADS, EG, MAX_SEGS, ZERO_VNET, assert_counters, expect_egress, forwarders,
    open_net,
)
from offload_packets import (
    ACK, CWR, FIN, PSH, ip_ok, ipv4, l4_ok, tcp, tcp_fields, tso, udp, uso,
)

BODY = random.Random(11).randbytes(70_000)
TO2 = bytes([10, 244, 2, 3])           # a pod behind peer 127.0.0.2
TO3 = bytes([10, 244, 3, 3])
NOWHERE = bytes([10, 250, 0, 1])


@pytest.fixture
def net():
    n = open_net()
    yield n
    n.close()


@pytest.fixture(params=["udp", "vxlan"])
def mode(request):
    return {"udp": MODE_UDP, "vxlan": MODE_VXLAN}[request.param]


def read_of(hdr: VnetHdr, pkt: bytes) -> bytes:
    return hdr.pack() + pkt


def drain(net, mode, reads, io_flags=ALL_OFFLOADS, budget=1000, **kw):
    """Inject reads, drain once, check against the model; returns (sent, written, fwd)."""
    fwd, ref = forwarders(mode, net.port, io_flags, **kw)
    want = expect_egress(ref, reads)
    net.tun.inject(*reads)
    assert fwd.drain_tun(net.tun.fd, net.node, budget) == min(len(reads), budget)
    sent, written = net.sent_to_peers(), net.tun.written()
    assert sent == want.sends
    assert written == want.tun
    assert_counters(fwd, want, EG)
    return sent, written, fwd


def inner(mode, payload: bytes) -> bytes:
    return payload[VXLAN_OVERHEAD:] if mode == MODE_VXLAN else payload


def on_wire(mode, pkt: bytes) -> bytes:
    """An inner packet as it leaves in udp mode (TTL one less, as flannel does) or vxlan."""
    if mode == MODE_VXLAN:
        return pkt
    b = bytearray(pkt)
    assert P.ttl_decrement(b) == Drop.NONE
    return bytes(b)


def check_stream(mode, datagrams: list[bytes], super_pkt: bytes, mss: int) -> None:
    """The segments of a TCP super-packet, judged without the reference."""
    segs = [inner(mode, d) for d in datagrams]
    stream = b""
    for i, s in enumerate(segs):
        assert ip_ok(s) and l4_ok(s)
        f = tcp_fields(s)
        assert f["seq"] == tcp_fields(super_pkt)["seq"] + len(stream)
        assert i + 1 == len(segs) or len(f["payload"]) == mss      # only the last is short
        stream += f["payload"]
    assert stream == tcp_fields(super_pkt)["payload"]


# ---- super-packets in, wire-ready segments out ------------------------------------------

@pytest.mark.parametrize("size", [1448 * 44, 1448 * 10 + 1, 1448 * 3 - 1, 1448, 1, 0])
def test_tso_super_packet_is_cut_and_sent_as_one_run(net, mode, size):
    """Exact multiples, a short last segment of one byte, of MSS - 1; one segment; none."""
    hdr, pkt = tso(BODY[:size], 1448, dst=TO2, options=bytes([1, 1, 8, 10]) + bytes(8))
    sent, _, fwd = drain(net, mode, [read_of(hdr, pkt)])
    check_stream(mode, sent["127.0.0.2"], pkt, 1448)
    assert len(sent["127.0.0.2"]) == max(1, -(-size // 1448))
    # one read; one sendmmsg however many segments (UDP_SEGMENT), one EAGAIN read
    c = fwd.counters()
    assert c.syscalls[EG] == 3
    # messages of at most 64 segments and 65507 bytes; those of more than one segment are
    # UDP_SEGMENT messages, all taken, none refused
    n, per = len(sent["127.0.0.2"]), min(65507 // len(sent["127.0.0.2"][0]), 64)
    assert c.gso_sends == n // per + (n % per > 1)
    assert (c.gso_fallbacks, c.gso_too_big, c.gso_backoffs) == (0, 0, 0)


def test_tso_flags_go_where_the_kernel_puts_them(net):
    hdr, pkt = tso(BODY[:5000], 1000, dst=TO2, flags=ACK | PSH | FIN | CWR)
    hdr = hdr._replace(gso_type=GSO_TCPV4 | GSO_ECN)
    sent, _, _ = drain(net, MODE_UDP, [read_of(hdr, pkt)])
    flags = [tcp_fields(s)["flags"] for s in sent["127.0.0.2"]]
    assert flags == [ACK | CWR] + [ACK] * 3 + [ACK | PSH | FIN]


@pytest.mark.parametrize("size", [1200 * 20, 1200 * 5 + 7, 1200, 0])
def test_uso_super_packet_is_cut_into_datagrams(net, mode, size):
    hdr, pkt = uso(BODY[:size], 1200, dst=TO3)
    sent, _, _ = drain(net, mode, [read_of(hdr, pkt)])
    segs = [inner(mode, d) for d in sent["127.0.0.3"]]
    assert all(ip_ok(s) and l4_ok(s) for s in segs)
    assert b"".join(s[28:] for s in segs) == BODY[:size]
    assert [len(s) - 28 for s in segs[:-1]] == [1200] * (len(segs) - 1)


def test_needs_csum_packet_gets_its_checksum(net, mode):
    partial = udp(BODY[:999], dst=TO2, csum="partial")
    ptcp = tcp(BODY[:1111], dst=TO3, csum="partial")
    reads = [read_of(VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, 20, 6), partial),
             read_of(VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, 20, 16), ptcp),
             read_of(VnetHdr(), tcp(BODY[:10], dst=TO2))]        # nothing to do: as it came
    sent, _, _ = drain(net, mode, reads)
    assert [inner(mode, d) for d in sent["127.0.0.2"]] == [
        on_wire(mode, udp(BODY[:999], dst=TO2)), on_wire(mode, tcp(BODY[:10], dst=TO2))]
    assert [inner(mode, d) for d in sent["127.0.0.3"]] == [on_wire(mode, tcp(BODY[:1111],
                                                                             dst=TO3))]


def test_mixed_peers_and_sizes_in_one_round(net, mode):
    reads = []
    for i in range(20):                   # more reads than one round (16) takes
        to = TO2 if i % 3 else TO3
        mss = (536, 1448, 8948)[i % 3]
        hdr, pkt = tso(BODY[: 1000 + 997 * i], mss, dst=to, seq=i << 20, ident=i * 100)
        reads.append(read_of(hdr, pkt))
    sent, _, fwd = drain(net, mode, reads)
    assert fwd.counters().packets[EG] == sum(len(v) for v in sent.values()) > 40


def test_without_udp_segment_every_segment_goes_alone(net, mode):
    hdr, pkt = tso(BODY[:20000], 1448, dst=TO2)
    sent, _, fwd = drain(net, mode, [read_of(hdr, pkt)], io_flags=IO_VNET)
    check_stream(mode, sent["127.0.0.2"], pkt, 1448)
    assert fwd.counters().gso_fallbacks == 0


def test_a_refused_udp_segment_send_falls_back_to_one_by_one(net, mode):
    """SO_NO_CHECK makes the kernel refuse UDP_SEGMENT (EINVAL): the run is resent datagram
    by datagram and nothing is lost."""
    net.node.setsockopt(socket.SOL_SOCKET, 11, 1)                 # SO_NO_CHECK
    hdr, pkt = tso(BODY[:30000], 1448, dst=TO2)
    hdr3, pkt3 = uso(BODY[:6000], 1000, dst=TO3)
    sent, _, fwd = drain(net, mode, [read_of(hdr, pkt), read_of(hdr3, pkt3)])
    check_stream(mode, sent["127.0.0.2"], pkt, 1448)
    assert fwd.counters().gso_fallbacks >= 1


def test_maximal_super_packets(net, mode):
    """A 65535-byte IP packet (the largest a TUN hands out) cut at a small MSS and at the
    largest whose segments still fit one UDP datagram (65507 bytes with our headers); and a
    read longer than any packet, which read() cuts and of which the IP length rules."""
    top = 65507 - 40 - (VXLAN_OVERHEAD if mode == MODE_VXLAN else 0)
    reads = []
    for mss in (536, top):
        hdr, pkt = tso(BODY[: 65535 - 40], mss, dst=TO2)
        assert len(pkt) == 65535
        reads.append(read_of(hdr, pkt))
    hdr, pkt = tso(BODY[: 65535 - 40], 1448, dst=TO3)
    reads.append(read_of(hdr, pkt) + b"\xee\xee")
    sent, _, _ = drain(net, mode, reads)
    assert len(sent["127.0.0.2"]) == -(-(65535 - 40) // 536) + 2
    assert max(map(len, sent["127.0.0.2"])) == 65507
    check_stream(mode, sent["127.0.0.3"], pkt, 1448)


def test_a_segment_too_big_for_udp_is_tx_too_big(net):
    """One 65535-byte segment plus the VXLAN header exceeds a UDP datagram: the send fails with
    EMSGSIZE, the packet moves from forwarded to TX_TOO_BIG (not the generic TX_ERROR), its inner
    bytes leave the byte counter, and the next read still goes. A lone datagram is no UDP_SEGMENT
    message: nothing falls back, GSO to the peer is not paused."""
    hdr, pkt = tso(BODY[: 65535 - 40], 65535 - 40, dst=TO2)
    small = tso(BODY[:100], 1448, dst=TO2)
    fwd, _ = forwarders(MODE_VXLAN, net.port, ALL_OFFLOADS)
    net.tun.inject(read_of(hdr, pkt), read_of(*small))
    assert fwd.drain_tun(net.tun.fd, net.node, 8) == 2
    sent = net.sent_to_peers()["127.0.0.2"]
    assert len(sent) == 1
    check_stream(MODE_VXLAN, sent, small[1], 1448)
    c = fwd.counters()
    assert c.packets[EG] == 1 and c.drops == {(EG, Drop.TX_TOO_BIG): 1}
    assert c.bytes[EG] == len(small[1])            # inner bytes of the one that left
    assert (c.gso_fallbacks, c.gso_too_big, c.gso_backoffs, c.gso_sends) == (0, 0, 0, 0)


def test_a_round_that_outgrows_the_segment_area_is_sent_in_two(net):
    """16 reads of 64 KiB at a small MSS exceed the 1 MiB area and the 4096 slots of a round:
    the round is flushed early and nothing is lost or reordered."""
    reads = []
    for i in range(16):
        hdr, pkt = tso(BODY[: 60000], 100 + i, dst=TO2 if i % 2 else TO3, seq=i << 24)
        reads.append(read_of(hdr, pkt))
    sent, _, fwd = drain(net, MODE_VXLAN, reads)
    assert sum(map(len, sent.values())) > MAX_SEGS


def test_segment_count_limit_per_super_packet(net):
    """MAX_SEGS segments of one byte fit; one more is OVERSIZE, and only that packet drops."""
    fits = tso(BODY[:MAX_SEGS], 1, dst=TO2)
    too_many = tso(BODY[:MAX_SEGS + 1], 1, dst=TO2)
    after = tso(BODY[:3000], 1448, dst=TO3)
    sent, _, fwd = drain(net, MODE_UDP, [read_of(*fits), read_of(*too_many), read_of(*after)])
    assert len(sent["127.0.0.2"]) == MAX_SEGS and len(sent["127.0.0.3"]) == 3
    assert fwd.counters().dropped(EG, Drop.OVERSIZE) == 1


def test_a_super_packet_nobody_holds_gets_one_icmp_error(net, mode):
    hdr, pkt = tso(BODY[:30000], 1448, dst=NOWHERE)
    _, written, fwd = drain(net, mode, [read_of(hdr, pkt)])
    assert len(written) == 1 and written[0][:VNET_HLEN] == ZERO_VNET
    icmp = written[0][VNET_HLEN:]
    assert icmp[9] == 1 and icmp[20:22] == b"\x03\x00" and icmp[28:56] == pkt[:28]
    assert fwd.counters().dropped(EG, Drop.NO_ROUTE) == 1


def test_icmp_errors_for_super_packets_nobody_holds_are_rate_limited(net):
    """60 unroutable super-packets in one drain: each is NO_ROUTE, but the bucket (burst 50 at
    the default 1000/s) answers 50 of them and counts the other 10 as suppressed; a source that
    names no single host (127/8 here) gets none and costs no token."""
    reads = [read_of(*tso(BODY[:3000], 1448, dst=NOWHERE, seq=i)) for i in range(60)]
    reads.append(read_of(*tso(BODY[:3000], 1448, dst=NOWHERE, src=bytes([127, 0, 0, 5]))))
    _, written, fwd = drain(net, MODE_UDP, reads)
    c = fwd.counters()
    assert len(written) == 50 and (c.icmp_sent, c.icmp_suppressed) == (50, 10)
    assert c.drops == {(EG, Drop.NO_ROUTE): 61}


def test_ttl_expiring_on_every_segment_is_counted_per_segment(net):
    hdr, pkt = tso(BODY[:14480], 1448, dst=TO2, ttl=1)
    sent, _, fwd = drain(net, MODE_UDP, [read_of(hdr, pkt)])
    assert sent["127.0.0.2"] == [] and fwd.counters().dropped(EG, Drop.TTL_EXCEEDED) == 10


def test_budget_counts_reads_not_segments(net):
    reads = [read_of(*tso(BODY[:5000 + i], 1448, dst=TO2, seq=i << 20)) for i in range(5)]
    fwd, _ = forwarders(MODE_UDP, net.port, ALL_OFFLOADS)
    net.tun.inject(*reads)
    assert [fwd.drain_tun(net.tun.fd, net.node, 2) for _ in range(4)] == [2, 2, 1, 0]
    assert len(net.sent_to_peers()["127.0.0.2"]) == 5 * 4


# ---- hostile and broken virtio_net_hdr: counted, never sent, never crash -------------------

HDR, PKT = tso(BODY[:5000], 1448, dst=TO2)          # hdr_len 40
UHDR, UPKT = uso(BODY[:5000], 1200, dst=TO2)
HOSTILE = {
    "gso_type UFO": (HDR._replace(gso_type=GSO_UDP), PKT, Drop.BAD_VNET_HDR),
    "gso_type TCPV6 on IPv4": (HDR._replace(gso_type=GSO_TCPV6), PKT, Drop.BAD_VNET_HDR),
    "gso_type unknown": (HDR._replace(gso_type=0x42), PKT, Drop.BAD_VNET_HDR),
    "gso_type ECN alone": (HDR._replace(gso_type=GSO_ECN), PKT, Drop.BAD_VNET_HDR),
    "TCPV4 for a UDP packet": (HDR._replace(csum_offset=6), UPKT, Drop.BAD_VNET_HDR),
    "UDP_L4 for a TCP packet": (UHDR, PKT, Drop.BAD_VNET_HDR),
    "GSO without NEEDS_CSUM": (HDR._replace(flags=0), PKT, Drop.BAD_VNET_HDR),
    "gso_size 0": (HDR._replace(gso_size=0), PKT, Drop.BAD_VNET_HDR),
    "gso_size 0xffff": (HDR._replace(gso_size=0xFFFF), PKT, Drop.BAD_VNET_HDR),
    "gso_size past 64 KiB with headers": (HDR._replace(gso_size=65535 - 39), PKT,
                                          Drop.BAD_VNET_HDR),
    "hdr_len past the packet": (HDR._replace(hdr_len=len(PKT) + 1), PKT, Drop.BAD_VNET_HDR),
    "hdr_len 0xffff": (HDR._replace(hdr_len=0xFFFF), PKT, Drop.BAD_VNET_HDR),
    "csum_start inside the IP header": (HDR._replace(csum_start=10), PKT, Drop.BAD_VNET_HDR),
    "csum_start past the packet": (HDR._replace(csum_start=0xFFFF), PKT, Drop.BAD_VNET_HDR),
    "csum_offset past the packet": (HDR._replace(csum_offset=0xFFFF), PKT, Drop.BAD_VNET_HDR),
    "NEEDS_CSUM start past the end": (VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, len(PKT) + 1, 0),
                                      PKT, Drop.BAD_VNET_HDR),
    "NEEDS_CSUM field past the end": (VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, 20,
                                              len(PKT) - 21), PKT, Drop.BAD_VNET_HDR),
    "NEEDS_CSUM offset 0xffff": (VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, 20, 0xFFFF), PKT,
                                 Drop.BAD_VNET_HDR),
    "NEEDS_CSUM inside the IP header": (VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, 8, 2), PKT,
                                        Drop.BAD_VNET_HDR),
    "TSO of a fragment": (HDR, tcp(BODY[:5000], dst=TO2, csum="partial", frag=0x2000),
                          Drop.BAD_VNET_HDR),
    "TCP data offset below 5": (HDR, tcp(b"", dst=TO2, csum="partial")[:32] + b"\x40" +
                                tcp(b"", dst=TO2, csum="partial")[33:], Drop.BAD_L4_HEADER),
    "UDP length lies": (UHDR, UPKT[:24] + b"\x00\x09" + UPKT[26:], Drop.BAD_L4_HEADER),
    "IP total length past the read": (HDR, PKT[:-1], Drop.TRUNCATED),
    "TCP header cut": (HDR, ipv4(6, PKT[20:30], dst=TO2), Drop.TRUNCATED),
    "bad IP checksum": (HDR, PKT[:8] + b"\x01" + PKT[9:], Drop.BAD_IP_CHECKSUM),
    "IP header cut": (HDR, PKT[:19], Drop.TRUNCATED),
    "empty packet": (HDR, b"", Drop.TRUNCATED),
    "IP version 5": (HDR, bytes([0x55]) + PKT[1:], Drop.BAD_IP_VERSION),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_virtio_header_is_counted_and_the_next_packet_goes(net, mode, name):
    hdr, pkt, why = HOSTILE[name]
    good_hdr, good = tso(BODY[:3000], 1448, dst=TO3)
    sent, written, fwd = drain(net, mode, [read_of(hdr, pkt), read_of(good_hdr, good)])
    assert sent["127.0.0.2"] == [] and written == []
    check_stream(mode, sent["127.0.0.3"], good, 1448)
    c = fwd.counters()
    assert c.dropped(EG, why) == 1 and sum(c.drops.values()) == 1


@pytest.mark.parametrize("cut", [0, 1, VNET_HLEN - 1])
def test_a_read_shorter_than_the_virtio_header_is_truncated(net, cut):
    sent, _, fwd = drain(net, MODE_UDP, [read_of(HDR, PKT)[:cut], read_of(HDR, PKT)])
    assert len(sent["127.0.0.2"]) == 4
    assert fwd.counters().dropped(EG, Drop.TRUNCATED) == 1


def test_gso_size_larger_than_the_payload_is_one_segment(net, mode):
    hdr = HDR._replace(gso_size=len(PKT))
    sent, _, _ = drain(net, mode, [read_of(hdr, PKT)])
    assert [inner(mode, d) for d in sent["127.0.0.2"]] == [on_wire(mode, tcp(BODY[:5000],
                                                                             dst=TO2))]


def test_hdr_len_short_of_the_headers_is_only_a_hint(net):
    sent, _, _ = drain(net, MODE_UDP, [read_of(HDR._replace(hdr_len=0), PKT),
                                       read_of(HDR._replace(hdr_len=len(PKT)), PKT)])
    assert len(sent["127.0.0.2"]) == 8


def test_garbage_reads_never_crash_and_match_the_model(net, mode):
    """Random damage to good reads (header fields, cuts, flipped bytes): whatever it is, the
    drain agrees with the model; the ASan build checks it stays inside its buffers."""
    rng = random.Random(2026)
    samples = [read_of(HDR, PKT), read_of(UHDR, UPKT),
               read_of(*tso(BODY[:9000], 700, dst=TO3, options=bytes(12)))]
    reads = []
    for _ in range(120):
        r = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(min(len(r), 80))
            r[at] = rng.randrange(256)
        if rng.random() < 0.3:
            r = r[: rng.randrange(len(r) + 1)]
        reads.append(bytes(r))
    drain(net, mode, reads)


def test_ipv6_from_the_tun_is_ipv6_unsupported(net):
    """IPv6 read on the offload path is IPV6_UNSUPPORTED (as the plain path counts it), not
    BAD_IP_VERSION; a TSO6 super-packet too, once for the whole read."""
    ipv6 = bytes([0x60]) + bytes(39) + BODY[:100]
    tso6 = bytes([0x60]) + bytes(39) + BODY[:5000]
    reads = [read_of(VnetHdr(), ipv6), read_of(VnetHdr(gso_type=GSO_TCPV6, gso_size=1000), tso6)]
    _, _, fwd = drain(net, MODE_UDP, reads)
    assert fwd.counters().drops == {(EG, Drop.IPV6_UNSUPPORTED): 2}


def test_without_vnet_flag_the_plain_drain_runs(net):
    """io_flags without IO_VNET: no virtio_net_hdr is expected (the plain drain's job)."""
    fwd, _ = forwarders(MODE_UDP, net.port, IO_UDP_GSO)
    pkt = tcp(BODY[:100], dst=TO2)
    net.tun.inject(pkt)
    assert fwd.drain_tun(net.tun.fd, net.node, 8) == 1
    assert net.sent_to_peers()["127.0.0.2"] == [on_wire(MODE_UDP, pkt)]


def test_a_read_error_raises(net):
    fwd, _ = forwarders(MODE_UDP, net.port, ALL_OFFLOADS)
    fd = os.open(os.devnull, os.O_WRONLY)              # reading it fails with EBADF
    try:
        with pytest.raises(OSError) as exc:
            fwd.drain_tun(fd, net.node, 8)
        assert exc.value.errno == errno.EBADF
    finally:
        os.close(fd)
