"""inotify(7) on the directory store's subnets/, so a lease written by another process reaches
the watch in milliseconds instead of at the next poll.

ctypes over the three libc calls: the interface is tiny and stable, and no package is worth its
import for it. The descriptor is non-blocking and read from the event loop (add_reader); each
read yields the names touched. IN_Q_OVERFLOW, or the directory itself going away, asks for a
full rescan (`None` in the result), which the store also does on its own clock.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

IN_ATTRIB = 0x004            # utime: a renewal
IN_CLOSE_WRITE = 0x008       # written in place by a tool
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080          # renamed over: a replacement
IN_CREATE = 0x100            # link(): a new lease
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
MASK = (IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
        | IN_DELETE_SELF | IN_MOVE_SELF)
RESCAN = IN_Q_OVERFLOW | IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED
_HEADER = struct.Struct("iIII")          # struct inotify_event: wd, mask, cookie, len

_libc = ctypes.CDLL(None, use_errno=True)


class DirWatch:
    """An inotify descriptor watching one directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise _oserror()
        if _libc.inotify_add_watch(fd, os.fsencode(path), MASK) < 0:
            err = _oserror(path)
            os.close(fd)
            raise err
        self.fd = fd

    def read(self) -> set[str] | None:
        """Names touched since the last read (empty if none); None: rescan everything."""
        names: set[str] = set()
        rescan = False
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                break
            off = 0
            while off + _HEADER.size <= len(data):
                _, mask, _, length = _HEADER.unpack_from(data, off)
                off += _HEADER.size
                name = data[off:off + length].split(b"\0", 1)[0]
                off += length
                if mask & RESCAN:
                    rescan = True
                elif name:
                    names.add(os.fsdecode(name))
        return None if rescan else names

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _oserror(path: str | os.PathLike[str] | None = None) -> OSError:
    err = ctypes.get_errno() or errno.EINVAL
    return OSError(err, os.strerror(err), *([os.fspath(path)] if path is not None else []))
