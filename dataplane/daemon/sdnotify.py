"""systemd's notify protocol (Type=notify, WatchdogSec=), for `dataplane run`.

The protocol is a few lines, written here rather than taken from a library (sdnotify, systemd-
python): one datagram of newline-separated VAR=value assignments, sent to the AF_UNIX datagram
socket named by $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). See
sd_notify(3). What we send:

    READY=1       once forwarding runs and subnet.env is written (the node's on_ready hook)
    STATUS=...    a line for `systemctl status`: what we are waiting for, or what we forward
    STOPPING=1    when a stop begins (SIGTERM, SIGINT), or the node ends on an error
    WATCHDOG=1    every WatchdogSec/2 when systemd set $WATCHDOG_USEC (and $WATCHDOG_PID is
                  ours, if set), from the event loop: a loop that hangs stops the pings

Without $NOTIFY_SOCKET every call does nothing. A send that fails (systemd gone, socket full)
is logged once and otherwise ignored: notification must never stop the daemon. The variables
are removed from our environment once read (sd_notify's unset_environment), so that the
programs we run do not notify on our behalf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping, MutableMapping
from typing import Any

log = logging.getLogger(__name__)

ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends notify messages; inert when address is None."""

    def __init__(self, address: str | bytes | None, watchdog_usec: int = 0) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.stopping_sent = False
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, *,
                     unset: bool = True, pid: int | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = parse_address(env.get("NOTIFY_SOCKET", ""))
        usec = watchdog_usec(env, os.getpid() if pid is None else pid)
        if unset:
            for name in ENV_VARS:
                env.pop(name, None)
        return cls(address, usec if address is not None else 0)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec), None without a watchdog."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec > 0 else None

    def notify(self, *assignments: str) -> bool:
        """Send VAR=value lines in one datagram; False if not sent."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s: %s", _printable(self.address),
                            exc.strerror or exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={_one_line(status)}")

    def stopping(self, status: str = "stopping") -> bool:
        if self.stopping_sent:
            return False
        self.stopping_sent = True
        return self.notify("STOPPING=1", f"STATUS={_one_line(status)}")

    async def watchdog(self) -> None:
        """WATCHDOG=1 every watchdog_interval seconds, until cancelled (nothing without one)."""
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def parse_address(value: str) -> str | bytes | None:
    """$NOTIFY_SOCKET as a sendto() address: a path, or "@name" for the abstract namespace;
    None when unset or of a kind we do not speak (vsock: "vsock:CID:PORT")."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%s: not a unix socket path; not notifying systemd", value)
    return None


def watchdog_usec(environ: Mapping[str, str], pid: int) -> int:
    """WatchdogSec in microseconds if systemd asked us (and not another process) to ping."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return 0
    owner = environ.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != pid:
                return 0
        except ValueError:
            return 0
    return max(usec, 0)


def ready_status(node: Any) -> str:
    """The STATUS= line once the node forwards."""
    peers = len(getattr(node, "peers", {}) or {})
    return (f"forwarding: subnet {node.lease.subnet} on {node.tun_name}, {peers} "
            f"peer{'' if peers == 1 else 's'}")


@contextlib.asynccontextmanager
async def supervise(node: Any, notifier: Notifier | None = None) -> AsyncIterator[Notifier]:
    """For the time the node runs: READY=1 from its on_ready hook, WATCHDOG=1 pings, and
    STOPPING=1 on the way out if no stop was announced yet (the node ended on an error)."""
    notifier = notifier or Notifier.from_environ()
    if not notifier.enabled:
        yield notifier
        return
    node.opts.on_ready.append(lambda n: notifier.ready(ready_status(n)))
    notifier.status("starting: waiting for the network config and a lease")
    pinger = asyncio.create_task(notifier.watchdog(), name="systemd-watchdog")
    try:
        yield notifier
    finally:
        pinger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pinger
        notifier.stopping("stopped")
        notifier.close()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _printable(address: str | bytes) -> str:
    return "@" + address[1:].decode(errors="replace") if isinstance(address, bytes) else address
