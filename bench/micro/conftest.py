"""Fixtures for the micro-benchmarks: both implementations, 1400-byte packets, batches of 64.

Every benchmark records extra_info {"impl", "packets", "op"}; bench/micro/report.py turns the
saved JSON into ns per packet and the Python/C ratio.
"""

from __future__ import annotations

import struct

import pytest

from dataplane import fastpath
from dataplane.backends import VXLAN
from dataplane.fastpath.types import MODE_UDP, MODE_VXLAN, ForwarderConfig

BATCH = 64
SIZE = 1400                                   # inner IPv4 packet, the size that matters
OWN_MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")
LOCAL, PEER_SUBNET, PEER_IP = "10.244.1.0/24", "10.244.2.0/24", "127.0.0.2"
MODES = {"udp": MODE_UDP, "vxlan": MODE_VXLAN}


def ipv4_udp(src: str, dst: str, size: int = SIZE, tag: int = 0) -> bytes:
    """A valid IPv4/UDP packet of `size` bytes (UDP checksum 0: nobody here verifies it)."""
    from ipaddress import IPv4Address
    body = struct.pack("!HHHH", 40000 + tag, 53, size - 20, 0) + bytes(size - 28)
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, tag, 0, 64, 17, 0,
                                IPv4Address(src).packed, IPv4Address(dst).packed))
    total = sum(struct.unpack("!10H", hdr))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", hdr, 10, ~total & 0xFFFF)
    return bytes(hdr) + body


@pytest.fixture(params=fastpath.IMPLEMENTATIONS)
def impl(request):
    return fastpath.load(request.param)


@pytest.fixture(params=sorted(MODES))
def mode(request):
    return request.param


def forwarder(impl, mode: str, port: int = VXLAN.port):
    fwd = impl.Forwarder(ForwarderConfig(mode=MODES[mode], local_subnet=LOCAL, port=port,
                                         mac=OWN_MAC))
    fwd.set_peer(PEER_SUBNET, PEER_IP, PEER_MAC)
    return fwd


def egress_batch() -> list[bytes]:
    return [ipv4_udp("10.244.1.5", "10.244.2.7", tag=i) for i in range(BATCH)]


def ingress_batch(impl, mode: str) -> list[tuple[str, int, bytes]]:
    out = []
    for i in range(BATCH):
        pkt = ipv4_udp("10.244.2.7", "10.244.1.5", tag=i)
        payload = impl.vxlan_encap(pkt, 1, OWN_MAC, PEER_MAC) if mode == "vxlan" else pkt
        out.append((PEER_IP, VXLAN.port, payload))
    return out


def tag(benchmark, impl, op: str, packets: int = 1) -> None:
    benchmark.extra_info.update(impl=impl.NAME, op=op, packets=packets)


@pytest.fixture
def cimpl():
    return fastpath.load("c")
