"""Telling our own writes to our lease from another node's: two nodes configured with the same
--public-ip take one lease each as their own (flannel's rule: a lease of our PublicIP is
ours) and would share a subnet without noticing.

Each write of ours comes back through the watch with the expiry we wrote, to the microsecond
(the directory store's mtime, the etcd grant as this store object made it); another writer's
shows another expiry, even when it wrote within the same second. An event seen while a write
of ours is in flight is judged once that write has returned.
"""

from __future__ import annotations

import collections
import logging
from datetime import datetime, timedelta
from collections.abc import Awaitable, Callable
from typing import TypeVar

from dataplane.lease import Lease

log = logging.getLogger("dataplane.daemon.node")

SLACK = timedelta(milliseconds=1)     # rounding, never a second writer
T = TypeVar("T", bound=Lease | None)     # what a write returns: our lease, or None


class OwnWrites:
    def __init__(self, ttl_seconds: float, current: Callable[[], Lease | None]) -> None:
        self.ttl = timedelta(seconds=ttl_seconds)
        self.current = current                   # our lease as the node now holds it
        self.expiries: collections.deque[datetime | None] = collections.deque(maxlen=16)
        self.in_flight = 0
        self.pending: Lease | None = None
        self.warned: set[datetime] = set()

    def wrote(self, lease: Lease) -> None:
        self.expiries.append(lease.expiration)

    async def write(self, call: Callable[[], Awaitable[T | None]],
                    store: Callable[[T], None]) -> T | None:
        """Run one write of ours; `store` keeps its result (before a deferred check)."""
        self.in_flight += 1
        try:
            lease = await call()
            if lease is not None:
                store(lease)
                self.wrote(lease)
            return lease
        finally:
            self.in_flight -= 1
            pending, self.pending = self.pending, None
            if pending is not None and not self.in_flight:
                self.seen(pending)

    def seen(self, seen: Lease) -> None:
        """A watch event for our subnet: warn if another node with our public IP wrote it."""
        if self.in_flight:
            self.pending = seen
            return
        ours = self.current()
        if (ours is None or seen.public_ip != ours.public_ip or seen.expiration is None
                or ours.expiration is None or seen.expiration in self.warned
                or any(mine is not None and abs(seen.expiration - mine) <= SLACK
                       for mine in self.expiries)):
            return
        self.warned.add(seen.expiration)
        log.warning("lease %s of public IP %s was renewed by another node: it now expires at %s "
                    "(renewed about %s), while this node renewed it at %s (until %s). Is another "
                    "node running with --public-ip %s? Both are using subnet %s",
                    seen.subnet, seen.public_ip, _when(seen.expiration),
                    _when(seen.expiration - self.ttl), _when(ours.expiration - self.ttl),
                    _when(ours.expiration), seen.public_ip, seen.subnet)


def _when(moment: datetime) -> str:
    return moment.astimezone().isoformat(timespec="seconds")
