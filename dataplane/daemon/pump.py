"""The hot loop's Python side: readiness callbacks that hand each wakeup to the fast path.

    TUN readable  -> fwd.drain_tun(tun, sock, budget)   (C: read x n, decide, sendmmsg)
    UDP readable  -> fwd.drain_udp(sock, tun, budget)   (C: recvmmsg, decide, write x n)

A callback does no per-packet work in Python with the C fast path; with `--fastpath python`
the same calls run pyref.py, one packet per syscall.

With several workers (IFF_MULTI_QUEUE), each has its own TUN queue, its own forwarder (the
control plane updates every one, on the worker's own loop) and its own thread and event loop;
the C calls release the GIL, so workers forward in parallel. Receive sockets share the port
through SO_REUSEPORT; each worker sends from a port of its own, so the flows it carries land
on one receiving worker at the peer (the kernel hashes the 4-tuple) and spread across them.
The TUN steers a flow's replies to the queue that last wrote it: the same worker.

Busy-polling (--busy-poll USEC): a wakeup costs an interrupt and a context switch (about
20 us on a VM), four per round trip through two nodes. After a wakeup that moved packets the
callback keeps draining both directions, non-blocking, until USEC pass with nothing found,
then returns to the loop to sleep. Each poll round is two C calls that move whatever is
queued; Python only reads the clock between them. A round that found nothing yields the CPU
(sched_yield): where busy parties outnumber cores (both nodes, the pods' endpoints and the
softirqs on two CPUs), a spinner holding its CPU delays the very task whose packet it waits
for; with nothing else runnable the call returns at once.
"""

from __future__ import annotations

import asyncio
import errno
import os
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dataplane.fastpath.api import Forwarder

log = logging.getLogger(__name__)

# Packets one wakeup may move before yielding to the loop (timers, the control plane).
BUDGET = 512
SOCKET_BUFFER = 7 << 20        # enough for a few GSO bursts of every flow in flight
# asm-generic/socket.h: set a buffer beyond net.core.[rw]mem_max (needs CAP_NET_ADMIN)
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
# linux/udp.h
SOL_UDP, UDP_SEGMENT, UDP_GRO = 17, 103, 104
# linux/in.h: path MTU discovery on, but a datagram larger than the path MTU is fragmented
IP_MTU_DISCOVER, IP_PMTUDISC_WANT = 10, 1
# asm-generic/socket.h: busy-poll the device queue on receive (drivers with NAPI; veth has none)
SO_BUSY_POLL, SO_PREFER_BUSY_POLL = 46, 69
BUSY_POLL_MAX = 10_000          # --busy-poll's ceiling in microseconds
# One callback polls at most this long before letting the loop run its timers and the control
# plane (it carries on from a call_soon, so the poll does not stop).
BUSY_POLL_SLICE_NS = 2_000_000


def _buffers(sock: socket.socket) -> None:
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)


