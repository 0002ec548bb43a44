"""Errors of the node daemon that the user can act on (see command.user_error)."""

from __future__ import annotations

import errno

_HINTS = {
    errno.EADDRINUSE: "in use",
    errno.EADDRNOTAVAIL: "not an address of this host",
    errno.EACCES: "permission denied",
}


class BindError(OSError):
    """A socket could not be bound: names what it is for, its address and its port, so a busy
    metrics port is never reported as the tunnel's."""

    def __init__(self, what: str, address: str, port: int, cause: OSError,
                 advice: dict[int, str] | None = None) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.what, self.address, self.port = what, address, port
        hint = _HINTS.get(cause.errno or 0)
        detail = cause.strerror or str(cause)
        self.message = (f"cannot bind {what} {address}:{port}: {detail}"
                        + (f" ({hint})" if hint and hint not in detail.lower() else "")
                        + (f": {advice[cause.errno]}" if advice and cause.errno in advice
                           else ""))

    def __str__(self) -> str:
        return self.message
