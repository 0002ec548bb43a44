"""Segmentation refuses what it cannot trust, with a reason, and never crashes."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from dataplane.drops import Drop
from dataplane.fastpath import cnative as C
from dataplane.fastpath import pyref as P
from dataplane.fastpath.types import (
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    GSO_UDP_L4,
    VNET_F_NEEDS_CSUM,
    VnetHdr,
)
from offload_packets import ACK, budget, inet_sum, ipv4, tcp, tso, udp, uso

BODY = random.Random(9).randbytes(5000)
HDR, PKT = tso(BODY, 1448)                        # a good super-packet: hlen 40
UHDR, UPKT = uso(BODY, 1200)


def fix_ip(pkt: bytes) -> bytes:
    """Recompute the IP header checksum after a test edited the header."""
    b = bytearray(pkt)
    ihl = (b[0] & 0x0F) * 4
    b[10:12] = b"\0\0"
    struct.pack_into("!H", b, 10, ~inet_sum(b[:ihl]) & 0xFFFF)
    return bytes(b)


def edit(pkt: bytes, at: int, value: bytes, fix: bool = True) -> bytes:
    b = pkt[:at] + value + pkt[at + len(value):]
    return fix_ip(b) if fix else b


IPV6 = bytes([0x60]) + bytes(39) + BODY[:100]

CASES = {
    # the virtio_net_hdr lies
    "gso_size 0": (HDR._replace(gso_size=0), PKT, Drop.BAD_VNET_HDR),
    "gso_size beyond 64 KiB": (HDR._replace(gso_size=0xFFFF), PKT, Drop.BAD_VNET_HDR),
    "hdr_len past the packet": (HDR._replace(hdr_len=len(PKT) + 1), PKT, Drop.BAD_VNET_HDR),
    "csum_start not the L4 header": (HDR._replace(csum_start=24), PKT, Drop.BAD_VNET_HDR),
    "csum_offset not TCP's": (HDR._replace(csum_offset=6), PKT, Drop.BAD_VNET_HDR),
    "csum_offset not UDP's": (UHDR._replace(csum_offset=16), UPKT, Drop.BAD_VNET_HDR),
    "GSO without NEEDS_CSUM": (HDR._replace(flags=0), PKT, Drop.BAD_VNET_HDR),
    "UFO": (HDR._replace(gso_type=GSO_UDP), PKT, Drop.BAD_VNET_HDR),
    "TCPV6 on IPv4": (HDR._replace(gso_type=GSO_TCPV6), PKT, Drop.BAD_VNET_HDR),
    "unknown gso_type": (HDR._replace(gso_type=9), PKT, Drop.BAD_VNET_HDR),
    "ECN alone": (HDR._replace(gso_type=GSO_ECN), PKT, Drop.BAD_VNET_HDR),
    "ECN on UDP_L4": (UHDR._replace(gso_type=GSO_UDP_L4 | GSO_ECN), UPKT, Drop.BAD_VNET_HDR),
    "TCPV4 on UDP": (HDR._replace(csum_offset=6), UPKT, Drop.BAD_VNET_HDR),
    "UDP_L4 on TCP": (UHDR, PKT, Drop.BAD_VNET_HDR),
    "GSO of a fragment": (HDR, edit(PKT, 6, b"\x20\x00"), Drop.BAD_VNET_HDR),
    "GSO of a later fragment": (HDR, edit(PKT, 6, b"\x00\x10"), Drop.BAD_VNET_HDR),
    "NEEDS_CSUM inside the IP header": (
        VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, 10, 0), PKT, Drop.BAD_VNET_HDR),
    "NEEDS_CSUM past the end": (
        VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, 20, len(PKT) - 21), PKT, Drop.BAD_VNET_HDR),
    "NEEDS_CSUM start past the end": (
        VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, len(PKT) + 2, 0), PKT, Drop.BAD_VNET_HDR),
    # the packet lies or is not ours to carry
    "IPv6": (HDR._replace(gso_type=GSO_TCPV6), IPV6, Drop.IPV6_UNSUPPORTED),
    "IPv6 without GSO": (VnetHdr(), IPV6, Drop.IPV6_UNSUPPORTED),
    "IP version 5": (HDR, bytes([0x55]) + PKT[1:], Drop.BAD_IP_VERSION),
    "empty": (HDR, b"", Drop.TRUNCATED),
    "short IP header": (HDR, PKT[:19], Drop.TRUNCATED),
    "IHL < 5": (HDR, edit(PKT, 0, b"\x44"), Drop.BAD_IP_HEADER),
    "total length past the end": (HDR, PKT[:-1], Drop.TRUNCATED),
    "bad IP checksum": (HDR, edit(PKT, 8, b"\x01", fix=False), Drop.BAD_IP_CHECKSUM),
    "TCP header cut": (HDR, fix_ip(ipv4(6, PKT[20:35])), Drop.TRUNCATED),
    "TCP data offset < 5": (HDR, edit(PKT, 32, b"\x40"), Drop.BAD_L4_HEADER),
    "UDP length lies": (UHDR, edit(UPKT, 24, b"\x00\x09"), Drop.BAD_L4_HEADER),
    "UDP header cut": (UHDR, ipv4(17, b"\x00" * 7), Drop.TRUNCATED),
    "head-room absurd": (HDR, PKT, Drop.OVERSIZE),
    "too many segments for the buffer": (HDR._replace(gso_size=1), PKT, Drop.OVERSIZE),
}
HEADROOM = {"head-room absurd": 0x10000}


@pytest.mark.parametrize("name", CASES)
def test_malformed_input_gives_its_reason(impl, name):
    hdr, pkt, why = CASES[name]
    headroom = HEADROOM.get(name, 22)
    assert impl.gso_segment(hdr, pkt, headroom, capacity=64 * 1024) == (why, [], 0)


def test_tcp_data_offset_past_the_end(impl):
    t = bytearray(tcp(b"", csum="zero")[20:])
    t[12] = 0xF0                                    # 60-byte header in a 20-byte segment
    pkt = ipv4(6, bytes(t) + b"abc")
    assert impl.gso_segment(HDR, pkt).drop == Drop.TRUNCATED


def test_hdr_len_shorter_than_headers_is_a_hint_not_a_lie(impl):
    """tun.c raises a short hdr_len itself; the kernel's value is only a hint."""
    assert impl.gso_segment(HDR._replace(hdr_len=0), PKT).drop == Drop.NONE


