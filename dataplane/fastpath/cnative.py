"""The C hot path (csrc/, compiled by cffi into _dpc) behind the same API as pyref.py.

Only the per-batch and per-packet work happens in C; this module converts arguments and
results. The daemon's hot loop calls Forwarder.drain_tun / drain_udp: one C call per readiness
event, with the GIL released for its duration.
"""

from __future__ import annotations

import errno
import functools
import importlib
import os
import socket
from typing import TYPE_CHECKING

from dataplane.drops import Direction, Drop
from dataplane.fastpath.types import (
    GRO_TCP,
    GSO_CAPACITY,
    HEADROOM,
    ICMP_MAX,
    MAX_UDP_PAYLOAD,
    SPORT_RANGE,
    VNET_HLEN,
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

NAME = "c"

# `make test-asan` points this at the AddressSanitizer/UBSan build of the same sources.
if TYPE_CHECKING:
    from dataplane.fastpath._dpc import CData, ffi, lib   # the stub, _dpc.pyi
else:
    _module = importlib.import_module(
        "dataplane.fastpath." + os.environ.get("DATAPLANE_CMODULE", "_dpc"))
    ffi, lib = _module.ffi, _module.lib


def _buf(data: bytes) -> CData:
    return ffi.from_buffer(data)


# ---- checksums ------------------------------------------------------------------------------

def csum_partial(data: bytes, initial: int = 0) -> int:
    return lib.dp_csum_partial(_buf(data), len(data), initial)


def csum_fold(total: int) -> int:
    return lib.dp_csum_fold(total)


def checksum(data: bytes, initial: int = 0) -> int:
    return lib.dp_csum_fold(lib.dp_csum_partial(_buf(data), len(data), initial))


def csum_update16(check: int, old: int, new: int) -> int:
    return lib.dp_csum_update16(check, old, new)


# ---- IPv4 -----------------------------------------------------------------------------------

def ipv4_validate(pkt: bytes) -> Drop:
    return Drop(lib.dp_ipv4_validate(_buf(pkt), len(pkt)))


def ttl_decrement(pkt: bytearray) -> Drop:
    return Drop(lib.dp_ipv4_ttl_decrement(ffi.from_buffer(pkt, require_writable=True), len(pkt)))


def udp_decap(payload: bytes) -> tuple[Drop, bytes]:
    why = ipv4_validate(payload)
    if why:
        return why, b""
    return Drop.NONE, bytes(payload[: (payload[2] << 8) | payload[3]])


def flow_hash(pkt: bytes) -> int:
    return lib.dp_flow_hash(_buf(pkt), len(pkt))


def flow_sport(pkt: bytes, lo: int = SPORT_RANGE[0], hi: int = SPORT_RANGE[1]) -> int:
    return lib.dp_flow_sport(_buf(pkt), len(pkt), lo, hi)


# ---- VXLAN and outer headers ----------------------------------------------------------------

def vxlan_header(vni: int, dst_mac: bytes, src_mac: bytes) -> bytes:
    out = ffi.new("uint8_t[]", lib.DP_VXLAN_OVERHEAD)
    lib.dp_vxlan_header(out, vni, parse_mac(dst_mac), parse_mac(src_mac))
    return bytes(ffi.buffer(out))


def vxlan_encap(pkt: bytes, vni: int, dst_mac: bytes, src_mac: bytes) -> bytes:
    return vxlan_header(vni, dst_mac, src_mac) + bytes(pkt)


def vxlan_check(buf: bytes, vni: int, own_mac: bytes) -> tuple[Drop, int]:
    off = ffi.new("size_t *")
    why = Drop(lib.dp_vxlan_check(_buf(buf), len(buf), vni, parse_mac(own_mac), off))
    return (why, 0) if why else (why, off[0])


def vxlan_decap(payload: bytes, vni: int, own_mac: bytes) -> tuple[Drop, bytes]:
    why, off = vxlan_check(payload, vni, own_mac)
    return (why, b"") if why else (Drop.NONE, bytes(payload[off:]))


def outer_udp4(payload: bytes, src: str, dst: str, sport: int, dport: int,
               ttl: int = 64, ident: int = 0) -> bytes:
    if len(payload) > MAX_UDP_PAYLOAD:      # dp_outer_udp4 would wrap the length fields
        raise ValueError(f"{len(payload)} bytes do not fit in one IPv4/UDP datagram")
    out = ffi.new("uint8_t[]", lib.DP_OUTER_HLEN + len(payload))
    ffi.memmove(out + lib.DP_OUTER_HLEN, payload, len(payload))
    lib.dp_outer_udp4(out, len(payload), ip_to_int(src), ip_to_int(dst), sport, dport, ttl, ident)
    return bytes(ffi.buffer(out))


def icmp_net_unreachable(pkt: bytes, src: str | int) -> bytes:
    out = ffi.new("uint8_t[]", ICMP_MAX)
    saddr = src if isinstance(src, int) else ip_to_int(src)
    n = lib.dp_icmp_net_unreachable(out, _buf(pkt), len(pkt), saddr)
    return bytes(ffi.buffer(out, n))


# ---- L4 checksums on ingress ----------------------------------------------------------------

def l4_csum(pkt: bytes) -> int:
    return lib.dp_l4_csum(_buf(pkt), len(pkt))


def l4_csum_complete(pkt: bytearray) -> None:
    lib.dp_l4_csum_complete(ffi.from_buffer(pkt, require_writable=True), len(pkt))


def super_gso(pkt: bytes, max_inner: int, udp_gso: int = 0) -> int:
    return lib.dp_super_gso(_buf(pkt), len(pkt), max_inner, udp_gso)


def super_vnet(pkt: bytes, gso: int) -> bytes:
    out = ffi.new("uint8_t[]", VNET_HLEN)
    lib.dp_super_vnet(out, _buf(pkt), len(pkt), gso)
    return bytes(ffi.buffer(out))


# ---- longest-prefix match -------------------------------------------------------------------

class RouteTable:
    def __init__(self) -> None:
        self._r = ffi.gc(lib.dp_routes_new(), lib.dp_routes_free)
        if self._r == ffi.NULL:
            raise MemoryError

    def set(self, cidr: str, value: int) -> None:
        if value < 0:
            raise ValueError("route values are non-negative")
        prefix, plen = parse_net(cidr)
        _check(lib.dp_routes_set(self._r, prefix, plen, value))

    def delete(self, cidr: str) -> None:
        prefix, plen = parse_net(cidr)
        if lib.dp_routes_del(self._r, prefix, plen) == -errno.ENOENT:
            raise KeyError(cidr)

    def lookup(self, addr: str) -> int:
        return lib.dp_routes_lookup(self._r, ip_to_int(addr))

    def __len__(self) -> int:
        return lib.dp_routes_len(self._r)


_ACTIONS = tuple(Action)
_DROPS = tuple(Drop)
_ip_str = functools.lru_cache(maxsize=4096)(int_to_ip)
_ip_int = functools.lru_cache(maxsize=4096)(ip_to_int)


def _check(rc: int) -> None:
    if rc < 0:
        raise OSError(-rc, os.strerror(-rc))


# ---- the forwarder --------------------------------------------------------------------------

class Forwarder:
    impl = NAME

    def __init__(self, config: ForwarderConfig) -> None:
        self.config = config
        cfg = ffi.new("struct dp_config *")
        cfg.mode = config.mode
        cfg.vni = config.vni
        cfg.mac = list(parse_mac(config.mac))
        cfg.tun_addr = ip_to_int(config.tun_addr)
        cfg.local_net, cfg.local_plen = parse_net(config.local_subnet)
        cfg.port = config.port
        cfg.ttl_decrement = int(config.decrements_ttl)
        cfg.max_inner = config.max_inner
        cfg.io_flags = config.io_flags
        cfg.icmp_rate = config.icmp_rate
        cfg.icmp_burst = config.icmp_burst
        self._f = ffi.gc(lib.dp_fwd_new(cfg), lib.dp_fwd_free)
        if self._f == ffi.NULL:
            raise MemoryError

    def set_peer(self, subnet: Subnet, public_ip: str, mac: bytes | str = b"\0" * 6) -> None:
        prefix, plen = parse_net(subnet)
        _check(lib.dp_fwd_set_peer(self._f, prefix, plen, ip_to_int(public_ip), parse_mac(mac)))

    def del_peer(self, subnet: Subnet) -> None:
        prefix, plen = parse_net(subnet)
        if lib.dp_fwd_del_peer(self._f, prefix, plen) == -errno.ENOENT:
            raise KeyError(subnet)

    @property
    def peer_count(self) -> int:
        return lib.dp_fwd_peer_count(self._f)

    def counters(self) -> Counters:
        c = ffi.new("struct dp_counters *")
        lib.dp_fwd_counters(self._f, c)
        drops = {}
        for d in Direction:
            for why in Drop:
                if c.drops[d][why]:
                    drops[(d, why)] = c.drops[d][why]
        return Counters(list(c.packets), list(c.bytes), drops, list(c.batches), c.icmp_sent,
                        list(c.super_packets), list(c.syscalls), c.gso_fallbacks,
                        c.icmp_suppressed, c.gso_sends, c.gso_too_big, c.gso_backoffs)

    def set_clock(self, now_ms: int) -> None:
        """The clock of the ICMP rate limit for egress()/ingress() calls (drains read it)."""
        lib.dp_fwd_set_clock(self._f, now_ms)

    def _batch(self, payloads: list[bytes]) -> tuple[CData, CData]:
        """Copy payloads into slots with headroom in front and room for an ICMP error."""
        n = len(payloads)
        slot = HEADROOM + max([ICMP_MAX] + [len(p) for p in payloads])
        arena = ffi.new("uint8_t[]", n * slot)
        pkts = ffi.new("struct dp_pkt[]", n)
        for i, p in enumerate(payloads):
            data = arena + i * slot + HEADROOM
            ffi.memmove(data, p, len(p))
            pkts[i].data = data
            pkts[i].len = len(p)
        return arena, pkts

    @staticmethod
    def _verdict(p: CData) -> Verdict:
        # Enum members by index and cached address strings: building the result is most of
        # what this method costs, the C decision itself is tens of nanoseconds.
        action = _ACTIONS[p.action]
        if action == Action.DROP:
            return Verdict(action, _DROPS[p.drop], None, 0, b"")
        data = ffi.buffer(p.data, p.len)[:]
        if action == Action.SEND:
            return Verdict(action, _DROPS[p.drop], _ip_str(p.addr), p.port, data)
        return Verdict(action, _DROPS[p.drop], None, 0, data, p.csum)

    def egress(self, packets: list[bytes]) -> list[Verdict]:
        if not packets:
            return []
        _arena, pkts = self._batch(packets)
        lib.dp_egress_batch(self._f, pkts, len(packets))
        return [self._verdict(pkts[i]) for i in range(len(packets))]

    def ingress(self, datagrams: list[tuple[str, int, bytes]],
                hints: list[int] | None = None) -> list[Verdict]:
        if not datagrams:
            return []
        hints = hints or [0] * len(datagrams)
        _arena, pkts = self._batch([d[2] for d in datagrams])
        for i, ((src, port, _payload), h) in enumerate(zip(datagrams, hints, strict=True)):
            pkts[i].addr = _ip_int(src)
            pkts[i].port = port
            pkts[i].gso_size = h
        lib.dp_ingress_batch(self._f, pkts, len(datagrams))
        return [self._verdict(pkts[i]) for i in range(len(datagrams))]

    # I/O: one C call drains the descriptor in batches
    def drain_tun(self, tun_fd: int, sock: socket.socket, budget: int) -> int:
        n = lib.dp_drain_tun(self._f, tun_fd, sock.fileno(), budget)
        _check(n)
        return n

    def drain_udp(self, sock: socket.socket, tun_fd: int, budget: int) -> int:
        n = lib.dp_drain_udp(self._f, sock.fileno(), tun_fd, budget)
        _check(n)
        return n

    def tun_uring(self, tun_fd: int, max_mode: int) -> int:
        """Read and write tun_fd through io_uring from now on, in the best mode up to
        max_mode (URING_*) the kernel has; returns the mode taken (URING_OFF: read/write)."""
        return int(lib.dp_fwd_tun_uring(self._f, tun_fd, max_mode))

    def tun_wait_fd(self, tun_fd: int) -> int:
        """What the event loop waits on to call drain_tun: tun_fd, or the multishot ring."""
        return int(lib.dp_fwd_tun_wait_fd(self._f, tun_fd))


# ---- offloads: segmentation (GSO) and coalescing (GRO) ------------------------------------

def csum_copy(src: bytes, initial: int = 0) -> tuple[bytes, int]:
    out = ffi.new("uint8_t[]", max(len(src), 1))
    total = lib.dp_csum_copy(out, _buf(src), len(src), initial)
    return bytes(ffi.buffer(out, len(src))), total


def gso_segment(vnet: bytes | VnetHdr, pkt: bytes, headroom: int = 0,
                capacity: int = GSO_CAPACITY) -> GsoResult:
    raw = vnet.pack() if isinstance(vnet, VnetHdr) else bytes(vnet[:VNET_HLEN])
    if len(raw) < VNET_HLEN:
        VnetHdr.parse(raw)                       # raises the same ValueError as pyref
    if headroom < 0:
        raise ValueError("head-room cannot be negative")
    out = ffi.new("uint8_t[]", max(capacity, 1))
    res = ffi.new("struct dp_gso_result *")
    why = Drop(lib.dp_gso_segment(raw, _buf(pkt), len(pkt), headroom, out, capacity, res))
    if why:
        return GsoResult(why, [], 0)
    segs = [bytes(ffi.buffer(out + i * res.stride + headroom, res.seg_len))
            for i in range(res.segs - 1)]
    segs.append(bytes(ffi.buffer(out + (res.segs - 1) * res.stride + headroom, res.last_len)))
    return GsoResult(Drop.NONE, segs, res.stride)


def gro_coalesce(packets: list[bytes], flags: int = GRO_TCP, csum: list[int] | None = None,
                 gso: list[int] | None = None) -> list[GroFrame]:
    n = len(packets)
    if (csum is not None and len(csum) != n) or (gso is not None and len(gso) != n):
        raise ValueError("csum and gso need one entry per packet")
    if n == 0:
        return []
    keep = [_buf(p) for p in packets]            # alive for the duration of the call
    pkts = ffi.new("struct dp_buf[]", n)
    for i, p in enumerate(keep):
        pkts[i].data = p
        pkts[i].len = len(packets[i])
        if csum is not None:
            pkts[i].csum = csum[i]
        if gso is not None:
            pkts[i].gso_size = gso[i]
    frames = ffi.new("struct dp_gro_frame[]", n)
    nxt = ffi.new("int32_t[]", n)
    count = lib.dp_gro_coalesce(pkts, n, flags, frames, nxt)
    out = []
    for f in range(count):
        fr = frames[f]
        buf = ffi.new("uint8_t[]", fr.len)
        assert lib.dp_gro_frame_copy(buf, ffi.addressof(frames, f), pkts, nxt) == fr.len
        members = []
        k = fr.first
        while k >= 0:
            members.append(k)
            k = nxt[k]
        out.append(GroFrame(bytes(ffi.buffer(buf, fr.len)), tuple(members)))
    return out
