"""The hot loop's Python side: readiness callbacks that hand each wakeup to the fast path.

    TUN readable  -> fwd.drain_tun(tun, sock, budget)   (C: read x n, decide, sendmmsg)
    UDP readable  -> fwd.drain_udp(sock, tun, budget)   (C: recvmmsg, decide, write x n)

A callback does no per-packet work in Python with the C fast path; with `--fastpath python`
the same calls run pyref.py, one packet per syscall.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

log = logging.getLogger(__name__)

# Packets one wakeup may move before yielding to the loop (timers, the control plane).
BUDGET = 512
SOCKET_BUFFER = 4 << 20
# asm-generic/socket.h: set a buffer beyond net.core.[rw]mem_max (needs CAP_NET_ADMIN)
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
# linux/udp.h
SOL_UDP, UDP_SEGMENT, UDP_GRO = 17, 103, 104


def open_udp_socket(address: str, port: int) -> socket.socket:
    """The node's tunnel socket. Left blocking: a full send buffer pushes back on the sender
    instead of dropping; receives use MSG_DONTWAIT."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF),
                             (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


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


class Datapath:
    def __init__(self, fwd, tun_fd: int, sock: socket.socket, budget: int = BUDGET) -> None:
        self.fwd = fwd
        self.tun_fd = tun_fd
        self.sock = sock
        self.budget = budget
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_error = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.tun_fd, self._on_tun)
        self._loop.add_reader(self.sock.fileno(), self._on_udp)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.tun_fd)
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None

    def _on_tun(self) -> None:
        try:
            self.fwd.drain_tun(self.tun_fd, self.sock, self.budget)
        except OSError as exc:
            self._error("reading the TUN", exc)

    def _on_udp(self) -> None:
        try:
            self.fwd.drain_udp(self.sock, self.tun_fd, self.budget)
        except OSError as exc:
            self._error("receiving datagrams", exc)

    def _error(self, what: str, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._last_error > 5:         # at most one line per 5 s from the hot path
            self._last_error = now
            log.warning("error %s: %s", what, exc)
