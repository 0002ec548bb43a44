"""Header fields and small helpers the other modules share (csrc/dp.h, offload.h)."""

from __future__ import annotations

from dataplane.drops import Direction
from dataplane.fastpath.types import (
    ICMP_MAX,
    VNET_HLEN,
)

_EGRESS, _INGRESS = Direction.EGRESS, Direction.INGRESS
_PROTO_ICMP, _PROTO_TCP, _PROTO_UDP = 1, 6, 17
_ICMP_QUERIES = frozenset((0, 8, 13, 14, 15, 16, 17, 18))   # an error may be about these only
_SLOT_DATA = 65536                  # SLOT_DATA: any IPv4 packet or UDP datagram fits


def _mask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return not (a[0] ^ b[0]) & _mask(min(a[1], b[1]))


def _single_host(addr: int) -> bool:
    """RFC 1812 4.3.2.7: not 0/8, 127/8, multicast, class E or broadcast."""
    return addr >> 24 not in (0, 127) and addr >> 24 < 224



_TCP_FIN, _TCP_PSH, _TCP_ACK, _TCP_CWR = 0x01, 0x08, 0x10, 0x80
_IP_DF, _IP_MF, _IP_OFFMASK = 0x4000, 0x2000, 0x1FFF
_ZERO_VNET = bytes(VNET_HLEN)


assert ICMP_MAX >= 96
