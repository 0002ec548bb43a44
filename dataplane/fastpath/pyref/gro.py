"""Coalescing (GRO): the twin of csrc/gro.c. The checks run in the same order as in C,
so both give the same Drop for the same input; read the C file for the why."""

from __future__ import annotations

import struct

from dataplane.fastpath.pyref.checksums import (
    checksum,
    csum_partial,
)
from dataplane.fastpath.pyref.fields import (
    _IP_DF,
    _IP_OFFMASK,
    _PROTO_TCP,
    _PROTO_UDP,
    _TCP_ACK,
    _TCP_PSH,
    _ZERO_VNET,
)
from dataplane.fastpath.pyref.packet import (
    super_vnet,
)
from dataplane.fastpath.types import (
    CSUM_BAD,
    CSUM_PARTIAL,
    CSUM_UNKNOWN,
    GRO_FLOWS,
    GRO_TCP,
    GRO_UDP,
    GRO_UDP_MAX_SEGS,
    GSO_NONE,
    GSO_TCPV4,
    GSO_UDP_L4,
    VNET_F_NEEDS_CSUM,
    VNET_HLEN,
    GroFrame,
    VnetHdr,
)


# (protocol, source and destination address, source and destination port)
_FlowKey = tuple[int, bytes, bytes]


class _Seg:
    """What a coalescing candidate offers (csrc/gro.c: struct seg)."""

    __slots__ = ("hlen", "id", "key", "pay", "proto", "seq", "tflags")
    hlen: int                               # IP + L4 header bytes
    id: int                                 # IPv4 ID
    key: _FlowKey
    pay: int                                # payload bytes after hlen
    proto: int
    seq: int                                # TCP sequence number (0 for UDP)
    tflags: int                             # TCP flags (0 for UDP)


class _Flow:
    """An open frame of one flow (csrc/gro.c: struct flow)."""

    __slots__ = (
        "first",
        "frame",
        "gso",
        "hlen",
        "ip_len",
        "key",
        "last_id",
        "next_seq",
        "proto",
        "psh",
    )
    first: bytes                            # the first member, whose headers head the frame
    frame: int                              # index into _Coalescer.frames
    gso: int                                # segment size: the first member's payload
    hlen: int
    ip_len: int                             # IPv4 total length of the merged frame
    key: _FlowKey
    last_id: int
    next_seq: int
    proto: int
    psh: bool


def _gro_candidate(p: bytes, csum: int, flags: int) -> _Seg | None:
    n = len(p)
    if (n < 20 or p[0] != 0x45 or (p[2] << 8) | p[3] != n or ((p[6] << 8) | p[7]) & ~_IP_DF
            or checksum(p[:20]) != 0):
        return None
    s = _Seg()
    s.proto = p[9]
    if s.proto == _PROTO_TCP and flags & GRO_TCP:
        if n < 40:
            return None
        thl = (p[32] >> 4) * 4
        s.tflags = p[33]
        if (thl < 20 or 20 + thl >= n or p[32] & 0x0F or s.tflags & ~(_TCP_ACK | _TCP_PSH)
                or not s.tflags & _TCP_ACK):
            return None
        s.hlen = 20 + thl
        s.seq = int.from_bytes(p[24:28], "big")
    elif s.proto == _PROTO_UDP and flags & GRO_UDP:
        if n <= 28 or (p[24] << 8) | p[25] != n - 20 or p[26:28] == b"\0\0":
            return None
        s.hlen, s.tflags, s.seq = 28, 0, 0
    else:
        return None
    if csum == CSUM_BAD or (csum == CSUM_UNKNOWN and
                            checksum(p[20:], csum_partial(p[12:20], s.proto + n - 20)) != 0):
        return None
    s.pay = n - s.hlen
    s.key = (s.proto, p[12:20], p[20:24])
    s.id = (p[4] << 8) | p[5]
    return s


def _partial_head(p: bytes) -> bytes:
    """NEEDS_CSUM at the L4 checksum field of a partial packet that goes alone."""
    if len(p) < 20 or p[0] >> 4 != 4:
        return _ZERO_VNET
    ihl = (p[0] & 0x0F) * 4
    off = {_PROTO_TCP: 16, _PROTO_UDP: 6}.get(p[9], 0)
    if not off or ihl < 20 or ihl + off + 2 > len(p):
        return _ZERO_VNET
    return VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, ihl + off + 2, 0, ihl, off).pack()


