"""Segmentation: C and Python agree byte for byte, and every segment is what the kernel's own
TCP/UDP segmentation would put on the wire."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane.drops import Drop
from dataplane.fastpath import cnative as C
from dataplane.fastpath import pyref as P
from dataplane.fastpath.types import (
    GSO_ECN,
    GSO_NONE,
    VNET_F_DATA_VALID,
    VNET_F_NEEDS_CSUM,
    VnetHdr,
)
from offload_packets import (
    ACK, CWR, ECE, FIN, PSH, URG, UDP,
    budget, ip_ok, l4_ok, payload_len, tcp, tcp_fields, tso, udp, uso,
)

ffi, lib = C.ffi, C.lib


def payload(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


options = st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])


@st.composite
def tso_cases(draw):
    mss = draw(st.one_of(st.sampled_from([536, 1448, 1460, 8948]), st.integers(1, 3000)))
    opts = draw(options)
    ip_opts = draw(st.one_of(st.just(b""), options))
    room = 65535 - 40 - len(opts) - len(ip_opts)
    n = payload_len(draw, st, mss, room)
    flags = ACK | draw(st.sampled_from([0, PSH, FIN, CWR, ECE, URG, PSH | FIN, CWR | PSH]))
    hdr, pkt = tso(payload(draw(st.integers()), n), mss, options=opts,
                   seq=draw(st.integers(0, 2**32 - 1)), flags=flags,
                   ident=draw(st.integers(0, 0xFFFF)), df=draw(st.booleans()),
                   tos=draw(st.integers(0, 255)), ip_options=ip_opts, urg=draw(st.integers(0, 9)))
    if flags & CWR and draw(st.booleans()):
        hdr = hdr._replace(gso_type=hdr.gso_type | GSO_ECN)
    if draw(st.booleans()):         # the kernel's hdr_len is a hint: its linear length
        hdr = hdr._replace(hdr_len=draw(st.integers(hdr.hdr_len, len(pkt))))
    return hdr, pkt, draw(st.sampled_from([0, 22, 64, 7]))


def check_tcp_segments(hdr: VnetHdr, pkt: bytes, res, headroom: int) -> None:
    orig = tcp_fields(pkt)
    ihl = (pkt[0] & 0x0F) * 4
    mss, body = hdr.gso_size, orig["payload"]
    count = max(1, -(-len(body) // mss))
    assert res.drop == Drop.NONE and len(res.segments) == count
    assert res.stride == headroom + orig["hlen"] + min(mss, len(body))
    for i, seg in enumerate(res.segments):
        f = tcp_fields(seg)
        assert ip_ok(seg) and l4_ok(seg), i
        assert (seg[2] << 8 | seg[3]) == len(seg)
        assert f["id"] == (orig["id"] + i) & 0xFFFF
        assert f["seq"] == (orig["seq"] + i * mss) & 0xFFFFFFFF
        keep = orig["flags"]
        if i > 0:
            keep &= ~CWR
        if i < count - 1:
            keep &= ~(FIN | PSH)
        assert f["flags"] == keep
        assert f["payload"] == body[i * mss:(i + 1) * mss]
        # everything else in the headers is the super-packet's
        assert seg[:2] == pkt[:2] and seg[6:10] == pkt[6:10] and seg[12:ihl] == pkt[12:ihl]
        t, o = seg[ihl:], pkt[ihl:]
        assert t[:4] == o[:4] and t[8:13] == o[8:13] and t[14:16] == o[14:16]
        assert t[18:f["hlen"] - ihl] == o[18:orig["hlen"] - ihl]


@budget(300)
@given(tso_cases())
def test_tso_c_and_python_agree_and_segments_are_right(case):
    hdr, pkt, headroom = case
    res = C.gso_segment(hdr, pkt, headroom)
    assert res == P.gso_segment(hdr.pack(), pkt, headroom)
    check_tcp_segments(hdr, pkt, res, headroom)


@budget(150)
@given(size=st.integers(1, 2000), n=st.integers(0, 30000), seed=st.integers(),
       ident=st.integers(0, 0xFFFF), headroom=st.sampled_from([0, 22]))
def test_uso_c_and_python_agree_and_datagrams_are_right(size, n, seed, ident, headroom):
    n = min(n, 200 * size)
    body = payload(seed, n)
    hdr, pkt = uso(body, size, ident=ident)
    res = C.gso_segment(hdr, pkt, headroom)
    assert res == P.gso_segment(hdr, pkt, headroom)
    assert res.drop == Drop.NONE and len(res.segments) == max(1, -(-n // size))
    for i, seg in enumerate(res.segments):
        assert ip_ok(seg) and l4_ok(seg)
        assert seg[28:] == body[i * size:(i + 1) * size]
        assert (seg[24] << 8 | seg[25]) == len(seg) - 20
        assert (seg[4] << 8 | seg[5]) == (ident + i) & 0xFFFF


@budget()
@given(n=st.integers(0, 3000), seed=st.integers(), proto=st.sampled_from(["tcp", "udp"]),
       opts=options)
def test_needs_csum_single_packet_is_completed(n, seed, proto, opts):
    body = payload(seed, n)
    if proto == "tcp":
        pkt, at = tcp(body, csum="partial", options=opts, flags=ACK | PSH), 16
    else:
        pkt, at = udp(body, csum="partial"), 6
    hdr = VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, 20, at)
    res = C.gso_segment(hdr, pkt, 22)
    assert res == P.gso_segment(hdr, pkt, 22)
    (seg,) = res.segments
    assert l4_ok(seg) and ip_ok(seg)
    full = tcp(body, options=opts, flags=ACK | PSH) if proto == "tcp" else udp(body)
    assert seg == full
    assert res.stride == 22 + len(pkt)


@pytest.mark.parametrize("flags", [0, VNET_F_DATA_VALID])
def test_plain_packet_is_copied_and_trimmed(flags):
    pkt = tcp(b"x" * 100, csum="zero")          # not ours to check: passed through as is
    res = C.gso_segment(VnetHdr(flags=flags), pkt + b"trailer", 0)
    assert res == P.gso_segment(VnetHdr(flags=flags), pkt + b"trailer", 0)
    assert res.segments == [pkt] and res.stride == len(pkt)


def test_layout_in_the_output_buffer():
    """Segments at a fixed stride after untouched head-room: one sendmsg with UDP_SEGMENT."""
    hdr, pkt = tso(payload(1, 10000), 1448, options=bytes(12))
    headroom, cap = 22, 20000
    out = ffi.new("uint8_t[]", cap)
    ffi.memmove(out, b"\xa5" * cap, cap)
    res = ffi.new("struct dp_gso_result *")
    assert lib.dp_gso_segment(hdr.pack(), pkt, len(pkt), headroom, out, cap, res) == 0
    hlen = 20 + 32
    assert (res.segs, res.stride, res.seg_len, res.last_len) == (7, 22 + hlen + 1448, hlen + 1448,
                                                                  hlen + 10000 - 6 * 1448)
    assert res.total == 6 * res.stride + headroom + res.last_len
    buf = bytes(ffi.buffer(out, cap))
    expected = P.gso_segment(hdr, pkt, headroom).segments
    for i in range(res.segs):
        start = i * res.stride
        assert buf[start:start + headroom] == b"\xa5" * headroom      # the caller's to fill
        assert buf[start + headroom:start + res.stride if i < 6 else res.total] == expected[i]
    assert buf[res.total:] == b"\xa5" * (cap - res.total)              # nothing written past


def test_capacity_is_respected_exactly(impl):
    hdr, pkt = tso(payload(2, 4000), 1000)
    need = 3 * (22 + 40 + 1000) + 22 + 40 + 1000
    assert impl.gso_segment(hdr, pkt, 22, capacity=need).drop == Drop.NONE
    assert impl.gso_segment(hdr, pkt, 22, capacity=need - 1).drop == Drop.OVERSIZE


def test_sixty_four_kib_tso_cut_like_the_kernel(impl):
    body = payload(3, 65535 - 52)
    hdr, pkt = tso(body, 1448, options=b"\x01\x01\x08\x0a" + bytes(8), flags=ACK | PSH | CWR)
    res = impl.gso_segment(hdr._replace(gso_type=hdr.gso_type | GSO_ECN), pkt, 22)
    assert len(res.segments) == 46
    assert [tcp_fields(s)["flags"] for s in res.segments] == (
        [ACK | CWR] + [ACK] * 44 + [ACK | PSH])
    assert b"".join(tcp_fields(s)["payload"] for s in res.segments) == body


def test_segments_pass_scapy(impl):
    scapy = pytest.importorskip("scapy.all")
    hdr, pkt = tso(payload(4, 5000), 1400, options=b"\x02\x04\x05\xb4", flags=ACK | FIN)
    segs = impl.gso_segment(hdr, pkt).segments
    hdr, pkt = uso(payload(5, 3000), 1200)
    segs += impl.gso_segment(hdr, pkt).segments
    for seg in segs:
        p = scapy.IP(seg)
        l4 = p[scapy.TCP] if p.proto == 6 else p[scapy.UDP]
        got = (p.chksum, l4.chksum)
        del p.chksum, l4.chksum
        q = scapy.IP(bytes(p))
        assert got == (q.chksum, (q[scapy.TCP] if q.proto == 6 else q[scapy.UDP]).chksum)
    assert sum(1 for s in segs if s[9] == UDP) == 3
