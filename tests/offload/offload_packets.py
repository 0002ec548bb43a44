"""Packet builders and an independent Internet checksum for the offload tests.

The checksum here is computed another way than in pyref.py (array of host-order words, one
swap) and than in C, so a bug shared by both implementations still shows up."""

from __future__ import annotations

import array
import struct
import sys

from hypothesis import HealthCheck, settings

from dataplane.fastpath.types import (
    GSO_TCPV4,
    GSO_UDP_L4,
    VNET_F_NEEDS_CSUM,
    VnetHdr,
)

TCP, UDP, ICMP = 6, 17, 1


def budget(examples: int = 100) -> settings:
    """Hypothesis settings for these tests: a fixed number of examples (the directory should
    run in well under 40 s), no per-example deadline (the Python reference is slow on 64 KiB)."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
DF = 0x4000
SRC, DST = bytes([10, 244, 1, 2]), bytes([10, 244, 2, 3])


def inet_sum(data: bytes, initial: int = 0) -> int:
    """Folded one's-complement sum (not complemented)."""
    data = bytes(data) + b"\0" * (len(data) % 2)
    words = array.array("H", data)
    if sys.byteorder == "little":
        words.byteswap()
    total = sum(words) + initial
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    return inet_sum(src + dst + struct.pack("!BBH", 0, proto, length))


def ip_ok(pkt: bytes) -> bool:
    ihl = (pkt[0] & 0x0F) * 4
    return inet_sum(pkt[:ihl]) == 0xFFFF


def l4_ok(pkt: bytes) -> bool:
    """TCP or UDP checksum of a whole IPv4 packet is good (UDP 0 is not accepted here)."""
    ihl = (pkt[0] & 0x0F) * 4
    tot = (pkt[2] << 8) | pkt[3]
    l4 = pkt[ihl:tot]
    if pkt[9] == UDP and l4[6:8] == b"\0\0":
        return False
    return inet_sum(l4, pseudo_sum(pkt[12:16], pkt[16:20], pkt[9], len(l4))) == 0xFFFF


def ipv4(proto: int, l4: bytes, *, src: bytes = SRC, dst: bytes = DST, ident: int = 1,
         ttl: int = 64, tos: int = 0, df: bool = True, frag: int = 0,
         ip_options: bytes = b"") -> bytes:
    ihl = 20 + len(ip_options)
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, tos, ihl + len(l4),
                                ident & 0xFFFF,
                                (DF if df else 0) | frag, ttl, proto, 0, src, dst) + ip_options)
    struct.pack_into("!H", hdr, 10, ~inet_sum(hdr) & 0xFFFF)
    return bytes(hdr) + l4


def _fill_check(hdr: bytearray, at: int, src: bytes, dst: bytes, proto: int, body: bytes,
                csum: str) -> None:
    psum = pseudo_sum(src, dst, proto, len(body))
    if csum == "partial":                       # what the kernel leaves with NEEDS_CSUM
        value = psum
    elif csum == "full":
        value = ~inet_sum(body, psum) & 0xFFFF or 0xFFFF
    else:
        value = 0
    struct.pack_into("!H", hdr, at, value)


def tcp(payload: bytes = b"", *, sport: int = 40000, dport: int = 5201, seq: int = 1000,
        ack: int = 77, flags: int = ACK, window: int = 502, options: bytes = b"",
        urg: int = 0, csum: str = "full", src: bytes = SRC, dst: bytes = DST, **ip) -> bytes:
    """An IPv4/TCP packet; csum 'full' (valid), 'partial' (pseudo-header sum) or 'zero'."""
    thl = 20 + len(options)
    hdr = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                                thl // 4 << 4, flags, window, 0, urg) + options)
    body = bytes(hdr) + payload
    _fill_check(hdr, 16, src, dst, TCP, body, csum)
    return ipv4(TCP, bytes(hdr) + payload, src=src, dst=dst, **ip)


def udp(payload: bytes = b"", *, sport: int = 40000, dport: int = 4433, csum: str = "full",
        src: bytes = SRC, dst: bytes = DST, **ip) -> bytes:
    hdr = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0))
    _fill_check(hdr, 6, src, dst, UDP, bytes(hdr) + payload, csum)
    return ipv4(UDP, bytes(hdr) + payload, src=src, dst=dst, **ip)


def tso(payload: bytes, mss: int, **kw) -> tuple[VnetHdr, bytes]:
    """A TSO super-packet as a TUN hands it out: GSO_TCPV4, NEEDS_CSUM, pseudo-header sum."""
    pkt = tcp(payload, csum="partial", **kw)
    ihl = (pkt[0] & 0x0F) * 4
    hlen = ihl + (pkt[ihl + 12] >> 4) * 4
    return VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, hlen, mss, ihl, 16), pkt


def uso(payload: bytes, size: int, **kw) -> tuple[VnetHdr, bytes]:
    pkt = udp(payload, csum="partial", **kw)
    ihl = (pkt[0] & 0x0F) * 4
    return VnetHdr(VNET_F_NEEDS_CSUM, GSO_UDP_L4, ihl + 8, size, ihl, 6), pkt


def tcp_fields(pkt: bytes) -> dict:
    ihl = (pkt[0] & 0x0F) * 4
    t = pkt[ihl:]
    thl = (t[12] >> 4) * 4
    return {"id": (pkt[4] << 8) | pkt[5], "seq": int.from_bytes(t[4:8], "big"),
            "flags": t[13], "hlen": ihl + thl, "payload": pkt[ihl + thl:]}


def payload_len(draw, st, mss: int, room: int, max_segs: int = 150) -> int:
    """A payload length: a few segments, anything up to the limit, or the limit itself.
    (Hypothesis favours small integers; sampled_from spreads the large ones evenly.)"""
    cap = min(room, max_segs * mss)
    return draw(st.one_of(st.integers(0, min(cap, 3 * mss)),
                          st.sampled_from(range(0, cap + 1, max(1, cap // 500))), st.just(cap)))
