"""The pure-Python reference of the hot path.

Every function here has a twin in csrc/ with the same name and meaning (exposed through
cnative.py). The property tests hold the two to identical bytes and identical drop reasons, and
`--fastpath python` runs the daemon on this module, one packet per syscall: the bottom rung of
the benchmark ladder and the behaviour of flannel's own proxy.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

from dataplane.drops import Direction, Drop
from dataplane.fastpath.types import (
    CSUM_BAD,
    CSUM_PARTIAL,
    CSUM_UNKNOWN,
    CSUM_VALID,
    GRO_FLOWS,
    GRO_TCP,
    GRO_UDP,
    GRO_UDP_MAX_SEGS,
    GSO_CAPACITY,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_UDP_L4,
    ICMP_MAX,
    IO_TUN_USO,
    IO_VNET,
    MAX_UDP_PAYLOAD,
    MODE_VXLAN,
    SPORT_RANGE,
    TCP_MIN_MSS,
    VNET_F_NEEDS_CSUM,
    VNET_HLEN,
    VXLAN_OVERHEAD,
    Action,
    Counters,
    ForwarderConfig,
    GroFrame,
    GsoResult,
    Subnet,
    Verdict,
    VnetHdr,
    int_to_ip,
    ip_to_int,
    parse_mac,
    parse_net,
)

NAME = "python"

_EGRESS, _INGRESS = Direction.EGRESS, Direction.INGRESS
_PROTO_ICMP, _PROTO_TCP, _PROTO_UDP = 1, 6, 17
_ICMP_QUERIES = frozenset((0, 8, 13, 14, 15, 16, 17, 18))   # an error may be about these only
_SLOT_DATA = 65536


def _mask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return not (a[0] ^ b[0]) & _mask(min(a[1], b[1]))


def _single_host(addr: int) -> bool:
    """RFC 1812 4.3.2.7: not 0/8, 127/8, multicast, class E or broadcast."""
    return addr >> 24 not in (0, 127) and addr >> 24 < 224


# ---- checksums (RFC 1071, RFC 1624) -------------------------------------------------------

def csum_partial(data: bytes | bytearray, initial: int = 0) -> int:
    """One's-complement sum of data added to initial, folded to 16 bits (0 only for all-zero)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total: int = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def csum_fold(total: int) -> int:
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def checksum(data: bytes | bytearray, initial: int = 0) -> int:
    """The value that goes into a header: fold and complement the sum."""
    return csum_fold(csum_partial(data, initial))


