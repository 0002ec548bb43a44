"""The TUN adapter: the twin of csrc/tun_adapter.c (the plain path: one packet per
read and write; the reference never offloads)."""

from __future__ import annotations

import os

from dataplane.drops import Drop
from dataplane.fastpath.pyref.fields import (
    _INGRESS,
    _SLOT_DATA,
)
from dataplane.fastpath.pyref.forward import ForwarderState
from dataplane.fastpath.pyref.gso import gso_segment
from dataplane.fastpath.pyref.packet import (
    super_gso,
    super_vnet,
)


def read_packet(tun_fd: int) -> bytes | None:
    """One packet from the TUN, None when there is none now (csrc: tun_read_batch)."""
    try:
        return os.read(tun_fd, _SLOT_DATA)
    except (BlockingIOError, InterruptedError):
        return None


def write_packet(fd: int, data: bytes) -> bool:
    """One packet into the TUN: whether it all went in (csrc: tun_write_packet)."""
    try:
        return os.write(fd, data) == len(data)
    except OSError:
        return False


def write_delivered(f: ForwarderState, tun_fd: int, pkt: bytes, udp_gso: int = 0) -> None:
    """csrc/tun_adapter.c:write_plain: a kernel peer's super-packet is cut before the write
    (udp_gso: the hint ingress() had for it, which dp_pkt.gso_size carries in C)."""
    gso = (super_gso(pkt, f.config.max_inner, udp_gso)
           if len(pkt) > f.config.max_inner else 0)
    if not gso:
        f._syscalls[_INGRESS] += 1
        if not write_packet(tun_fd, pkt):
            f._count_as_dropped(_INGRESS, len(pkt), Drop.TUN_WRITE_ERROR)
        return
    res = gso_segment(super_vnet(pkt, gso), pkt)
    if res.drop:
        f._count_as_dropped(_INGRESS, len(pkt), res.drop)
        return
    ok = True
    for seg in res.segments:
        f._syscalls[_INGRESS] += 1
        ok = write_packet(tun_fd, seg) and ok
    if not ok:
        f._count_as_dropped(_INGRESS, len(pkt), Drop.TUN_WRITE_ERROR)