def open_udp_socket(address: str, port: int, reuseport: bool = False) -> socket.socket:
    """A tunnel socket. Left blocking: a full send buffer pushes back on the sender instead of
    dropping; receives use MSG_DONTWAIT."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Whatever net.ipv4.ip_no_pmtu_disc says: when the path MTU to a peer falls below our
        # datagrams (a smaller route MTU, an ICMP "fragmentation needed", forged or not), the
        # kernel fragments them rather than refusing them (csrc/udp_adapter.c).
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_WANT)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        _buffers(sock)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def open_worker_sockets(address: str, port: int, workers: int
                        ) -> list[tuple[socket.socket, socket.socket]]:
    """(receive, send) socket pairs, one per worker. One worker sends from the tunnel port
    itself, as flannel does; several share it with SO_REUSEPORT and send from ports of their
    own. A plain bind first proves the port free: a socket already on it (another daemon,
    flanneld) refuses it, whatever options that one set."""
    if workers == 1:
        sock = open_udp_socket(address, port)
        return [(sock, sock)]
    open_udp_socket(address, port).close()
    pairs: list[tuple[socket.socket, socket.socket]] = []
    try:
        for _ in range(workers):
            pairs.append((open_udp_socket(address, port, reuseport=True),
                          open_udp_socket(address, 0)))
    except BaseException:
        close_sockets(pairs)
        raise
    return pairs


def close_sockets(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    for recv, send in pairs:
        recv.close()
        send.close()


def socket_buffers(sock: socket.socket) -> tuple[int, int]:
    """(receive, send) buffer sizes the kernel granted (it reports twice what was asked)."""
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))


def socket_busy_poll(socks: list[socket.socket], usec: int) -> None:
    """SO_BUSY_POLL (and SO_PREFER_BUSY_POLL) on the tunnel sockets: the kernel then spins on
    the underlay device's queue in recvmmsg instead of waiting for its interrupt. Only drivers
    with NAPI busy-poll support honour it (not veth); a refusal costs nothing but a debug line,
    the poll loop in Pump works either way."""
    refused = []
    for sock in socks:
        for name, opt in (("SO_BUSY_POLL", SO_BUSY_POLL), ("SO_PREFER_BUSY_POLL",
                                                            SO_PREFER_BUSY_POLL)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, usec if opt == SO_BUSY_POLL else 1)
            except OSError as exc:
                refused.append(f"{name}: {exc.strerror}")
    if refused:
        log.debug("busy-poll: the kernel refused %s; polling from userspace only",
                  ", ".join(sorted(set(refused))))
    else:
        log.debug("busy-poll: SO_BUSY_POLL %d us on %d sockets", usec, len(socks))


def udp_offloads(sock: socket.socket) -> tuple[bool, bool]:
    """Turn on UDP_GRO and probe UDP_SEGMENT (a per-socket default of 0 sets nothing); returns
    (gso, gro) as the kernel allowed them. Kernels before 4.18/5.0 say no to one or both."""
    gso = gro = True
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
    except OSError:
        gso = False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        gro = False
    return gso, gro


class Pump:
    """One worker's readers: a TUN queue and a receive socket, on one event loop.

    busy_poll_us > 0: after a wakeup that moved packets, poll both directions until a window
    of that many microseconds finds nothing (see the module's docstring). `clock` (ns) and
    `yield_cpu` are injectable for tests."""

    def __init__(self, fwd: Forwarder, tun_fd: int, recv_sock: socket.socket,
                 send_sock: socket.socket | None = None, budget: int = BUDGET,
                 busy_poll_us: int = 0,
                 clock: Callable[[], int] = time.monotonic_ns,
                 yield_cpu: Callable[[], None] = os.sched_yield) -> None:
        self.fwd = fwd
        self.tun_fd = tun_fd
        self.wait_fd = fwd.tun_wait_fd(tun_fd)     # the TUN, or its io_uring (multishot)
        self.recv_sock = recv_sock
        self.send_sock = send_sock or recv_sock
        self.budget = budget
        self.busy_poll_ns = busy_poll_us * 1000
        self._clock = clock
        self._yield_cpu = yield_cpu
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_error = 0.0
        # Busy-poll rounds (one drain of each direction) and the rounds that moved packets:
        # plain ints, bumped once per round on the worker's own thread.
        self.poll_rounds = 0
        self.poll_hits = 0

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._loop.add_reader(self.wait_fd, self._on_tun)
        self._loop.add_reader(self.recv_sock.fileno(), self._on_udp)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.wait_fd)
            self._loop.remove_reader(self.recv_sock.fileno())
            self._loop = None

    def _on_tun(self) -> None:
        if self._drain_tun() and self.busy_poll_ns:
            self._busy_poll()

    def _on_udp(self) -> None:
        if self._drain_udp() and self.busy_poll_ns:
            self._busy_poll()

    def _drain_tun(self) -> int:
        try:
            moved: int = self.fwd.drain_tun(self.tun_fd, self.send_sock, self.budget)
            return moved
        except OSError as exc:
            self._error("reading the TUN", exc)
            return 0

    def _drain_udp(self) -> int:
        try:
            moved: int = self.fwd.drain_udp(self.recv_sock, self.tun_fd, self.budget)
            return moved
        except OSError as exc:
            if exc.errno != errno.ECONNREFUSED:     # an ICMP error about an earlier send
                self._error("receiving datagrams", exc)
            return 0

    def _busy_poll(self) -> None:
        """Drain both directions until one window passes with nothing moved: then return, and
        the loop sleeps in epoll until the next interrupt. A window that moves packets starts
        a new one. After BUSY_POLL_SLICE_NS the loop gets a turn and polling resumes."""
        clock, window = self._clock, self.busy_poll_ns
        now = clock()
        deadline, slice_end = now + window, now + BUSY_POLL_SLICE_NS
        rounds = hits = 0
        while now < deadline:
            if now >= slice_end:
                if self._loop is not None:
                    self._loop.call_soon(self._resume_poll)
                break
            moved = self._drain_tun() + self._drain_udp()
            rounds += 1
            now = clock()
            if moved:
                hits += 1
                deadline = now + window
            else:
                self._yield_cpu()       # let a task woken meanwhile run (module docstring)
        self.poll_rounds += rounds
        self.poll_hits += hits

    def _resume_poll(self) -> None:
        if self._loop is not None:          # not stopped meanwhile
            self._busy_poll()

    def _error(self, what: str, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._last_error > 5:         # at most one line per 5 s from the hot path
            self._last_error = now
            log.warning("error %s: %s", what, exc)


class Worker:
    """A Pump on a thread and event loop of its own (multi-queue)."""

    def __init__(self, index: int, pump: Pump) -> None:
        self.index = index
        self.pump = pump
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"worker-{index}", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        import uvloop

        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.pump.start(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.pump.stop()
            self.loop.close()

    def call(self, fn: Callable[..., object], *args: object) -> None:
        """Run fn(*args) on the worker's own thread: the forwarder is not shared state."""
        assert self.loop is not None, "call() before start()"
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
