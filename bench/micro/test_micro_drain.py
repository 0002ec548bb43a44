"""drain_tun / drain_udp with real syscalls: 64 packets of 1400 bytes per call.

The TUN is faked by a socketpair(AF_UNIX, SOCK_DGRAM) and the wire is loopback UDP, so the
numbers hold the syscall cost: C reads 64 times and sends once (sendmmsg), or receives once
(recvmmsg) and writes 64 times; the Python reference pays one syscall pair per packet.
Refilling the input and emptying the output happen outside the timing.
"""

from __future__ import annotations

import socket

import pytest

from .conftest import BATCH, egress_batch, forwarder, ingress_batch, tag

BIG = 4 << 20


def _bufsize(s: socket.socket) -> None:
    for opt in ("SO_SNDBUFFORCE", "SO_RCVBUFFORCE"):       # root: past rmem_max/wmem_max
        try:
            s.setsockopt(socket.SOL_SOCKET, getattr(socket, opt), BIG)
        except (OSError, AttributeError):
            pass


def _empty(s: socket.socket) -> int:
    n = 0
    while True:
        try:
            s.recv(70000)
            n += 1
        except BlockingIOError:
            return n


@pytest.fixture
def rig():
    dev, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    node = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    node.bind(("127.0.0.1", 0))
    port = node.getsockname()[1]
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.2", port))
    for s in (dev, kernel, node, peer):
        _bufsize(s)
        s.setblocking(False)
    yield dev, kernel, node, peer, port
    for s in (dev, kernel, node, peer):
        s.close()


def test_drain_tun(benchmark, impl, mode, rig):
    dev, kernel, node, peer, port = rig
    fwd = forwarder(impl, mode, port)             # the peer listens on 127.0.0.2:port
    batch = egress_batch()

    def refill():
        _empty(peer)
        for p in batch:
            kernel.send(p)

    tag(benchmark, impl, f"drain_tun {mode} x{BATCH}", BATCH)
    benchmark.pedantic(fwd.drain_tun, args=(dev.fileno(), node, BATCH), setup=refill,
                       rounds=300, warmup_rounds=5)
    assert _empty(peer) == BATCH
    assert fwd.counters().drops == {}


def test_drain_udp(benchmark, impl, mode, rig):
    dev, kernel, node, peer, port = rig
    fwd = forwarder(impl, mode)
    batch = [p for _, _, p in ingress_batch(impl, mode)]
    dst = node.getsockname()

    def refill():
        _empty(kernel)
        for p in batch:
            peer.sendto(p, dst)

    tag(benchmark, impl, f"drain_udp {mode} x{BATCH}", BATCH)
    benchmark.pedantic(fwd.drain_udp, args=(node, dev.fileno(), BATCH), setup=refill,
                       rounds=300, warmup_rounds=5)
    assert _empty(kernel) == BATCH
    assert fwd.counters().drops == {}
