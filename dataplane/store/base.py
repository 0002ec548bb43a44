"""The subnet store interface: what the node daemon needs, whichever store it talks to.

Two implementations share this interface and flannel's layout:
- DirectoryStore (store/directory.py): `DIR/config`, `DIR/subnets/<key>`; one machine.
- EtcdStore (store/etcd.py): `<prefix>/config`, `<prefix>/subnets/<key>`, each lease bound to
  an etcd lease (TTL 24 h, renewed 1 h before expiry); a cluster, shared with flanneld.

Interface (all coroutines run on any asyncio loop, uvloop included):

    await store.get_network_config() -> NetworkConfig
        Read and check the network config now (not cached). ConfigNotFound if there is none
        yet (flannel waits for one; the daemon may retry), ConfigError if it is invalid.

    await store.acquire_lease(attrs, *, requested=None, previous=None, ttl=LEASE_TTL) -> Lease
        Get this node (attrs.public_ip) a lease, written with `attrs` and expiring after `ttl`.
        attrs is a LeaseAttrs, or a mapping of its field names (public_ip, backend_type,
        backend_data); ttl a timedelta or seconds, here and in renew_lease.
        - requested: exactly that subnet or an error: InvalidSubnet if the config cannot hand it
          out, SubnetTaken (naming the holder) if another PublicIP holds it unexpired. Other
          leases held by our PublicIP are released (one node, one lease).
        - otherwise, as flannel does: a lease already held by our PublicIP is reused if the
          config still allows it (a restart keeps its subnet; attrs such as VtepMAC are
          rewritten), and deleted if not; then `previous` (e.g. from subnet.env) if the config
          allows it and it is free; else a free subnet at random among the first 100 free
          (NoFreeSubnet when there is none).
        Expired leases count as free.

    await store.renew_lease(lease, ttl=LEASE_TTL) -> Lease
        Push the expiry of our lease to now + ttl (with lease's attrs). If it has vanished or
        expired meanwhile it is written again, as flannel's renewal does. SubnetTaken if
        another PublicIP now holds it: the daemon has lost its subnet and must stop.

    await store.release_lease(subnet) -> None
        Delete the lease on `subnet`, whoever holds it; nothing if there is none.

    await store.list_leases() -> (leases, cursor)
        Every unexpired lease (ours included), sorted by subnet, and an opaque cursor.

    store.watch_leases(cursor) -> AsyncIterator[list[LeaseEvent]]
        Batches of changes since the cursor's snapshot, never an empty batch. "added" for a new
        or changed lease (a renewal is a change: it carries the new expiration, as in flannel);
        "removed" when a lease is deleted or expires, carrying the last lease seen. Events for
        our own subnet come too: the daemon ignores "added" for it and treats "removed" as
        lease lost (flannel then shuts down). The iterator runs until the store is closed (it
        then ends) or the store fails (StoreUnavailable: list and watch again). Cursors belong
        to the store that made them.

    await store.node_public_ip() -> str | None
        An address the store says this node must publish instead of --public-ip (the kube
        store: the Node's node-public-ip annotation); None in the other stores.

    await store.node_ready() -> None
        Called once forwarding runs and subnet.env is written (the kube store sets the Node's
        NetworkUnavailable=False condition); nothing in the other stores.

    await store.close()   (also `async with store:`)
        Ends running watches; later calls raise StoreError. A store belongs to one loop.

    store.location -> str   where it is, for messages: a directory, or endpoints + prefix

Errors: StoreError is the base of StoreUnavailable (retryable: I/O, lock timeout, etcd down),
SubnetTaken (.subnet, .holder: the Lease holding it or None) and NoFreeSubnet. InvalidSubnet
(a bad request) and ConfigError with its subclass ConfigNotFound (the network config) are
ValueErrors. A TTL that is not positive, or below what a store supports (the directory store:
1 s), is a plain ValueError.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from ipaddress import IPv4Network
from collections.abc import AsyncIterator, Mapping
from typing import Any

from dataplane.lease import InvalidSubnet, Lease, LeaseAttrs
from dataplane.netconf import ConfigError, NetworkConfig

__all__ = [
    "LEASE_TTL", "RENEW_MARGIN", "Cursor", "EventKind", "LeaseEvent", "SubnetStore",
    "StoreError", "StoreUnavailable", "SubnetTaken", "NoFreeSubnet", "ConfigError",
    "ConfigNotFound", "InvalidSubnet", "TTL", "Attrs", "as_attrs", "as_ttl", "diff_leases",
    "renewal_delay", "format_duration", "choose_unrequested",
]

LEASE_TTL = timedelta(hours=24)      # flannel's subnetTTL
RENEW_MARGIN = timedelta(hours=1)    # flannel's default --subnet-lease-renew-margin (60 min)

Cursor = Any   # opaque: a snapshot (directory store), a revision and snapshot (etcd)
TTL = timedelta | float                  # float: seconds
Attrs = LeaseAttrs | Mapping[str, Any]   # mapping: LeaseAttrs field names


class StoreError(Exception):
    """Base of the errors a subnet store raises."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or read just now; retrying later may work."""


