"""The pure-Python reference of the hot path.

Every function here has a twin in csrc/ with the same name and meaning (exposed through
cnative.py). The property tests hold the two to identical bytes and identical drop reasons, and
`--fastpath python` runs the daemon on this module, one packet per syscall: the bottom rung of
the benchmark ladder and the behaviour of flannel's own proxy.
"""

from __future__ import annotations

import os
import socket
import struct

from dataplane.drops import Direction, Drop
from dataplane.fastpath.types import (
    ICMP_MAX,
    MAX_UDP_PAYLOAD,
    MODE_VXLAN,
    SPORT_RANGE,
    VXLAN_OVERHEAD,
    Action,
    Counters,
    ForwarderConfig,
    Verdict,
    int_to_ip,
    ip_to_int,
    parse_mac,
    parse_net,
)

NAME = "python"

_EGRESS, _INGRESS = Direction.EGRESS, Direction.INGRESS
_PROTO_ICMP, _PROTO_TCP, _PROTO_UDP = 1, 6, 17
_ICMP_ERRORS = frozenset((3, 4, 5, 11, 12))
_SLOT_DATA = 65536


def _mask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0


# ---- checksums (RFC 1071, RFC 1624) -------------------------------------------------------

def csum_partial(data: bytes, initial: int = 0) -> int:
    """One's-complement sum of data added to initial, folded to 16 bits (0 only for all-zero)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def csum_fold(total: int) -> int:
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def checksum(data: bytes, initial: int = 0) -> int:
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


def icmp_net_unreachable(pkt: bytes, src: str | int) -> bytes:
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
    if dst >> 28 == 0xE or dst == 0xFFFFFFFF or osrc == 0 or osrc >> 28 == 0xE:
        return b""
    if pkt[9] == _PROTO_ICMP and (n < ihl + 1 or pkt[ihl] in _ICMP_ERRORS):
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

    # peers
    def set_peer(self, subnet: str, public_ip: str, mac: bytes | str = b"\0" * 6) -> None:
        key = parse_net(subnet)
        ip = ip_to_int(public_ip)
        old = self._peers.get(key)
        if old is not None:
            self._unref(old[0])
        self._peers[key] = (ip, parse_mac(mac))
        self._by_ip[ip] = self._by_ip.get(ip, 0) + 1
        self._routes._set(key[0], key[1], 0)

    def del_peer(self, subnet: str) -> None:
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
                        list(self._batches), self._icmp)

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
        why = ipv4_validate(pkt)
        if why:
            return self._drop(_EGRESS, why)
        buf = bytearray(pkt[: (pkt[2] << 8) | pkt[3]])
        if len(buf) > self.config.max_inner:
            return self._drop(_EGRESS, Drop.OVERSIZE)
        peer = self._peer_of(int.from_bytes(buf[16:20], "big"))
        if peer is None:
            reply = icmp_net_unreachable(buf, self._tun_addr)
            if reply:
                self._icmp += 1
            return self._drop(_EGRESS, Drop.NO_ROUTE, reply)
        if self._ttl:
            why = ttl_decrement(buf)
            if why:
                return self._drop(_EGRESS, why)
        ip, mac = peer
        if self._vxlan:
            buf[0:0] = vxlan_header(self.config.vni, mac, self._mac)
        self._packets[_EGRESS] += 1
        self._bytes[_EGRESS] += len(buf)
        return Verdict(Action.SEND, Drop.NONE, int_to_ip(ip), self.config.port, bytes(buf))

    def _ingress_one(self, src: str, payload: bytes) -> Verdict:
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
        if len(buf) > self.config.max_inner:
            return self._drop(_INGRESS, Drop.OVERSIZE)
        peer = self._peer_of(int.from_bytes(buf[12:16], "big"))
        if peer is None or peer[0] != src_ip:
            return self._drop(_INGRESS, Drop.SPOOFED_SOURCE)
        mask = _mask(self._local_plen)
        if int.from_bytes(buf[16:20], "big") & mask != self._local_net & mask:
            return self._drop(_INGRESS, Drop.NOT_LOCAL)
        if self._ttl:
            why = ttl_decrement(buf)
            if why:
                return self._drop(_INGRESS, why)
        self._packets[_INGRESS] += 1
        self._bytes[_INGRESS] += len(buf)
        return Verdict(Action.TUN, Drop.NONE, None, 0, bytes(buf))

    def egress(self, packets: list[bytes]) -> list[Verdict]:
        if packets:
            self._batches[_EGRESS] += 1
        return [self._egress_one(p) for p in packets]

    def ingress(self, datagrams: list[tuple[str, int, bytes]]) -> list[Verdict]:
        if datagrams:
            self._batches[_INGRESS] += 1
        return [self._ingress_one(src, payload) for src, _port, payload in datagrams]

    # I/O: one packet per syscall, as flannel's proxy does
    def drain_tun(self, tun_fd: int, sock: socket.socket, budget: int) -> int:
        n = 0
        while n < budget:
            try:
                pkt = os.read(tun_fd, _SLOT_DATA)
            except (BlockingIOError, InterruptedError):
                break
            n += 1
            self._batches[_EGRESS] += 1
            v = self._egress_one(pkt)
            if v.action == Action.SEND:
                try:
                    sock.sendto(v.data, (v.addr, v.port))
                except OSError:
                    self._unforward(_EGRESS, len(v.data), Drop.TX_ERROR)
            elif v.action == Action.TUN:
                _tun_write(tun_fd, v.data)
        return n

    def drain_udp(self, sock: socket.socket, tun_fd: int, budget: int) -> int:
        n = 0
        while n < budget:
            try:
                payload, (src, port) = sock.recvfrom(_SLOT_DATA, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            n += 1
            self._batches[_INGRESS] += 1
            v = self._ingress_one(src, payload)
            if v.action == Action.TUN and not _tun_write(tun_fd, v.data):
                self._unforward(_INGRESS, len(v.data), Drop.TUN_WRITE_ERROR)
        return n


def _tun_write(fd: int, data: bytes) -> bool:
    try:
        return os.write(fd, data) == len(data)
    except OSError:
        return False


assert ICMP_MAX >= 96
