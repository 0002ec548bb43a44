"""Coalescing, case by case: what merges, what ends a merge, what is left alone."""

from __future__ import annotations

import random

import pytest

from dataplane.fastpath import cnative as C
from dataplane.fastpath import pyref as P
from dataplane.fastpath.types import (
    GRO_TCP,
    GRO_UDP,
    GSO_TCPV4,
    GSO_UDP_L4,
    VNET_F_NEEDS_CSUM,
    VNET_HLEN,
    VnetHdr,
)
from offload_packets import (
    ACK, CWR, ECE, FIN, PSH, RST, SYN, URG,
    inet_sum, ip_ok, pseudo_sum, tcp, tcp_fields, udp,
)

BODY = random.Random(7).randbytes(100_000)
MSS = 1448
TS = b"\x01\x01\x08\x0a" + bytes(range(8))          # NOP NOP timestamps


def seg(i: int, size: int = MSS, *, base_seq: int = 1000, **kw) -> bytes:
    """The i-th full-size segment of a stream (payload, seq and IP ID follow i)."""
    kw.setdefault("options", TS)
    off = i * MSS
    return tcp(BODY[off:off + size], seq=base_seq + off, ident=100 + i, **kw)


def coalesce(packets, flags=GRO_TCP):
    frames = C.gro_coalesce(packets, flags)
    assert frames == P.gro_coalesce(packets, flags)
    return frames


def members(frames):
    return [f.members for f in frames]


def test_a_stream_of_44_segments_becomes_one_frame():
    pkts = [seg(i) for i in range(44)]
    (frame,) = coalesce(pkts)
    assert frame.members == tuple(range(44))
    hdr = VnetHdr.parse(frame.data)
    hlen = 20 + 32
    assert hdr == VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, hlen, MSS, 20, 16)
    pkt = frame.data[VNET_HLEN:]
    assert len(pkt) == hlen + 44 * MSS == (pkt[2] << 8 | pkt[3])
    assert ip_ok(pkt)
    assert pkt[hlen:] == BODY[:44 * MSS]
    assert pkt[20:36] == pkts[0][20:36] and pkt[38:hlen] == pkts[0][38:hlen]
    # NEEDS_CSUM: the checksum field holds the pseudo-header sum over the merged length
    assert int.from_bytes(pkt[36:38], "big") == pseudo_sum(pkt[12:16], pkt[16:20], 6,
                                                           len(pkt) - 20)


def test_the_ip_length_limit_splits_frames():
    pkts = [seg(i) for i in range(46)]             # 46 * 1448 + 52 > 65535
    frames = coalesce(pkts)
    assert members(frames) == [tuple(range(45)), (45,)]
    assert len(frames[0].data) - VNET_HLEN == 52 + 45 * MSS <= 65535


def test_a_packet_that_stays_alone_goes_out_unchanged():
    pkt = seg(0)
    assert coalesce([pkt]) == [(bytes(VNET_HLEN) + pkt, (0,))]


def test_a_shorter_segment_ends_the_frame_and_nothing_follows_it():
    pkts = [seg(0), seg(1), seg(2, 700), seg(3)]
    pkts[3] = tcp(BODY[:MSS], seq=1000 + 2 * MSS + 700, ident=103, options=TS)
    assert members(coalesce(pkts)) == [(0, 1, 2), (3,)]


def test_a_larger_segment_does_not_join():
    pkts = [seg(0, 1000), tcp(BODY[1000:2448], seq=2000, ident=101, options=TS)]
    assert members(coalesce(pkts)) == [(0,), (1,)]


def test_psh_joins_and_ends_the_frame():
    pkts = [seg(0), seg(1), seg(2, flags=ACK | PSH), seg(3), seg(4)]
    frames = coalesce(pkts)
    assert members(frames) == [(0, 1, 2), (3, 4)]
    assert tcp_fields(frames[0].data[VNET_HLEN:])["flags"] == ACK | PSH
    assert tcp_fields(frames[1].data[VNET_HLEN:])["flags"] == ACK