class SubnetTaken(StoreError):
    """The subnet is leased to another node."""

    def __init__(self, subnet: IPv4Network, holder: Lease | None, detail: str = "") -> None:
        self.subnet = subnet
        self.holder = holder
        who = f"held by {holder.public_ip}" if holder else "held by another lease"
        if holder and holder.expiration:
            left = holder.expiration - datetime.now(UTC)
            who += f" (lease expires in {format_duration(left)})"
        super().__init__(f"subnet {subnet} is {who}{detail}")


class NoFreeSubnet(StoreError):
    """Every subnet between SubnetMin and SubnetMax is leased."""


class ConfigNotFound(ConfigError):
    """There is no network config (yet): the store is empty or the path is wrong."""


class EventKind(str, enum.Enum):
    ADDED = "added"       # new or changed (renewed, new attrs)
    REMOVED = "removed"   # deleted or expired

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LeaseEvent:
    kind: EventKind     # compares equal to "added" / "removed"
    lease: Lease

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EventKind(self.kind))   # accept the plain strings


class SubnetStore(abc.ABC):
    """See the module docstring for the exact semantics of each method."""

    # Whether a missing network config is worth waiting for: an operator may yet write it to
    # etcd (flanneld waits), while a directory store with no config is a setup mistake.
    waits_for_config = True

    @abc.abstractmethod
    async def get_network_config(self) -> NetworkConfig: ...

    @abc.abstractmethod
    async def acquire_lease(self, attrs: Attrs, *, requested: IPv4Network | None = None,
                            previous: IPv4Network | None = None, ttl: TTL = LEASE_TTL) -> Lease: ...

    @abc.abstractmethod
    async def renew_lease(self, lease: Lease, ttl: TTL = LEASE_TTL) -> Lease: ...

    @abc.abstractmethod
    async def release_lease(self, subnet: IPv4Network) -> None: ...

    @abc.abstractmethod
    async def list_leases(self) -> tuple[list[Lease], Cursor]: ...

    @abc.abstractmethod
    def watch_leases(self, cursor: Cursor) -> AsyncIterator[list[LeaseEvent]]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def node_public_ip(self) -> str | None:
        return None

    async def node_ready(self) -> None:
        return None

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the store is, for logs and messages (a directory, etcd endpoints + prefix)."""

    async def __aenter__(self) -> SubnetStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def as_attrs(attrs: Attrs) -> LeaseAttrs:
    """A LeaseAttrs from one, or from a mapping of its field names (for implementations)."""
    if isinstance(attrs, LeaseAttrs):
        return attrs
    try:
        return LeaseAttrs(**attrs)
    except TypeError as exc:
        raise TypeError(f"lease attrs: {exc}; expected public_ip, backend_type, "
                        "backend_data") from None


def as_ttl(ttl: TTL) -> timedelta:
    """A positive timedelta from a timedelta or seconds (for implementations)."""
    if not isinstance(ttl, timedelta):
        ttl = timedelta(seconds=ttl)
    if ttl <= timedelta(0):
        raise ValueError(f"lease TTL must be positive, not {ttl}")
    return ttl


def diff_leases(old: Mapping[IPv4Network, Lease],
                new: Mapping[IPv4Network, Lease]) -> list[LeaseEvent]:
    """The events that turn snapshot `old` into `new`: removals first, each sorted by subnet.

    For stores that poll, and for an etcd watch that must resynchronise after compaction.
    """
    events = [LeaseEvent(EventKind.REMOVED, old[sn]) for sn in sorted(old) if sn not in new]
    events += [LeaseEvent(EventKind.ADDED, new[sn]) for sn in sorted(new)
               if old.get(sn) != new[sn]]
    return events


def choose_unrequested(config: NetworkConfig, public_ip: str, mine: list[IPv4Network],
                       taken: list[IPv4Network], previous: IPv4Network | None,
                       where: str, holders: Mapping[IPv4Network, Lease | None] | None = None
                       ) -> IPv4Network:
    """flannel's choice when no subnet is asked for: a subnet our PublicIP already holds (a
    restarted node keeps its pods' addresses), else `previous` if it is still free (expired
    counts as free), else a free one at random. `taken` lists every leased subnet, ours
    included; `where` ends the error; `holders` (subnet -> lease) names who holds `previous`.

    A `previous` held by another PublicIP is never taken: it may be this node under its old
    address, or a live node given the subnet since; we cannot tell, and taking a live node's
    subnet breaks both. As flanneld, we take another and say how to give the old one back."""
    import logging

    from dataplane.lease import is_compatible, pick_free_subnet

    log = logging.getLogger("dataplane.store")
    for subnet in mine:
        if is_compatible(config, subnet):
            log.info("reusing lease %s held by %s", subnet, public_ip)
            return subnet
    if (previous is not None and is_compatible(config, previous)
            and not any(previous.overlaps(sn) for sn in taken)):
        log.info("reusing previous subnet %s", previous)
        return previous
    if previous is not None and not any(previous == sn for sn in mine):
        holder = (holders or {}).get(previous)
        if any(previous.overlaps(sn) for sn in taken):
            who = "another lease"
            if holder is not None:
                who = holder.public_ip + (f" until {holder.expiration.isoformat('T', 'seconds')}"
                                          if holder.expiration else "")
            log.warning("subnet.env names %s, but it is leased to %s, not to our public IP %s: "
                        "taking another subnet (pods addressed from %s must be recreated). If "
                        "%s was this node's old address, stop this node, run `dataplane leases "
                        "release %s` and start it again", previous, who, public_ip, previous,
                        holder.public_ip if holder is not None else "that lease", previous)
    target = pick_free_subnet(config, taken)
    if target is None:
        raise NoFreeSubnet(f"no free subnet in {config.network}: all subnets from "
                           f"{config.subnet_min} to {config.subnet_max} (/{config.subnet_len}) "
                           f"are leased ({where})")
    return target


def renewal_delay(lease: Lease, margin: timedelta = RENEW_MARGIN,
                  now: datetime | None = None) -> float:
    """Seconds until `lease` should be renewed: `margin` before it expires, never negative.

    With a short TTL (tests, labs) the margin is capped at half the time left, so a renewal
    does not fire in a tight loop.
    """
    if lease.expiration is None:
        return float("inf")
    left = lease.expiration - (now or datetime.now(UTC))
    return max(0.0, (left - min(margin, left / 2)).total_seconds())


def format_duration(delta: timedelta) -> str:
    """23h59m, 4m05s, 12s; "expired" for zero or less."""
    secs = int(delta.total_seconds())
    if secs <= 0:
        return "expired"
    if secs >= 86400:
        return f"{secs // 86400}d{secs % 86400 // 3600}h"
    if secs >= 3600:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    if secs >= 60:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs}s"
