"""IPv4, VXLAN, ICMP errors and TCP/UDP checksums: the twins of csrc/packet.c and l4csum.c."""

from __future__ import annotations

import struct

from dataplane.drops import Drop
from dataplane.fastpath.pyref.checksums import (
    checksum,
    csum_partial,
    csum_update16,
)
from dataplane.fastpath.pyref.fields import (
    _ICMP_QUERIES,
    _IP_MF,
    _IP_OFFMASK,
    _PROTO_ICMP,
    _PROTO_TCP,
    _PROTO_UDP,
    _TCP_CWR,
    _ZERO_VNET,
    _single_host,
)
from dataplane.fastpath.types import (
    CSUM_BAD,
    CSUM_PARTIAL,
    CSUM_UNKNOWN,
    CSUM_VALID,
    GSO_ECN,
    GSO_TCPV4,
    GSO_UDP_L4,
    MAX_UDP_PAYLOAD,
    SPORT_RANGE,
    TCP_MIN_MSS,
    VNET_F_NEEDS_CSUM,
    VXLAN_OVERHEAD,
    VnetHdr,
    ip_to_int,
    parse_mac,
)

# ---- IPv4 ---------------------------------------------------------------------------------

def ipv4_validate(pkt: bytes) -> Drop:
    n = len(pkt)
    if n < 20:
        return Drop.BAD_IP_VERSION if n and pkt[0] >> 4 != 4 else Drop.TRUNCATED
    if pkt[0] >> 4 != 4:
        return Drop.BAD_IP_VERSION
    ihl = (pkt[0] & 0x0F) * 4
    tot = (pkt[2] << 8) | pkt[3]
    if ihl < 20 or tot < ihl:
        return Drop.BAD_IP_HEADER
    if ihl > n or tot > n:
        return Drop.TRUNCATED
    if checksum(pkt[:ihl]) != 0:
        return Drop.BAD_IP_CHECKSUM
    return Drop.NONE


def ttl_decrement(pkt: bytearray) -> Drop:
    """Decrement TTL in place, fixing the header checksum incrementally."""
    if len(pkt) < 20:
        return Drop.TRUNCATED
    if pkt[8] <= 1:
        return Drop.TTL_EXCEEDED
    old = (pkt[8] << 8) | pkt[9]
    pkt[8] -= 1
    new = (pkt[8] << 8) | pkt[9]
    struct.pack_into("!H", pkt, 10, csum_update16((pkt[10] << 8) | pkt[11], old, new))
    return Drop.NONE


def udp_decap(payload: bytes) -> tuple[Drop, bytes]:
    """flannel udp: the payload is the inner IPv4 packet; check it and trim what follows it."""
    why = ipv4_validate(payload)
    if why:
        return why, b""
    return Drop.NONE, bytes(payload[: (payload[2] << 8) | payload[3]])


def _fnv1a(h: int, data: bytes) -> int:
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def flow_hash(pkt: bytes) -> int:
    h = 2166136261
    if len(pkt) < 20:
        return _fnv1a(h, pkt)
    h = _fnv1a(h, pkt[12:20])
    h = _fnv1a(h, pkt[9:10])
    ihl = (pkt[0] & 0x0F) * 4
    first = (((pkt[6] << 8) | pkt[7]) & 0x1FFF) == 0
    if pkt[9] in (_PROTO_TCP, _PROTO_UDP) and first and ihl >= 20 and len(pkt) >= ihl + 4:
        h = _fnv1a(h, pkt[ihl: ihl + 4])
    return h


def flow_sport(pkt: bytes, lo: int = SPORT_RANGE[0], hi: int = SPORT_RANGE[1]) -> int:
    if hi < lo:
        return lo
    return lo + flow_hash(pkt) % (hi - lo + 1)


# ---- VXLAN and outer headers ----------------------------------------------------------------

def vxlan_header(vni: int, dst_mac: bytes, src_mac: bytes) -> bytes:
    return (struct.pack("!II", 0x08000000, (vni & 0xFFFFFF) << 8) + parse_mac(dst_mac) +
            parse_mac(src_mac) + b"\x08\x00")


