"""The UDP adapter: the twin of csrc/udp_adapter.c (the plain path: one datagram per
syscall, as flannel's proxy does; the reference never offloads)."""

from __future__ import annotations

import errno
import socket

from dataplane.drops import Drop
from dataplane.fastpath.pyref.fields import (
    _SLOT_DATA,
)


def recv_datagram(sock: socket.socket) -> tuple[bytes, str, int] | None:
    """One datagram and its source, None when there is none now (csrc: udp_recv_batch)."""
    try:
        payload, (src, port) = sock.recvfrom(_SLOT_DATA, socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    return payload, src, port


def send_datagram(sock: socket.socket, data: bytes, addr: str, port: int) -> Drop:
    """One datagram to a peer: Drop.NONE, or why it could not leave (csrc: tx_drop)."""
    try:
        sock.sendto(data, (addr, port))
    except OSError as exc:
        return Drop.TX_TOO_BIG if exc.errno == errno.EMSGSIZE else Drop.TX_ERROR
    return Drop.NONE
