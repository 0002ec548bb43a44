"""The C drains with the TUN read and written through io_uring (csrc/tun_uring.c).

The fake TUN of test_drain_io (a SOCK_DGRAM socketpair: one packet a read, like a TUN) takes
io_uring reads and writes as a TUN does, so the modes are checked here without root:
the same packets come out in the same order, in fewer syscalls. tests/daemon/test_tun_uring.py
does the same on real TUNs. The Python twin keeps plain reads (tun_uring() says OFF).
"""

from __future__ import annotations

import os
import select

import pytest

from dataplane.drops import Direction
from dataplane.fastpath import cnative, pyref
from dataplane.fastpath.types import (
    MODE_UDP,
    MODE_VXLAN,
    URING_BATCH,
    URING_MULTISHOT,
    URING_OFF,
)

from . import test_drain_io as drain
from .pkts import PEER2, inner_udp
from .test_drain_io import expected_payload, forwarder, from_peer, received

net = drain.net                                   # the fake TUN and loopback peers fixture

EG, IN = Direction.EGRESS, Direction.INGRESS
MODES = [URING_BATCH, URING_MULTISHOT]


def uring_forwarder(tun, mode, port, want):
    fwd = forwarder(cnative, mode, port)
    got = fwd.tun_uring(tun.fd, want)
    assert got == want, f"this kernel (6.7+ expected) gave mode {got} for {want}"
    return fwd


def ready(fd: int) -> bool:
    return bool(select.select([fd], [], [], 5)[0])


@pytest.mark.parametrize("want", MODES)
@pytest.mark.parametrize("mode", [MODE_UDP, MODE_VXLAN])
def test_drain_tun_reads_a_burst_in_fewer_syscalls(net, want, mode):
    tun, node, peers, port = net
    fwd = uring_forwarder(tun, mode, port, want)
    n = 150                                       # more than one 64-slot batch
    pkts = [inner_udp(dst="10.244.2.7", data=i.to_bytes(2, "big")) for i in range(n)]
    tun.inject(*pkts)
    assert ready(fwd.tun_wait_fd(tun.fd))
    assert fwd.drain_tun(tun.fd, node, 1000) == n
    got = [d for d, _ in received(peers["127.0.0.2"])]
    assert got == [expected_payload(cnative, mode, p, PEER2) for p in pkts]   # all, in order
    c = fwd.counters()
    assert c.packets[EG] == n
    sends = c.batches[EG]                         # one sendmmsg per batch
    reads = c.syscalls[EG] - sends
    # read() takes n + 1 calls (the last says EAGAIN); a batch read takes a few per 64; a
    # multishot read none, but an enter to arm it again each time its 64 buffers ran out.
    assert reads <= (3 if want == URING_MULTISHOT else 12), c.syscalls
    before = fwd.counters().syscalls[EG]
    tun.inject(*pkts[:10])                        # the next wakeup works as the first did
    assert ready(fwd.tun_wait_fd(tun.fd))
    assert fwd.drain_tun(tun.fd, node, 1000) == 10
    assert len(received(peers["127.0.0.2"])) == 10
    assert fwd.drain_tun(tun.fd, node, 1000) == 0
    if want == URING_MULTISHOT:                   # within the buffers: no read syscall at all
        assert fwd.counters().syscalls[EG] - before == 1        # the sendmmsg


@pytest.mark.parametrize("want", MODES)
def test_drain_tun_budget_keeps_the_rest_for_the_next_call(net, want):
    tun, node, peers, port = net
    fwd = uring_forwarder(tun, MODE_UDP, port, want)
    tun.inject(*[inner_udp(dst="10.244.2.7", data=bytes([i])) for i in range(10)])
    assert ready(fwd.tun_wait_fd(tun.fd))
    assert [fwd.drain_tun(tun.fd, node, 4) for _ in range(4)] == [4, 4, 2, 0]
    got = [d for d, _ in received(peers["127.0.0.2"])]
    assert [d[-1] for d in got] == list(range(10))


@pytest.mark.parametrize("want", MODES)
def test_multishot_read_rearms_after_running_out_of_buffers(net, want):
    # More packets than the ring has buffers (64) waiting at once: the multishot read ends
    # with ENOBUFS and is armed again when the batch's buffers go back; nothing is lost.
    tun, node, peers, port = net
    fwd = uring_forwarder(tun, MODE_UDP, port, want)
    for rnd in range(3):
        pkts = [inner_udp(dst="10.244.2.7", data=bytes([rnd, i])) for i in range(100)]
        tun.inject(*pkts)
        total = 0
        while total < 100 and ready(fwd.tun_wait_fd(tun.fd)):
            total += fwd.drain_tun(tun.fd, node, 1000)
        assert total == 100
        got = [d for d, _ in received(peers["127.0.0.2"])]
        assert [d[-2:] for d in got] == [bytes([rnd, i]) for i in range(100)]


@pytest.mark.parametrize("want", MODES)
@pytest.mark.parametrize("mode", [MODE_UDP, MODE_VXLAN])
def test_drain_udp_writes_a_batch_in_one_enter(net, want, mode):
    tun, node, peers, port = net
    fwd = uring_forwarder(tun, mode, port, want)
    inner = [inner_udp(src="10.244.2.7", dst="10.244.1.5", data=bytes([i])) for i in range(40)]
    for p in inner:
        peers["127.0.0.2"].sendto(from_peer(cnative, mode, p), ("127.0.0.1", port))
    assert ready(node.fileno())
    n = 0
    while n < 40 and ready(node.fileno()):
        n += fwd.drain_udp(node, tun.fd, 1000)
    assert n == 40
    out = tun.delivered()
    assert [p[-1] for p in out] == list(range(40)) and len(out[0]) == len(inner[0])
    c = fwd.counters()
    assert c.packets[IN] == 40
    # recvmmsg per batch plus one io_uring_enter per batch of writes (not 40 write()s)
    assert c.syscalls[IN] <= 2 * c.batches[IN] + 1, c.syscalls


def test_drain_udp_counts_a_failed_uring_write(net):
    tun, node, peers, port = net
    fwd = uring_forwarder(tun, MODE_UDP, port, URING_BATCH)
    tun.kernel.close()                            # the "TUN" write fails: ECONNREFUSED
    p = inner_udp(src="10.244.2.7", dst="10.244.1.5")
    peers["127.0.0.2"].sendto(p, ("127.0.0.1", port))
    assert ready(node.fileno())
    assert fwd.drain_udp(node, tun.fd, 64) == 1
    c = fwd.counters()
    assert c.packets[IN] == 0 and c.dropped(IN, cnative.Drop.TUN_WRITE_ERROR) == 1
    tun.kernel = tun.dev                          # so the fixture's close has two to close


def test_off_keeps_read_and_the_tun_fd():
    r, w = os.pipe()
    try:
        fwd = forwarder(cnative, MODE_UDP, 4789)
        assert fwd.tun_uring(r, URING_OFF) == URING_OFF
        assert fwd.tun_wait_fd(r) == r
        ref = forwarder(pyref, MODE_UDP, 4789)
        assert ref.tun_uring(r, URING_MULTISHOT) == URING_OFF and ref.tun_wait_fd(r) == r
    finally:
        os.close(r)
        os.close(w)


def test_batch_when_multishot_is_denied(net):
    tun, _node, _peers, port = net
    fwd = forwarder(cnative, MODE_UDP, port)
    assert fwd.tun_uring(tun.fd, URING_BATCH) == URING_BATCH
    assert fwd.tun_wait_fd(tun.fd) == tun.fd      # batch mode waits on the TUN itself
    assert os.get_blocking(tun.fd) is False