class _Coalescer:
    """One pass of gro_coalesce; the same decisions as csrc/gro.c, step by step."""

    def __init__(self, pkts: list[bytes], flags: int, csum: list[int], gso: list[int]) -> None:
        self.pkts = pkts
        self.csum = csum
        self.gso = gso
        self.flags = flags
        self.frames: list[list[int]] = []       # members of each frame
        self.heads: list[bytes | None] = []     # rewritten head of merged frames
        self.open: list[_Flow] = []

    def run(self) -> list[GroFrame]:
        for i, p in enumerate(self.pkts):
            s = None if self.gso[i] else _gro_candidate(p, self.csum[i], self.flags)
            if s is not None:
                self.add_candidate(i, s)
            else:
                self.close_related(p)
                self.new_frame(i)
        while self.open:
            self.close(len(self.open) - 1)
        out = []
        for members, head in zip(self.frames, self.heads):
            if head is None:
                k = members[0]
                p = self.pkts[k]
                vnet = (super_vnet(p, self.gso[k]) if self.gso[k] else
                        _partial_head(p) if self.csum[k] == CSUM_PARTIAL else _ZERO_VNET)
                out.append(GroFrame(vnet + p, tuple(members)))
            else:
                skip = len(head) - VNET_HLEN
                data = head + b"".join(self.pkts[k][skip:] for k in members)
                out.append(GroFrame(data, tuple(members)))
        return out

    def new_frame(self, i: int) -> None:
        self.frames.append([i])
        self.heads.append(None)

    def finish(self, f: _Flow) -> None:
        if len(self.frames[f.frame]) < 2:
            return
        tcp = f.proto == _PROTO_TCP
        vnet = VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4 if tcp else GSO_UDP_L4, f.hlen, f.gso, 20,
                       16 if tcp else 6)
        hdr = bytearray(f.first[: f.hlen])
        struct.pack_into("!H", hdr, 2, f.ip_len)
        hdr[10:12] = b"\0\0"
        struct.pack_into("!H", hdr, 10, checksum(hdr[:20]))
        psum = csum_partial(hdr[12:20], f.proto + f.ip_len - 20)
        if tcp:
            if f.psh:
                hdr[33] |= _TCP_PSH
            struct.pack_into("!H", hdr, 36, psum)
        else:
            struct.pack_into("!HH", hdr, 24, f.ip_len - 20, psum)
        self.heads[f.frame] = vnet.pack() + bytes(hdr)

    def close(self, k: int) -> None:
        self.finish(self.open.pop(k))

    def find(self, key: _FlowKey) -> int:
        for k, f in enumerate(self.open):
            if f.key == key:
                return k
        return -1

    def close_related(self, p: bytes) -> None:
        if len(p) < 20 or p[0] >> 4 != 4 or p[9] not in (_PROTO_TCP, _PROTO_UDP):
            return
        ihl = (p[0] & 0x0F) * 4
        if not ((p[6] << 8) | p[7]) & _IP_OFFMASK and ihl >= 20 and len(p) >= ihl + 4:
            k = self.find((p[9], p[12:20], p[ihl: ihl + 4]))
            if k >= 0:
                self.close(k)
            return
        for k in range(len(self.open) - 1, -1, -1):
            f = self.open[k]
            if f.proto == p[9] and f.key[1] == p[12:20]:
                self.close(k)

    def can_join(self, f: _Flow, p: bytes, s: _Seg) -> bool:
        q = f.first
        if p[1] != q[1] or p[8] != q[8] or p[6:8] != q[6:8]:
            return False
        if not (q[6] << 8) & _IP_DF and s.id != (f.last_id + 1) & 0xFFFF:
            return False
        if s.hlen != f.hlen or s.pay > f.gso or f.ip_len + s.pay > 0xFFFF:
            return False
        if f.proto == _PROTO_TCP:
            return (s.seq == f.next_seq and p[28:32] == q[28:32] and p[34:36] == q[34:36]
                    and p[40: f.hlen] == q[40: f.hlen])
        return len(self.frames[f.frame]) < GRO_UDP_MAX_SEGS

    def ends_frame(self, f: _Flow, s: _Seg) -> bool:
        if s.pay < f.gso or s.tflags & _TCP_PSH:
            return True
        return f.proto == _PROTO_UDP and len(self.frames[f.frame]) >= GRO_UDP_MAX_SEGS

    def add_candidate(self, i: int, s: _Seg) -> None:
        p = self.pkts[i]
        k = self.find(s.key)
        if k >= 0:
            f = self.open[k]
            if self.can_join(f, p, s):
                self.frames[f.frame].append(i)
                f.last_id = s.id
                f.next_seq = (f.next_seq + s.pay) & 0xFFFFFFFF
                f.ip_len += s.pay
                f.psh = bool(s.tflags & _TCP_PSH)
                if self.ends_frame(f, s):
                    self.close(k)
                return
            self.close(k)
        self.new_frame(i)
        if s.tflags & _TCP_PSH or len(self.open) == GRO_FLOWS:
            return
        f = _Flow()
        f.first, f.frame, f.key, f.proto, f.psh = p, len(self.frames) - 1, s.key, s.proto, False
        f.hlen, f.gso, f.last_id = s.hlen, s.pay, s.id
        f.next_seq = (s.seq + s.pay) & 0xFFFFFFFF
        f.ip_len = s.hlen + s.pay
        self.open.append(f)


def gro_coalesce(packets: list[bytes], flags: int = GRO_TCP, csum: list[int] | None = None,
                 gso: list[int] | None = None) -> list[GroFrame]:
    """Frames for a TUN with IFF_VNET_HDR from decapsulated IPv4 packets in arrival order:
    consecutive segments of a flow merged into GSO frames, the rest alone; see csrc/gro.c.
    csum: each packet's CSUM_* state as the ingress decision found it (default: UNKNOWN,
    verified here); gso: each packet's dp_super_gso (non-zero: goes alone as GSO_TCPV4)."""
    states = list(csum) if csum is not None else [CSUM_UNKNOWN] * len(packets)
    sizes = list(gso) if gso is not None else [0] * len(packets)
    if len(states) != len(packets) or len(sizes) != len(packets):
        raise ValueError("csum and gso need one entry per packet")
    return _Coalescer([bytes(p) for p in packets], flags, states, sizes).run()
