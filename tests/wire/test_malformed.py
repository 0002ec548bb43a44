"""Hostile input never crashes, never reads past the packet, and never raises.

The C functions are also called here on buffers malloc'ed to the exact packet size, so that
under `make test-asan` AddressSanitizer sees the end of every packet: a read one byte past it
aborts the run. (Buffers from Python objects or small cffi allocations come from pymalloc
arenas, whose ends ASan cannot see.)
"""

from __future__ import annotations

import ctypes
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane import fastpath
from dataplane.drops import Drop
from dataplane.fastpath.types import HEADROOM, ICMP_MAX, MODE_UDP, MODE_VXLAN, ForwarderConfig

from .pkts import ipv4
from .strategies import MACS, PUBLIC_IPS, packets, u32

c = fastpath.load("c")
ffi, lib = c.ffi, c.lib
_libc = ctypes.CDLL(None)                         # under LD_PRELOAD=libasan: ASan's malloc
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]

hostile = (packets() | st.binary(max_size=100) |
           st.sampled_from([b"", b"\x45", b"\x4f" + bytes(19), b"\x45" + bytes(18),
                            b"\x46\x00\x00\x18" + bytes(16), b"\x45\x00\xff\xff" + bytes(16)]))


class Exact:
    """len(data) bytes of malloc'ed memory, `before` writable bytes in front and `after`
    behind, nothing more."""

    def __init__(self, data: bytes, before: int = 0, after: int = 0):
        self.size = before + len(data) + after
        self.addr = _libc.malloc(max(self.size, 1))
        assert self.addr
        ctypes.memset(self.addr, 0xA5, self.size)
        ctypes.memmove(self.addr + before, data, len(data))
        self.ptr = ffi.cast("uint8_t *", self.addr + before)

    def bytes(self, n: int, offset: int = 0) -> bytes:
        return ctypes.string_at(self.addr + offset, n)

    def free(self):
        _libc.free(self.addr)


def check_c_primitives(pyimpl, pkt: bytes, vni: int = 1, mac: bytes = MACS[0],
                       src: int = 0x0AF40100) -> None:
    n = len(pkt)
    buf, out = Exact(pkt), Exact(b"", after=ICMP_MAX)
    try:
        assert lib.dp_ipv4_validate(buf.ptr, n) == pyimpl.ipv4_validate(pkt)
        assert lib.dp_flow_hash(buf.ptr, n) == pyimpl.flow_hash(pkt)
        assert lib.dp_csum_partial(buf.ptr, n, 0) == pyimpl.csum_partial(pkt)
        off = ffi.new("size_t *")
        why = lib.dp_vxlan_check(buf.ptr, n, vni, mac, off)
        assert (why, off[0] if why == 0 else 0) == pyimpl.vxlan_check(pkt, vni, mac)
        m = lib.dp_icmp_net_unreachable(out.ptr, buf.ptr, n, src)
        assert out.bytes(m) == pyimpl.icmp_net_unreachable(pkt, src)
        ttl = bytearray(pkt)
        assert lib.dp_ipv4_ttl_decrement(buf.ptr, n) == pyimpl.ttl_decrement(ttl)
        assert buf.bytes(n) == ttl
    finally:
        buf.free()
        out.free()


@given(pkt=hostile, vni=u32, mac=st.sampled_from(MACS), src=u32)
def test_c_primitives_stay_inside_the_packet(pyimpl, pkt, vni, mac, src):
    check_c_primitives(pyimpl, pkt, vni, mac, src)


def boundary_packets() -> list[bytes]:
    """Every protocol the code looks into, cut at every length around the end of the IP
    header, with and without a total length that agrees."""
    out = []
    for proto in (1, 6, 17, 47):
        for options in (0, 4, 40):
            for icmp_type in (8, 3):
                full = ipv4("10.244.1.5", "10.244.2.7", bytes([icmp_type]) + bytes(range(1, 16)),
                            proto=proto, options=b"\x01" * options)
                ihl = 20 + options
                for cut in range(ihl - 1, ihl + 10):
                    out.append(full[:cut])
                    out.append(ipv4("10.244.1.5", "10.244.2.7", full[ihl:cut], proto=proto,
                                    options=b"\x01" * options))
    return out


def test_c_at_every_header_boundary(pyimpl):
    for pkt in boundary_packets():
        check_c_primitives(pyimpl, pkt)
        check_c_primitives(pyimpl, b"\0" * 8 + pkt)      # as an inner frame that is not ours