def csum_update16(check: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')."""
    return csum_fold((~check & 0xFFFF) + (~old & 0xFFFF) + new)


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


# ---- longest-prefix match -------------------------------------------------------------------

class RouteTable:
    """prefix/len -> non-negative int, longest match wins."""

    def __init__(self) -> None:
        self._routes: dict[tuple[int, int], int] = {}
        self._per_len = [0] * 33

    def set(self, cidr: str, value: int) -> None:
        prefix, plen = parse_net(cidr)
        self._set(prefix, plen, value)

    def delete(self, cidr: str) -> None:
        prefix, plen = parse_net(cidr)
        if not self._del(prefix, plen):
            raise KeyError(cidr)

    def lookup(self, addr: str) -> int:
        return self._lookup(ip_to_int(addr))

    def __len__(self) -> int:
        return len(self._routes)

    def _set(self, prefix: int, plen: int, value: int) -> None:
        if value < 0:
            raise ValueError("route values are non-negative")
        key = (prefix & _mask(plen), plen)
        if key not in self._routes:
            self._per_len[plen] += 1
        self._routes[key] = value

    def _del(self, prefix: int, plen: int) -> bool:
        key = (prefix & _mask(plen), plen)
        if self._routes.pop(key, None) is None:
            return False
        self._per_len[plen] -= 1
        return True

    def _lookup(self, addr: int) -> int:
        for plen in range(32, -1, -1):
            if self._per_len[plen]:
                value = self._routes.get((addr & _mask(plen), plen))
                if value is not None:
                    return value
        return -1


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


# ---- the forwarder --------------------------------------------------------------------------

class Forwarder:
    """One node's hot-path state: peers, per-packet decisions, counters. See csrc/forward.c."""

    impl = NAME

    def __init__(self, config: ForwarderConfig) -> None:
        self.config = config
        self._local_net, self._local_plen = parse_net(config.local_subnet)
        self._tun_addr = ip_to_int(config.tun_addr)
        self._mac = parse_mac(config.mac)
        self._ttl = config.decrements_ttl
        self._vxlan = config.mode == MODE_VXLAN
        self._routes = RouteTable()                  # subnet -> peer key
        self._peers: dict[tuple[int, int], tuple[int, bytes]] = {}   # -> (public ip, mac)
        self._by_ip: dict[int, int] = {}             # public ip -> number of peers
        self._packets = [0, 0]
        self._bytes = [0, 0]
        self._drops: dict[tuple[Direction, Drop], int] = {}
        self._batches = [0, 0]
        self._icmp = 0
        self._syscalls = [0, 0]
        self._now_ms = 0
        self._icmp_tokens = config.icmp_burst * 1000    # thousandths of an error
        self._icmp_last = 0
        self._icmp_suppressed = 0

    # peers
    def set_peer(self, subnet: Subnet, public_ip: str, mac: bytes | str = b"\0" * 6) -> None:
        """Add or replace; a subnet overlapping ours or another peer's is refused (EEXIST)."""
        key = parse_net(subnet)
        ip = ip_to_int(public_ip)
        mac = parse_mac(mac)
        if _overlap(key, (self._local_net, self._local_plen)) or any(
                k != key and _overlap(k, key) for k in self._peers):
            raise OSError(errno.EEXIST, f"{subnet} overlaps our subnet or a peer's")
        old = self._peers.get(key)
        if old is not None:
            self._unref(old[0])
        self._peers[key] = (ip, mac)
        self._by_ip[ip] = self._by_ip.get(ip, 0) + 1
        self._routes._set(key[0], key[1], 0)

    def del_peer(self, subnet: Subnet) -> None:
        key = parse_net(subnet)
        old = self._peers.pop(key, None)
        if old is None:
            raise KeyError(subnet)
        self._unref(old[0])
        self._routes._del(*key)

    def _unref(self, ip: int) -> None:
        self._by_ip[ip] -= 1
        if not self._by_ip[ip]:
            del self._by_ip[ip]

    @property
    def peer_count(self) -> int:
        return len(self._peers)

    def _peer_of(self, addr: int) -> tuple[int, bytes] | None:
        for plen in range(32, -1, -1):
            if self._routes._per_len[plen]:
                peer = self._peers.get((addr & _mask(plen), plen))
                if peer is not None:
                    return peer
        return None

    def counters(self) -> Counters:
        return Counters(list(self._packets), list(self._bytes), dict(self._drops),
                        list(self._batches), self._icmp, [0, 0], list(self._syscalls), 0,
                        self._icmp_suppressed)

    def set_clock(self, now_ms: int) -> None:
        self._now_ms = now_ms

    def _icmp_allow(self) -> bool:
        """The token bucket of csrc/forward.c:dp_icmp_allow, the same integer steps."""
        rate, cap = self.config.icmp_rate, self.config.icmp_burst * 1000
        if not rate:                       # no limit: every error goes, and is counted
            self._icmp += 1
            return True
        if self._now_ms > self._icmp_last:
            elapsed = self._now_ms - self._icmp_last
            full = elapsed >= (cap + rate - 1) // rate
            self._icmp_tokens = cap if full else min(self._icmp_tokens + elapsed * rate, cap)
            self._icmp_last = self._now_ms
        if self._icmp_tokens < 1000:
            self._icmp_suppressed += 1
            return False
        self._icmp_tokens -= 1000
        self._icmp += 1
        return True

    def _drop(self, direction: Direction, why: Drop, data: bytes = b"") -> Verdict:
        key = (direction, why)
        self._drops[key] = self._drops.get(key, 0) + 1
        return Verdict(Action.TUN if data else Action.DROP, why, None, 0, data)

    def _unforward(self, direction: Direction, length: int, why: Drop) -> None:
        self._packets[direction] -= 1
        self._bytes[direction] -= length
        key = (direction, why)
        self._drops[key] = self._drops.get(key, 0) + 1

    # decisions
    def _egress_one(self, pkt: bytes) -> Verdict:
        if pkt[:1] and pkt[0] >> 4 == 6:
            return self._drop(_EGRESS, Drop.IPV6_UNSUPPORTED)
        why = ipv4_validate(pkt)
        if why:
            return self._drop(_EGRESS, why)
        buf = bytearray(pkt[: (pkt[2] << 8) | pkt[3]])
        if len(buf) > self.config.max_inner:
            return self._drop(_EGRESS, Drop.OVERSIZE)
        peer = self._peer_of(int.from_bytes(buf[16:20], "big"))
        if peer is None:
            reply = icmp_net_unreachable(buf, self._tun_addr)
            if reply and not self._icmp_allow():
                reply = b""
            return self._drop(_EGRESS, Drop.NO_ROUTE, reply)
        if self._ttl:
            why = ttl_decrement(buf)
            if why:
                return self._drop(_EGRESS, why)
        ip, mac = peer
        self._bytes[_EGRESS] += len(buf)              # inner bytes, as on ingress
        if self._vxlan:
            buf[0:0] = vxlan_header(self.config.vni, mac, self._mac)
        self._packets[_EGRESS] += 1
        return Verdict(Action.SEND, Drop.NONE, int_to_ip(ip), self.config.port, bytes(buf))

    def _ingress_one(self, src: str, payload: bytes, udp_gso: int = 0) -> Verdict:
        src_ip = ip_to_int(src)
        if src_ip not in self._by_ip:
            return self._drop(_INGRESS, Drop.UNKNOWN_PEER)
        if self._vxlan:
            why, off = vxlan_check(payload, self.config.vni, self._mac)
            if why:
                return self._drop(_INGRESS, why)
            payload = payload[off:]
        why = ipv4_validate(payload)
        if why:
            return self._drop(_INGRESS, why)
        buf = bytearray(payload[: (payload[2] << 8) | payload[3]])
        gso = 0
        if len(buf) > self.config.max_inner and (
                not (gso := super_gso(buf, self.config.max_inner, udp_gso))
                or buf[9] == _PROTO_UDP
                and self.config.io_flags & (IO_VNET | IO_TUN_USO) == IO_VNET):
            return self._drop(_INGRESS, Drop.OVERSIZE)
        # our own subnet is never a source from the wire, whatever lease covers it
        inner_src = int.from_bytes(buf[12:16], "big")
        mask = _mask(self._local_plen)
        peer = self._peer_of(inner_src)
        if peer is None or peer[0] != src_ip or inner_src & mask == self._local_net & mask:
            return self._drop(_INGRESS, Drop.SPOOFED_SOURCE)
        if int.from_bytes(buf[16:20], "big") & mask != self._local_net & mask:
            return self._drop(_INGRESS, Drop.NOT_LOCAL)
        if self._ttl:
            why = ttl_decrement(buf)
            if why:
                return self._drop(_INGRESS, why)
        cs = CSUM_PARTIAL if gso else l4_csum(buf)
        if cs == CSUM_BAD:
            return self._drop(_INGRESS, Drop.BAD_L4_CHECKSUM)
        if cs == CSUM_PARTIAL and not gso and not self.config.io_flags & IO_VNET:
            l4_csum_complete(buf)
            cs = CSUM_VALID
        self._packets[_INGRESS] += 1
        self._bytes[_INGRESS] += len(buf)
        return Verdict(Action.TUN, Drop.NONE, None, 0, bytes(buf), cs)

    def egress(self, packets: list[bytes]) -> list[Verdict]:
        if packets:
            self._batches[_EGRESS] += 1
        return [self._egress_one(p) for p in packets]

    def ingress(self, datagrams: list[tuple[str, int, bytes]],
                hints: list[int] | None = None) -> list[Verdict]:
        """hints: per datagram, the drain's UDP_GRO size for one that is a whole tunnelled
        super-packet (dp_pkt.gso_size in; see super_gso), else 0."""
        if datagrams:
            self._batches[_INGRESS] += 1
        hints = hints or [0] * len(datagrams)
        return [self._ingress_one(src, payload, h)
                for (src, _port, payload), h in zip(datagrams, hints, strict=True)]

    # I/O: one packet per syscall, as flannel's proxy does
    def drain_tun(self, tun_fd: int, sock: socket.socket, budget: int) -> int:
        n = 0
        calls = self._syscalls
        self._now_ms = time.monotonic_ns() // 1_000_000
        while n < budget:
            calls[_EGRESS] += 1
            try:
                pkt = os.read(tun_fd, _SLOT_DATA)
            except (BlockingIOError, InterruptedError):
                break
            n += 1
            self._batches[_EGRESS] += 1
            v = self._egress_one(pkt)
            if v.action != Action.DROP:
                calls[_EGRESS] += 1
            if v.action == Action.SEND:
                try:
                    sock.sendto(v.data, (v.addr, v.port))
                except OSError as exc:
                    inner = len(v.data) - (VXLAN_OVERHEAD if self._vxlan else 0)
                    self._unforward(_EGRESS, inner, Drop.TX_TOO_BIG
                                    if exc.errno == errno.EMSGSIZE else Drop.TX_ERROR)
            elif v.action == Action.TUN:
                _tun_write(tun_fd, v.data)
        return n

    def drain_udp(self, sock: socket.socket, tun_fd: int, budget: int) -> int:
        n = 0
        calls = self._syscalls
        while n < budget:
            calls[_INGRESS] += 1
            try:
                payload, (src, port) = sock.recvfrom(_SLOT_DATA, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            n += 1
            self._batches[_INGRESS] += 1
            v = self._ingress_one(src, payload)
            if v.action == Action.TUN:
                self._deliver(tun_fd, v.data)
        return n

    def _deliver(self, tun_fd: int, pkt: bytes, udp_gso: int = 0) -> None:
        """csrc/io.c:dp_tun_deliver: a kernel peer's super-packet is cut before the write
        (udp_gso: the hint ingress() had for it, which dp_pkt.gso_size carries in C)."""
        gso = (super_gso(pkt, self.config.max_inner, udp_gso)
               if len(pkt) > self.config.max_inner else 0)
        if not gso:
            self._syscalls[_INGRESS] += 1
            if not _tun_write(tun_fd, pkt):
                self._unforward(_INGRESS, len(pkt), Drop.TUN_WRITE_ERROR)
            return
        res = gso_segment(super_vnet(pkt, gso), pkt)
        if res.drop:
            self._unforward(_INGRESS, len(pkt), res.drop)
            return
        ok = True
        for seg in res.segments:
            self._syscalls[_INGRESS] += 1
            ok = _tun_write(tun_fd, seg) and ok
        if not ok:
            self._unforward(_INGRESS, len(pkt), Drop.TUN_WRITE_ERROR)


def _tun_write(fd: int, data: bytes) -> bool:
    try:
        return os.write(fd, data) == len(data)
    except OSError:
        return False


assert ICMP_MAX >= 96


# ---- offloads: segmentation (GSO) and coalescing (GRO) ------------------------------------
#
# The references of csrc/csum64.c, gso.c and gro.c. The checks run in the same order as
# in C, so both give the same Drop for the same input; read the C files for the why.

_TCP_FIN, _TCP_PSH, _TCP_ACK, _TCP_CWR = 0x01, 0x08, 0x10, 0x80
_IP_DF, _IP_MF, _IP_OFFMASK = 0x4000, 0x2000, 0x1FFF
_ZERO_VNET = bytes(VNET_HLEN)


def csum64(data: bytes, initial: int = 0) -> int:
    """csum_partial computed another way in C (64-bit add-with-carry): the same result."""
    return csum_partial(data, initial)


def csum_copy(src: bytes, initial: int = 0) -> tuple[bytes, int]:
    """A copy of src and its csum_partial: what dp_csum_copy produces in one pass."""
    return bytes(src), csum_partial(src, initial)


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
        frame = bytearray(pkt)
        if h.flags & VNET_F_NEEDS_CSUM:
            check = checksum(frame[h.csum_start:])
            struct.pack_into("!H", frame, h.csum_start + h.csum_offset, check or 0xFFFF)
        return GsoResult(Drop.NONE, [bytes(frame)], headroom + tot)

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


_FlowKey = tuple[int, bytes, bytes]      # protocol, addresses, ports


class _Seg:
    """What a coalescing candidate offers (csrc/gro.c: struct seg)."""

    __slots__ = ("key", "seq", "id", "hlen", "pay", "proto", "tflags")
    key: _FlowKey
    seq: int
    id: int
    hlen: int
    pay: int
    proto: int
    tflags: int


class _Flow:
    """An open frame of one flow (csrc/gro.c: struct flow)."""

    __slots__ = ("first", "frame", "key", "proto", "psh", "hlen", "gso", "last_id", "next_seq",
                 "ip_len")
    first: bytes
    frame: int
    key: _FlowKey
    proto: int
    psh: bool
    hlen: int
    gso: int
    last_id: int
    next_seq: int
    ip_len: int


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
