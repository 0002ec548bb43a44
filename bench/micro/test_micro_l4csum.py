"""What judging inner TCP/UDP checksums costs on ingress: 64 packets of 1400 bytes whose
checksum is absent (UDP 0: nothing to judge), complete (verified: one pass over the payload),
or partial as a kernel sender on veth leaves it (completed in place without offloads: one pass;
left to the TUN as NEEDS_CSUM with them: no pass). The C batch core alone, and drain_udp with
real syscalls (the no-offload path, where nothing else reads the payload)."""

from __future__ import annotations

import socket
import struct

import pytest

from dataplane.backends import VXLAN
from dataplane.fastpath.types import IO_VNET, MODE_VXLAN, ForwarderConfig

from .conftest import BATCH, LOCAL, OWN_MAC, PEER_IP, PEER_MAC, PEER_SUBNET, SIZE, ipv4_udp
from .test_micro_drain import _bufsize, _empty
from .test_micro_forwarder import CBatch


def _fold(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def udp_with(csum: str, tag: int) -> bytes:
    pkt = bytearray(ipv4_udp("10.244.2.7", "10.244.1.5", tag=tag))
    pkt[28:] = bytes((i * 7 + tag) & 0xFF for i in range(SIZE - 28))
    psum = _fold(bytes(pkt[12:20]) + struct.pack("!BBH", 0, 17, SIZE - 20))
    if csum == "partial":
        struct.pack_into("!H", pkt, 26, psum)
    elif csum == "full":
        sub = _fold(bytes(pkt[12:20]) + struct.pack("!BBH", 0, 17, SIZE - 20) + bytes(pkt[20:]))
        struct.pack_into("!H", pkt, 26, ~sub & 0xFFFF or 0xFFFF)
    return bytes(pkt)


def batch(cimpl, csum: str) -> list[bytes]:
    return [cimpl.vxlan_encap(udp_with(csum, i), 1, OWN_MAC, PEER_MAC) for i in range(BATCH)]


def forwarder(cimpl, io_flags: int = 0, port: int = VXLAN.port):
    fwd = cimpl.Forwarder(ForwarderConfig(mode=MODE_VXLAN, local_subnet=LOCAL, port=port,
                                          mac=OWN_MAC, io_flags=io_flags))
    fwd.set_peer(PEER_SUBNET, PEER_IP, PEER_MAC)
    return fwd


@pytest.mark.parametrize("io", ["plain", "vnet"])
@pytest.mark.parametrize("csum", ["none", "full", "partial"])
def test_ingress_batch_l4(benchmark, cimpl, csum, io):
    fwd = forwarder(cimpl, IO_VNET if io == "vnet" else 0)
    b = CBatch(cimpl, batch(cimpl, csum), src=0x7F000002)
    benchmark.extra_info.update(impl="c-core", op=f"ingress vxlan l4={csum} {io} x{BATCH}",
                                packets=BATCH)
    benchmark.pedantic(cimpl.lib.dp_ingress_batch, args=(fwd._f, b.pkts, BATCH),
                       setup=b.reset, rounds=2000, warmup_rounds=50)
    assert [b.pkts[i].action for i in range(BATCH)] == [2] * BATCH
    assert fwd.counters().drops == {}


@pytest.mark.parametrize("csum", ["none", "full", "partial"])
def test_drain_udp_l4(benchmark, cimpl, csum):
    dev, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    node = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    node.bind(("127.0.0.1", 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((PEER_IP, 0))
    try:
        for s in (dev, kernel, node, peer):
            _bufsize(s)
            s.setblocking(False)
        fwd = forwarder(cimpl)
        payloads = batch(cimpl, csum)

        def refill():
            _empty(kernel)
            for p in payloads:
                peer.sendto(p, node.getsockname())

        benchmark.extra_info.update(impl="c", op=f"drain_udp vxlan l4={csum} x{BATCH}",
                                    packets=BATCH)
        benchmark.pedantic(fwd.drain_udp, args=(node, dev.fileno(), BATCH), setup=refill,
                           rounds=200, warmup_rounds=5)
        assert _empty(kernel) == BATCH
        assert fwd.counters().drops == {}
    finally:
        for s in (dev, kernel, node, peer):
            s.close()
