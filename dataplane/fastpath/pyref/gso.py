"""Segmentation (GSO): the twin of csrc/gso.c. The checks run in the same order as in
C, so both give the same Drop for the same input; read the C file for the why."""

from __future__ import annotations

import struct

from dataplane.drops import Drop
from dataplane.fastpath.pyref.checksums import (
    checksum,
    csum_partial,
)
from dataplane.fastpath.pyref.fields import (
    _IP_MF,
    _IP_OFFMASK,
    _PROTO_TCP,
    _PROTO_UDP,
    _TCP_CWR,
    _TCP_FIN,
    _TCP_PSH,
)
from dataplane.fastpath.pyref.packet import (
    ipv4_validate,
)
from dataplane.fastpath.types import (
    GSO_CAPACITY,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_UDP_L4,
    VNET_F_NEEDS_CSUM,
    GsoResult,
    VnetHdr,
)


def _gso_check(h: VnetHdr, pkt: bytes, tot: int, ihl: int) -> tuple[Drop, int]:
    if h.gso_type == GSO_NONE:
        cs, co = h.csum_start, h.csum_offset
        if h.flags & VNET_F_NEEDS_CSUM and (cs < ihl or cs > tot or co + 2 > tot - cs):
            return Drop.BAD_VNET_HDR, 0
        return Drop.NONE, 0
    tcp = h.gso_type & ~GSO_ECN == GSO_TCPV4
    if not tcp and h.gso_type != GSO_UDP_L4:
        return Drop.BAD_VNET_HDR, 0
    frag = (pkt[6] << 8) | pkt[7]
    if (not h.flags & VNET_F_NEEDS_CSUM or frag & (_IP_MF | _IP_OFFMASK)
            or pkt[9] != (_PROTO_TCP if tcp else _PROTO_UDP) or h.csum_start != ihl
            or h.csum_offset != (16 if tcp else 6)):
        return Drop.BAD_VNET_HDR, 0
    if tcp:
        if tot < ihl + 20:
            return Drop.TRUNCATED, 0
        l4hl = (pkt[ihl + 12] >> 4) * 4
        if l4hl < 20:
            return Drop.BAD_L4_HEADER, 0
        if ihl + l4hl > tot:
            return Drop.TRUNCATED, 0
    else:
        l4hl = 8
        if tot < ihl + 8:
            return Drop.TRUNCATED, 0
        if (pkt[ihl + 4] << 8) | pkt[ihl + 5] != tot - ihl:
            return Drop.BAD_L4_HEADER, 0
    if h.hdr_len > tot or h.gso_size == 0 or ihl + l4hl + h.gso_size > 0xFFFF:
        return Drop.BAD_VNET_HDR, 0
    return Drop.NONE, ihl + l4hl


def _gso_one(pkt: bytes, ihl: int, hlen: int, off: int, plen: int, i: int, segs: int,
             tcp: bool) -> bytes:
    seg = bytearray(pkt[:hlen]) + pkt[off: off + plen]
    struct.pack_into("!HH", seg, 2, hlen + plen, (((pkt[4] << 8) | pkt[5]) + i) & 0xFFFF)
    seg[10:12] = b"\0\0"
    struct.pack_into("!H", seg, 10, checksum(seg[:ihl]))
    l4len = hlen - ihl + plen
    if tcp:
        seq = int.from_bytes(pkt[ihl + 4: ihl + 8], "big")
        struct.pack_into("!I", seg, ihl + 4, (seq + off - hlen) & 0xFFFFFFFF)
        if i > 0:
            seg[ihl + 13] &= ~_TCP_CWR & 0xFF
        if i + 1 < segs:
            seg[ihl + 13] &= ~(_TCP_FIN | _TCP_PSH) & 0xFF
        at = ihl + 16
    else:
        struct.pack_into("!H", seg, ihl + 4, l4len)
        at = ihl + 6
    seg[at: at + 2] = b"\0\0"
    check = checksum(seg[ihl:], csum_partial(seg[12:20], pkt[9] + l4len))
    struct.pack_into("!H", seg, at, check or 0xFFFF)
    return bytes(seg)


def gso_segment(vnet: bytes | VnetHdr, pkt: bytes, headroom: int = 0,
                capacity: int = GSO_CAPACITY) -> GsoResult:
    """Wire-ready IPv4 packets from one TUN read (virtio_net_hdr + packet); see csrc/gso.c.

    The C version writes segment i at out + i * stride + headroom of a `capacity`-byte buffer;
    this returns the packets and the stride, and Drop.OVERSIZE when they would not fit."""
    h = vnet if isinstance(vnet, VnetHdr) else VnetHdr.parse(vnet)
    if headroom < 0:
        raise ValueError("head-room cannot be negative")
    if len(pkt) >= 1 and pkt[0] >> 4 == 6:
        return GsoResult(Drop.IPV6_UNSUPPORTED, [], 0)
    why = ipv4_validate(pkt)
    if why:
        return GsoResult(why, [], 0)
    tot = (pkt[2] << 8) | pkt[3]
    ihl = (pkt[0] & 0x0F) * 4
    pkt = bytes(pkt[:tot])
    why, hlen = _gso_check(h, pkt, tot, ihl)
    if why:
        return GsoResult(why, [], 0)
    if headroom > 0xFFFF:
        return GsoResult(Drop.OVERSIZE, [], 0)

    if h.gso_type == GSO_NONE:
        if headroom + tot > capacity:
            return GsoResult(Drop.OVERSIZE, [], 0)
        whole = bytearray(pkt)
        if h.flags & VNET_F_NEEDS_CSUM:
            check = checksum(whole[h.csum_start:])
            struct.pack_into("!H", whole, h.csum_start + h.csum_offset, check or 0xFFFF)
        return GsoResult(Drop.NONE, [bytes(whole)], headroom + tot)

    gso = h.gso_size
    pay = tot - hlen
    segs = -(-pay // gso) if pay > gso else 1
    seg_len = hlen + min(pay, gso)
    last_len = hlen + pay - (segs - 1) * gso
    stride = headroom + seg_len
    if (segs - 1) * stride + headroom + last_len > capacity:
        return GsoResult(Drop.OVERSIZE, [], 0)
    tcp = h.gso_type & ~GSO_ECN == GSO_TCPV4
    out = [_gso_one(pkt, ihl, hlen, hlen + i * gso, gso if i + 1 < segs else last_len - hlen,
                    i, segs, tcp) for i in range(segs)]
    return GsoResult(Drop.NONE, out, stride)


