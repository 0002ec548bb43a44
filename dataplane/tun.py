"""Opening a TUN device: the ioctls of linux/if_tun.h, nothing else.

A TUN made here is not persistent: when the last descriptor closes (clean stop, crash or
SIGKILL) the kernel removes the device together with its addresses and routes, so a restarted
daemon finds nothing of the old one in its way.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass, field

TUN_PATH = "/dev/net/tun"

# linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000

IFNAMSIZ = 16

# TUNSETOFFLOAD flags: what we accept in super-packets read from the TUN
TUN_F_CSUM = 0x01      # partial checksums (the rest of the list needs this one)
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20      # UDP segmentation offload (Linux 6.2+)
TUN_F_USO6 = 0x40

# Tried in order until the kernel takes one: this kernel refuses TSO without CSUM and USO4
# without USO6; older kernels know no USO at all.
OFFLOAD_CHOICES = (
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
    TUN_F_CSUM | TUN_F_TSO4,
    TUN_F_CSUM,
    0,
)


class TunError(OSError):
    pass


@dataclass
class Tun:
    """One open queue of a TUN device."""

    name: str
    fds: list[int] = field(default_factory=list)   # one per queue (IFF_MULTI_QUEUE)

    @property
    def fd(self) -> int:
        return self.fds[0]

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


def check_name(name: str) -> None:
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or " " in name:
        raise ValueError(f"invalid interface name {name!r} (1 to 15 characters, no '/' or space)")


def _open_queue(name: str, flags: int) -> tuple[int, str]:
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TunError(errno.ENOENT, f"{TUN_PATH} does not exist: load the tun module "
                                     "or give the container the device") from None
    except PermissionError:
        raise TunError(errno.EPERM, f"cannot open {TUN_PATH}: run as root or with "
                                    "CAP_NET_ADMIN") from None
    try:
        ifr = struct.pack("16sH", name.encode(), flags)
        ifr = fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as exc:
        os.close(fd)
        if exc.errno == errno.EBUSY:
            raise TunError(exc.errno, f"interface {name} exists and is in use (another "
                                      "dataplane or flanneld running?)") from None
        if exc.errno == errno.EINVAL:
            raise TunError(exc.errno, f"interface {name} exists and is not a TUN device "
                                      "of ours (delete it first)") from None
        raise TunError(exc.errno, f"TUNSETIFF {name}: {exc.strerror}") from None
    return fd, ifr[:IFNAMSIZ].rstrip(b"\0").decode()


def set_offload(fd: int, choices: tuple[int, ...] = OFFLOAD_CHOICES) -> int:
    """TUNSETOFFLOAD with the richest set the kernel accepts; returns the set taken. Applies
    to the whole device (any queue's descriptor will do)."""
    for flags in choices:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
            return flags
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise TunError(exc.errno, f"TUNSETOFFLOAD: {exc.strerror}") from None
    return 0


def describe_offload(flags: int) -> str:
    names = [n for n, bit in (("csum", TUN_F_CSUM), ("tso4", TUN_F_TSO4), ("tso6", TUN_F_TSO6),
                              ("tso-ecn", TUN_F_TSO_ECN), ("uso4", TUN_F_USO4),
                              ("uso6", TUN_F_USO6)) if flags & bit]
    return ",".join(names) or "none"


def open_tun(name: str, queues: int = 1, vnet_hdr: bool = False) -> Tun:
    """Create (or attach to) TUN `name` with IFF_TUN|IFF_NO_PI, non-blocking descriptors."""
    check_name(name)
    flags = IFF_TUN | IFF_NO_PI
    if queues > 1:
        flags |= IFF_MULTI_QUEUE
    if vnet_hdr:
        flags |= IFF_VNET_HDR
    tun = Tun(name)
    try:
        for _ in range(queues):
            fd, tun.name = _open_queue(name, flags)
            tun.fds.append(fd)
    except BaseException:
        tun.close()
        raise
    return tun