@pytest.mark.parametrize("flag", [SYN, FIN, RST, URG, ECE, CWR])
def test_other_flags_end_or_prevent_a_merge(flag):
    pkts = [seg(0), seg(1), seg(2, flags=ACK | flag), seg(3), seg(4)]
    frames = coalesce(pkts)
    assert members(frames) == [(0, 1), (2,), (3, 4)]
    assert frames[1].data == bytes(VNET_HLEN) + pkts[2]


def test_a_segment_without_ack_is_left_alone():
    pkts = [seg(0), seg(1, flags=PSH), seg(2)]
    assert members(coalesce(pkts)) == [(0,), (1,), (2,)]


def test_a_bad_checksum_is_never_laundered():
    pkts = [seg(i) for i in range(5)]
    bad = bytearray(pkts[2])
    bad[-1] ^= 0x01
    pkts[2] = bytes(bad)
    frames = coalesce(pkts)
    assert members(frames) == [(0, 1), (2,), (3, 4)]
    assert frames[1].data == bytes(VNET_HLEN) + pkts[2]     # the kernel will drop it


def test_a_bad_ip_checksum_is_never_laundered():
    pkts = [seg(i) for i in range(3)]
    bad = bytearray(pkts[1])
    bad[8] -= 1                                              # TTL changed, checksum not fixed
    pkts[1] = bytes(bad)
    assert members(coalesce(pkts)) == [(0,), (1,), (2,)]


@pytest.mark.parametrize("change", [
    {"ack": 78}, {"window": 503}, {"options": TS[:-1] + b"\x09"}, {"options": b""},
    {"tos": 4}, {"ttl": 63}, {"df": False},
])
def test_headers_that_differ_prevent_a_merge(change):
    pkts = [seg(0), seg(1), seg(2, **change), seg(3, **change)]
    assert members(coalesce(pkts)) == [(0, 1), (2, 3)]


def test_a_sequence_gap_or_repeat_prevents_a_merge():
    assert members(coalesce([seg(0), seg(2), seg(3)])) == [(0,), (1, 2)]
    assert members(coalesce([seg(0), seg(1), seg(1), seg(2)])) == [(0, 1), (2, 3)]


def test_ip_id_must_count_up_without_df_only():
    for df in (True, False):
        pkts = [seg(0, df=df), seg(1, df=df), seg(5, df=df, base_seq=1000 - 3 * MSS)]
        expect = [(0, 1, 2)] if df else [(0, 1), (2,)]
        assert members(coalesce(pkts)) == expect, df


def test_ip_options_and_fragments_stay_alone():
    opt = seg(1, ip_options=b"\x01\x01\x01\x00")
    more = seg(1, frag=0x2000)
    for odd in (opt, more):
        assert members(coalesce([seg(0), odd, seg(2)])) == [(0,), (1,), (2,)]


def test_pure_acks_stay_alone_and_keep_their_place():
    ack = tcp(b"", seq=1000 + 2 * MSS, ident=50, options=TS)
    assert members(coalesce([seg(0), seg(1), ack, seg(2), seg(3)])) == [(0, 1), (2,), (3, 4)]


def test_interleaved_flows_coalesce_independently():
    a = [seg(i) for i in range(4)]
    b = [seg(i, sport=40001) for i in range(4)]
    pkts = [a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3]]
    assert members(coalesce(pkts)) == [(0, 2, 4, 6), (1, 3, 5, 7)]


def test_a_packet_of_a_flow_that_cannot_merge_holds_back_later_ones():
    a = [seg(i) for i in range(3)]
    b = [seg(i, sport=40001) for i in range(3)]
    fin = seg(1, flags=ACK | FIN)                           # flow a, at position 3
    pkts = [a[0], b[0], b[1], fin, a[1], b[2]]
    pkts[4] = seg(1)
    # a[0] must not swallow the segment after the FIN: that would reorder flow a
    assert members(coalesce(pkts)) == [(0,), (1, 2, 5), (3,), (4,)]