def vxlan_encap(pkt: bytes, vni: int, dst_mac: bytes, src_mac: bytes) -> bytes:
    """UDP payload for an inner IPv4 packet: VXLAN header, inner Ethernet, the packet."""
    return vxlan_header(vni, dst_mac, src_mac) + bytes(pkt)


def vxlan_check(buf: bytes, vni: int, own_mac: bytes) -> tuple[Drop, int]:
    own_mac = parse_mac(own_mac)
    if len(buf) < VXLAN_OVERHEAD:
        return Drop.TRUNCATED, 0
    flags, vni_word = struct.unpack_from("!II", buf)
    if flags != 0x08000000 or buf[7] != 0:
        return Drop.BAD_VXLAN_FLAGS, 0
    if vni_word >> 8 != vni & 0xFFFFFF:
        return Drop.WRONG_VNI, 0
    if buf[8:14] != own_mac:
        return Drop.WRONG_INNER_MAC, 0
    if buf[14:20] == own_mac:
        return Drop.LOOPED_INNER_MAC, 0
    if buf[20:22] != b"\x08\x00":
        return Drop.BAD_ETHERTYPE, 0
    return Drop.NONE, VXLAN_OVERHEAD


def vxlan_decap(payload: bytes, vni: int, own_mac: bytes) -> tuple[Drop, bytes]:
    """Check a VXLAN payload as a Linux receiver would; return the inner frame's payload."""
    why, off = vxlan_check(payload, vni, own_mac)
    return (why, b"") if why else (Drop.NONE, bytes(payload[off:]))


def outer_udp4(payload: bytes, src: str, dst: str, sport: int, dport: int,
               ttl: int = 64, ident: int = 0) -> bytes:
    """A whole IPv4/UDP datagram around payload, both checksums filled in."""
    if len(payload) > MAX_UDP_PAYLOAD:
        raise ValueError(f"{len(payload)} bytes do not fit in one IPv4/UDP datagram")
    udp_len = 8 + len(payload)
    saddr, daddr = ip_to_int(src), ip_to_int(dst)
    ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + udp_len, ident, 0, ttl, _PROTO_UDP,
                               0, saddr, daddr))
    struct.pack_into("!H", ip, 10, checksum(ip))
    udp = bytearray(struct.pack("!HHHH", sport, dport, udp_len, 0)) + payload
    pseudo = csum_partial(bytes(ip[12:20]), _PROTO_UDP + udp_len)
    check = checksum(udp, pseudo)
    struct.pack_into("!H", udp, 6, check or 0xFFFF)
    return bytes(ip + udp)


def icmp_net_unreachable(pkt: bytes | bytearray, src: str | int) -> bytes:
    """ICMP net-unreachable from src about pkt, or b"" when none may be sent."""
    n = len(pkt)
    if n < 20 or pkt[0] >> 4 != 4:
        return b""
    ihl = (pkt[0] & 0x0F) * 4
    if ihl < 20 or ihl > n:
        return b""
    if ((pkt[6] << 8) | pkt[7]) & 0x1FFF:
        return b""
    osrc, dst = struct.unpack_from("!II", pkt, 12)
    if dst >> 28 == 0xE or dst == 0xFFFFFFFF or not _single_host(osrc):
        return b""
    if pkt[9] == _PROTO_ICMP and (n < ihl + 1 or pkt[ihl] not in _ICMP_QUERIES):
        return b""
    quote = bytes(pkt[: min(ihl + 8, n)])
    total = 28 + len(quote)
    saddr = src if isinstance(src, int) else ip_to_int(src)
    ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, total, 0, 0, 64, _PROTO_ICMP, 0, saddr,
                               osrc))
    struct.pack_into("!H", ip, 10, checksum(ip))
    icmp = bytearray(struct.pack("!BBHI", 3, 0, 0, 0)) + quote
    struct.pack_into("!H", icmp, 2, checksum(icmp))
    return bytes(ip + icmp)


# ---- L4 checksums on ingress (csrc/l4csum.c) -----------------------------------------------