def test_single_segment_tso_and_empty_payload_are_fine():
    for payload in (b"", b"a", BODY[:1448]):
        hdr, pkt = tso(payload, 1448, flags=ACK)
        res = C.gso_segment(hdr, pkt)
        assert res == P.gso_segment(hdr, pkt)
        assert len(res.segments) == 1 and res.segments[0] == tcp(payload)


vnet_headers = st.builds(
    VnetHdr, st.sampled_from([0, 1, 2, 3, 0xFF]),
    st.sampled_from([GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4, GSO_TCPV4 | GSO_ECN,
                     0x42]),
    st.integers(0, 0xFFFF), st.one_of(st.integers(0, 0xFFFF), st.integers(1, 2000)),
    st.one_of(st.integers(0, 0xFFFF), st.integers(18, 62)),
    st.one_of(st.integers(0, 0xFFFF), st.sampled_from([6, 16])))

SAMPLES = [(HDR, PKT), (UHDR, UPKT), tso(BODY[:3000], 100, options=bytes(12)),
           (VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, 20, 6), udp(BODY[:100], csum="partial")),
           (VnetHdr(), tcp(BODY[:10])), (HDR, IPV6)]


@st.composite
def mangled(draw):
    """A good sample, then: maybe a field of its header replaced, maybe cut, a few bytes
    changed, and maybe the IP checksum fixed so the damage gets past the IP check."""
    hdr, base = draw(st.sampled_from(SAMPLES))
    which = draw(st.integers(0, 3))
    if which == 0:
        hdr = draw(vnet_headers)
    elif which == 1:
        field = draw(st.sampled_from(VnetHdr._fields))
        hdr = hdr._replace(**{field: draw(st.integers(0, 0xFF if field in ("flags", "gso_type")
                                                      else 0xFFFF))})
    b = bytearray(base)
    if draw(st.integers(0, 3)) == 0:
        b = b[: draw(st.integers(0, len(b)))]
    for _ in range(draw(st.integers(0, 3))):
        if len(b) > 1:
            b[draw(st.sampled_from(range(1, min(len(b), 81))))] = draw(st.integers(0, 255))
    if draw(st.booleans()) and len(b) >= 20 and b[0] >> 4 == 4 and 20 <= (b[0] & 15) * 4 <= len(b):
        b = bytearray(fix_ip(bytes(b)))
    return hdr, bytes(b)


@budget(400)
@given(case=mangled(), headroom=st.sampled_from([0, 22, 22, 70000]),
       cap=st.sampled_from([0, 100, 3000, 64 * 1024, 64 * 1024]))
def test_garbage_never_crashes_and_both_agree(case, headroom, cap):
    hdr, pkt = case
    res = C.gso_segment(hdr, pkt, headroom, capacity=cap)
    assert res == P.gso_segment(hdr, pkt, headroom, capacity=cap)
    event(res.drop.name)
    if res.drop == Drop.NONE:
        assert sum(headroom + len(s) for s in res.segments) <= cap


@budget(300)
@given(case=mangled(), headroom=st.sampled_from([0, 22]), cap=st.integers(0, 70000))
def test_c_stays_inside_exact_buffers(case, headroom, cap):
    """Input and output in buffers of exactly their size, so the AddressSanitizer build
    (DATAPLANE_CMODULE=_dpc_asan) catches a read or write one byte past either."""
    hdr, pkt = case
    vnet = C.ffi.new("uint8_t[]", list(hdr.pack()))
    src = C.ffi.new("uint8_t[]", len(pkt))
    C.ffi.memmove(src, pkt, len(pkt))
    out = C.ffi.new("uint8_t[]", cap) if cap else C.ffi.NULL
    res = C.ffi.new("struct dp_gso_result *")
    why = C.lib.dp_gso_segment(vnet, src, len(pkt), headroom, out, cap, res)
    assert why == P.gso_segment(hdr, pkt, headroom, capacity=cap).drop
    if why == Drop.NONE:
        assert res.total <= cap