def test_other_protocols_and_reverse_direction_do_not_disturb():
    icmp = bytes.fromhex("45000054000040004001") + bytes(2) + bytes(8) + bytes(64)
    reverse_ack = tcp(b"", sport=5201, dport=40000, src=bytes([10, 244, 2, 3]),
                      dst=bytes([10, 244, 1, 2]))
    pkts = [seg(0), icmp, seg(1), reverse_ack, seg(2), b"\x45garbage", seg(3)]
    assert members(coalesce(pkts)) == [(0, 2, 4, 6), (1,), (3,), (5,)]


def test_a_fragment_without_ports_closes_flows_between_its_addresses():
    later = bytearray(seg(1, frag=100))                     # offset 800: no ports to read
    pkts = [seg(0), bytes(later), seg(1), seg(2)]
    assert members(coalesce(pkts)) == [(0,), (1,), (2, 3)]


def test_more_flows_than_the_table_take_turns():
    """The first DP_GRO_FLOWS flows merge; the others go alone (no thrashing)."""
    pkts = [seg(i, sport=41000 + f) for i in range(3) for f in range(20)]
    frames = coalesce(pkts)
    assert members(frames)[:16] == [(f, f + 20, f + 40) for f in range(16)]
    assert sorted(k for fr in frames[16:] for k in fr.members) == [
        k for k in range(60) if k % 20 >= 16]
    assert all(len(fr.members) == 1 for fr in frames[16:])


def test_udp_coalescing_is_opt_in():
    dgrams = [udp(BODY[i * 1200:(i + 1) * 1200], ident=i) for i in range(10)]
    dgrams.append(udp(BODY[:300], ident=10))
    assert members(coalesce(dgrams)) == [(i,) for i in range(11)]
    (frame,) = coalesce(dgrams, GRO_TCP | GRO_UDP)
    hdr = VnetHdr.parse(frame.data)
    assert hdr == VnetHdr(VNET_F_NEEDS_CSUM, GSO_UDP_L4, 28, 1200, 20, 6)
    pkt = frame.data[VNET_HLEN:]
    assert ip_ok(pkt) and pkt[28:] == BODY[:12000] + BODY[:300]
    assert (pkt[24] << 8 | pkt[25]) == len(pkt) - 20
    assert int.from_bytes(pkt[26:28], "big") == pseudo_sum(pkt[12:16], pkt[16:20], 17,
                                                           len(pkt) - 20)


def test_udp_without_checksum_or_over_the_segment_limit():
    nosum = [udp(BODY[:500], ident=i, csum="zero") for i in range(3)]
    assert members(coalesce(nosum, GRO_UDP)) == [(0,), (1,), (2,)]
    many = [udp(BODY[:100], ident=i) for i in range(70)]
    assert members(coalesce(many, GRO_UDP)) == [tuple(range(64)), tuple(range(64, 70))]


def test_flags_zero_merges_nothing():
    pkts = [seg(i) for i in range(4)]
    assert members(coalesce(pkts, 0)) == [(i,) for i in range(4)]


def test_empty_batch():
    assert coalesce([]) == []


def test_checksum_completed_by_the_kernel_would_be_valid():
    """What the kernel computes for NEEDS_CSUM: sum from csum_start over the whole packet."""
    (frame,) = coalesce([seg(i) for i in range(10)])
    pkt = bytearray(frame.data[VNET_HLEN:])
    total = inet_sum(pkt[20:])
    pkt[36:38] = (~total & 0xFFFF).to_bytes(2, "big")
    assert inet_sum(pkt[20:], pseudo_sum(pkt[12:16], pkt[16:20], 6, len(pkt) - 20)) == 0xFFFF
