"""Offload micro-benchmarks: segment a 64 KiB TSO super-packet (MSS 1448) and coalesce 44
segments, C against the Python reference.

    python3 -m pytest bench/micro/test_offload_bench.py --benchmark-only \
        --benchmark-columns=min,median,mean,ops

"raw" rows call the C library the way the adapters do (buffers allocated once, no Python objects
per packet); "api" rows go through cnative's Python signature (allocation and bytes copies
included). extra_info["GB/s"] is payload bytes over the median time.
"""

from __future__ import annotations

import random
import struct

import pytest

from dataplane.fastpath import cnative as C
from dataplane.fastpath import pyref as P
from dataplane.fastpath.types import GRO_TCP, GSO_CAPACITY, GSO_TCPV4, VNET_F_NEEDS_CSUM, VnetHdr

ffi, lib = C.ffi, C.lib
MSS = 1448
HEADROOM = 22                                   # vxlan
TS = b"\x01\x01\x08\x0a" + bytes(8)             # timestamps: a 32-byte TCP header, as Linux
HLEN = 20 + 32


def _sum(data: bytes) -> int:
    return P.csum_partial(data)


def super_packet() -> tuple[bytes, bytes, int]:
    """(virtio_net_hdr, packet, payload bytes) of the largest TSO packet a TUN hands out."""
    body = random.Random(1).randbytes(65535 - HLEN)
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, 1, 1, 8 << 4, 0x10, 502, 0, 0) + TS)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 65535, 1, 0x4000, 64, 6, 0,
                               bytes([10, 244, 1, 2]), bytes([10, 244, 2, 3])))
    struct.pack_into("!H", ip, 10, P.checksum(ip))
    struct.pack_into("!H", tcp, 16, P.csum_partial(ip[12:20], 6 + len(tcp) + len(body)))
    vnet = VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, HLEN, MSS, 20, 16).pack()
    return vnet, bytes(ip + tcp) + body, len(body)


VNET, PKT, PAYLOAD = super_packet()
SEGMENTS = C.gso_segment(VNET, PKT).segments[:44]
GRO_PAYLOAD = 44 * MSS


def gbps(benchmark, nbytes: int) -> None:
    benchmark.extra_info["GB/s"] = round(nbytes / benchmark.stats.stats.median / 1e9, 3)


def test_gso_c_raw(benchmark):
    out = ffi.new("uint8_t[]", GSO_CAPACITY)
    res = ffi.new("struct dp_gso_result *")
    src = ffi.from_buffer(PKT)
    benchmark(lib.dp_gso_segment, VNET, src, len(PKT), HEADROOM, out, GSO_CAPACITY, res)
    assert res.segs == 46
    gbps(benchmark, PAYLOAD)


def test_gso_c_api(benchmark):
    res = benchmark(C.gso_segment, VNET, PKT, HEADROOM)
    assert len(res.segments) == 46
    gbps(benchmark, PAYLOAD)


def test_gso_python(benchmark):
    res = benchmark(P.gso_segment, VNET, PKT, HEADROOM)
    assert len(res.segments) == 46
    gbps(benchmark, PAYLOAD)


@pytest.fixture(scope="module")
def gro_input():
    owners = [ffi.from_buffer(s) for s in SEGMENTS]
    pkts = ffi.new("struct dp_buf[]", len(SEGMENTS))
    for i, s in enumerate(SEGMENTS):
        pkts[i].data, pkts[i].len = owners[i], len(s)
    frames = ffi.new("struct dp_gro_frame[]", len(SEGMENTS))
    nxt = ffi.new("int32_t[]", len(SEGMENTS))
    return owners, pkts, frames, nxt


def test_gro_c_raw_plan(benchmark, gro_input):
    """The coalescing decision and headers only: what a writev of the pieces needs."""
    _, pkts, frames, nxt = gro_input
    assert benchmark(lib.dp_gro_coalesce, pkts, 44, GRO_TCP, frames, nxt) == 1
    gbps(benchmark, GRO_PAYLOAD)


def test_gro_c_raw_plan_and_copy(benchmark, gro_input):
    """Plan plus copying the frame into one buffer: what a single write() needs."""
    _, pkts, frames, nxt = gro_input
    out = ffi.new("uint8_t[]", 70000)

    def run():
        lib.dp_gro_coalesce(pkts, 44, GRO_TCP, frames, nxt)
        return lib.dp_gro_frame_copy(out, frames, pkts, nxt)

    assert benchmark(run) == 10 + HLEN + GRO_PAYLOAD
    gbps(benchmark, GRO_PAYLOAD)


def test_gro_c_api(benchmark):
    (frame,) = benchmark(C.gro_coalesce, SEGMENTS)
    assert len(frame.members) == 44
    gbps(benchmark, GRO_PAYLOAD)


def test_gro_python(benchmark):
    (frame,) = benchmark(P.gro_coalesce, SEGMENTS)
    assert len(frame.members) == 44
    gbps(benchmark, GRO_PAYLOAD)


def test_csum_copy_64k(benchmark):
    """Copy and sum in one pass (what segmentation does per payload byte)."""
    out = ffi.new("uint8_t[]", len(PKT))
    src = ffi.from_buffer(PKT)
    benchmark(lib.dp_csum_copy, out, src, len(PKT), 0)
    gbps(benchmark, len(PKT))


def test_memcpy_then_csum_64k(benchmark):
    """The two-pass alternative, for comparison."""
    out = ffi.new("uint8_t[]", len(PKT))
    src = ffi.from_buffer(PKT)

    def run():
        ffi.memmove(out, src, len(PKT))
        return lib.dp_csum_partial(out, len(PKT), 0)

    benchmark(run)
    gbps(benchmark, len(PKT))