def _c_forwarder(config: ForwarderConfig):
    cfg = ffi.new("struct dp_config *")
    cfg.mode, cfg.vni, cfg.mac = config.mode, config.vni, list(config.mac)
    cfg.tun_addr = int(ipaddress.IPv4Address(config.tun_addr))
    net = ipaddress.IPv4Network(config.local_subnet, strict=False)
    cfg.local_net, cfg.local_plen = int(net.network_address), net.prefixlen
    cfg.port, cfg.ttl_decrement, cfg.max_inner = config.port, int(config.decrements_ttl), 65535
    f = ffi.gc(lib.dp_fwd_new(cfg), lib.dp_fwd_free)
    for subnet in ("10.244.2.0/24", "128.0.0.0/1"):
        net = ipaddress.IPv4Network(subnet)
        lib.dp_fwd_set_peer(f, int(net.network_address), net.prefixlen,
                            int(ipaddress.IPv4Address("127.0.0.2")), MACS[1])
    return f


@pytest.mark.parametrize("mode", [MODE_UDP, MODE_VXLAN], ids=["udp", "vxlan"])
@given(batch=st.lists(st.tuples(hostile, st.booleans(), st.sampled_from(PUBLIC_IPS)),
                      min_size=1, max_size=16))
def test_c_batches_stay_inside_their_slots(pyimpl, mode, batch):
    check_c_batches(pyimpl, mode, batch)


@pytest.mark.parametrize("mode", [MODE_UDP, MODE_VXLAN], ids=["udp", "vxlan"])
def test_c_batches_at_every_header_boundary(pyimpl, mode):
    pkts = boundary_packets()
    check_c_batches(pyimpl, mode, [(p, i % 2 == 0, PUBLIC_IPS[i % 3]) for i, p in enumerate(pkts)])


def check_c_batches(pyimpl, mode, batch: list[tuple[bytes, bool, str]]) -> None:
    """batch: (packet, wrap it in VXLAN on ingress, outer source). Each C slot holds exactly
    the headroom the API promises, the packet, and room for an ICMP error."""
    config = ForwarderConfig(mode=mode, local_subnet="10.244.1.0/24", port=8472, mac=MACS[0])
    pyfwd = pyimpl.Forwarder(config)
    pyfwd.set_peer("10.244.2.0/24", "127.0.0.2", MACS[1])
    pyfwd.set_peer("128.0.0.0/1", "127.0.0.2", MACS[1])
    f = _c_forwarder(config)
    for direction in ("egress", "ingress"):
        payloads = [pyimpl.vxlan_encap(p, 1, MACS[0], MACS[1])
                    if wrap and direction == "ingress" and mode == MODE_VXLAN else p
                    for p, wrap, _ in batch]
        srcs = [src for _, _, src in batch]
        slots = [Exact(p, before=HEADROOM, after=max(0, ICMP_MAX - len(p))) for p in payloads]
        pkts = ffi.new("struct dp_pkt[]", len(slots))
        try:
            for i, (s, p, src) in enumerate(zip(slots, payloads, srcs)):
                pkts[i].data, pkts[i].len = s.ptr, len(p)
                pkts[i].addr = int(ipaddress.IPv4Address(src))
            if direction == "egress":
                lib.dp_egress_batch(f, pkts, len(slots))
                want = pyfwd.egress(payloads)
            else:
                lib.dp_ingress_batch(f, pkts, len(slots))
                want = pyfwd.ingress([(s, 0, p) for s, p in zip(srcs, payloads)])
            for i, v in enumerate(want):
                assert (pkts[i].action, pkts[i].drop) == (v.action, v.drop)
                if v.action:
                    assert bytes(ffi.buffer(pkts[i].data, pkts[i].len)) == v.data
        finally:
            for s in slots:
                s.free()


@given(pkt=hostile, lo=st.integers(0, 0xFFFF), hi=st.integers(0, 0xFFFF))
def test_every_primitive_returns_cleanly(impl, pkt, lo, hi):
    assert impl.ipv4_validate(pkt) in Drop
    assert 0 <= impl.checksum(pkt) <= 0xFFFF
    assert 0 <= impl.flow_hash(pkt) < 2**32
    assert lo <= impl.flow_sport(pkt, lo, hi) <= max(lo, hi)
    why, inner = impl.udp_decap(pkt)
    assert inner == b"" if why else (len(inner) >= 20 and pkt.startswith(inner))
    why, inner = impl.vxlan_decap(pkt, 1, MACS[0])
    assert inner == b"" if why else inner == pkt[22:]
    reply = impl.icmp_net_unreachable(pkt, "10.244.1.0")
    assert reply == b"" or 28 + 20 <= len(reply) <= ICMP_MAX
    buf = bytearray(pkt)
    assert impl.ttl_decrement(buf) in Drop and len(buf) == len(pkt)