def _l4_layout(pkt: bytes | bytearray) -> tuple[int, int] | None:
    """(offset of the checksum field, bytes it covers) of a valid IPv4 packet, or None."""
    n = len(pkt)
    ihl = (pkt[0] & 0x0F) * 4
    if ((pkt[6] << 8) | pkt[7]) & (_IP_MF | _IP_OFFMASK):
        return None                                   # a fragment cannot be verified alone
    if pkt[9] == _PROTO_TCP:
        return (ihl + 16, n - ihl) if n >= ihl + 20 else None
    if pkt[9] == _PROTO_UDP:
        if n < ihl + 8 or pkt[ihl + 6: ihl + 8] == b"\0\0":
            return None
        ulen = (pkt[ihl + 4] << 8) | pkt[ihl + 5]
        return (ihl + 6, ulen) if 8 <= ulen <= n - ihl else None
    return None


def l4_csum(pkt: bytes | bytearray) -> int:
    """CSUM_* state of the TCP/UDP checksum of a valid IPv4 packet (len = its total length)."""
    layout = _l4_layout(pkt)
    if layout is None:
        return CSUM_UNKNOWN
    at, l4len = layout
    ihl = (pkt[0] & 0x0F) * 4
    psum = csum_partial(pkt[12:20], pkt[9] + l4len)
    if (pkt[at] << 8) | pkt[at + 1] == psum:
        return CSUM_PARTIAL                           # what a CHECKSUM_PARTIAL sender leaves
    return CSUM_VALID if checksum(pkt[ihl: ihl + l4len], psum) == 0 else CSUM_BAD


def l4_csum_complete(pkt: bytearray) -> None:
    """Complete a CSUM_PARTIAL checksum in place (the field holds the pseudo-header sum)."""
    layout = _l4_layout(pkt)
    if layout is None:
        return
    at, l4len = layout
    ihl = (pkt[0] & 0x0F) * 4
    check = checksum(pkt[ihl: ihl + l4len])
    struct.pack_into("!H", pkt, at, check or (0xFFFF if pkt[9] == _PROTO_UDP else 0))




def super_gso(pkt: bytes | bytearray, max_inner: int, udp_gso: int = 0) -> int:
    """A kernel peer's partial GSO super-packet (TSO or UDP_SEGMENT over veth) longer than
    max_inner: the payload size to cut it at; 0 for anything else. UDP needs udp_gso, the
    datagram size only the kernel's UDP_GRO report tells (csrc/l4csum.c)."""
    n = len(pkt)
    if n < 20:
        return 0
    ihl = (pkt[0] & 0x0F) * 4
    proto = pkt[9]
    if ((pkt[6] << 8) | pkt[7]) & (_IP_MF | _IP_OFFMASK):
        return 0
    if proto == _PROTO_TCP:
        if n < ihl + 20:
            return 0
        hlen = ihl + (pkt[ihl + 12] >> 4) * 4
        if hlen < ihl + 20 or hlen >= n or max_inner < hlen + TCP_MIN_MSS:
            return 0
        gso = max_inner - hlen
    elif proto == _PROTO_UDP:
        hlen = ihl + 8
        if (not udp_gso or n < hlen or (pkt[ihl + 4] << 8) | pkt[ihl + 5] != n - ihl
                or n - hlen <= udp_gso or hlen + udp_gso > max_inner):
            return 0
        gso = udp_gso
    else:
        return 0
    at = ihl + (16 if proto == _PROTO_TCP else 6)
    if (pkt[at] << 8) | pkt[at + 1] != csum_partial(pkt[12:20], proto + n - ihl):
        return 0
    return gso


def super_vnet(pkt: bytes, gso: int) -> bytes:
    """The virtio_net_hdr that hands such a packet on as the GSO frame it was."""
    if len(pkt) < 20:
        return _ZERO_VNET
    ihl = (pkt[0] & 0x0F) * 4
    tcp = pkt[9] == _PROTO_TCP
    if ihl < 20 or ihl + (20 if tcp else 8) > len(pkt) or (not tcp and pkt[9] != _PROTO_UDP):
        return _ZERO_VNET
    if tcp:
        ecn = GSO_ECN if pkt[ihl + 13] & _TCP_CWR else 0
        return VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4 | ecn, ihl + (pkt[ihl + 12] >> 4) * 4, gso,
                       ihl, 16).pack()
    return VnetHdr(VNET_F_NEEDS_CSUM, GSO_UDP_L4, ihl + 8, gso, ihl, 6).pack()


