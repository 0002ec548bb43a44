"""The etcd v3 subnet store, in flannel's own layout: flanneld and dataplane nodes can share it.

    <prefix>/config                   flannel's net-conf.json        (default /coreos.com/network)
    <prefix>/subnets/10.244.1.0-24    flannel's lease JSON (lease.py, byte for byte), bound to
                                      an etcd lease whose TTL is the lease's

How each operation maps onto etcd (flannel's pkg/subnet/etcd, restated):
- acquire: range the subnets, decide as base.py says (our PublicIP's lease, else `previous`,
  else a random free one), then one transaction that puts the lease only if nothing moved since
  the range: create_revision 0 for a free subnet, the same mod_revision for our own lease, and
  deletes our PublicIP's other leases under the same condition. If another node got there first
  we range and decide again (flannel's raceRetries, 10). The etcd lease is granted once per
  acquire and revoked if unused.
- renew: flannel re-puts the key with a fresh etcd lease (updateSubnet), so watchers see the new
  expiration as a change; we do the same, compare-and-swap on the mod_revision we read, and then
  revoke the old etcd lease. A key that vanished is created again; a key holding another
  PublicIP raises SubnetTaken.
- release: delete the key and revoke its etcd lease.
- expiry: etcd deletes the key when its lease runs out, so expired leases are simply absent and
  a watch sees the DELETE. A key bound to no etcd lease (flannel's "reservation", or a plain
  etcdctl put) never expires; reusing one keeps it so, as flannel does.
- list: one range over <prefix>/subnets/; its header revision is the cursor. Expirations come
  from the etcd leases: the grants we made, else /v3/lease/timetolive (flannel asks the same),
  cached per lease ID until it runs out. etcd counts TTLs in whole seconds, so another node's
  view of an expiration can differ from ours by a second.
- watch: a prefix watch from the cursor's revision + 1, one batch per WatchResponse. If the
  revision was compacted away, etcd cancels the watch (compact_revision): we list again, emit the
  difference with what the watch had seen (diff_leases) and watch on from the new revision, so
  no change is lost. A broken stream raises StoreUnavailable.

A value that is not a lease is logged once and skipped; its subnet stays taken. Keys that are
not IPv4 subnet keys are skipped too, but the IPv4 half of a flannel dual-stack key
("10.244.1.0-24&fc00::-64") still counts as taken when we allocate.

TTLs are whole seconds (rounded up); etcd may raise a short one to its minimum (1.5 election
timeouts), and the Lease we return says what etcd granted.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, UTC
from ipaddress import IPv4Network
from collections.abc import AsyncIterator, Iterable
from typing import Any

from dataplane.lease import (Lease, LeaseAttrs, LeaseFormatError, parse_subnet_key, subnet_key,
                             validate_subnet)
from dataplane.netconf import ConfigError, NetworkConfig, parse_network_config
from dataplane.store.base import (LEASE_TTL, TTL, Attrs, ConfigNotFound, Cursor, EventKind,
                                  LeaseEvent, StoreError, StoreUnavailable, SubnetStore,
                                  SubnetTaken, as_attrs, as_ttl, choose_unrequested, diff_leases)
from dataplane.store.etcd_tls import TLSFiles
from dataplane.store.etcd_client import (Endpoint, EtcdClient, EtcdError, EtcdRequestError,
                                         EtcdUnavailable, compare_create, compare_mod, op_delete,
                                         op_put, prefix_end, unb64)

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/coreos.com/network"
LOOKUPS_IN_FLIGHT = 64         # etcd lease TTL lookups at once (the client pools 8 connections)
MIN_TTL = timedelta(seconds=1)      # etcd's TTLs are whole seconds
RACE_RETRIES = 10                   # flannel's raceRetries


def normalize_prefix(prefix: str) -> str:
    """"/coreos.com/network/" -> "/coreos.com/network" (flannel joins paths); ValueError if
    empty or relative."""
    prefix = prefix.strip()
    if not prefix.startswith("/") or not prefix.strip("/"):
        raise ValueError(f"etcd prefix {prefix!r}: expected an absolute key path such as "
                         f"{DEFAULT_PREFIX}")
    return "/" + prefix.strip("/")


@dataclass(frozen=True)
class _Cursor:
    """The etcd store's cursor: the revision of a listing and the leases it held."""
    revision: int
    leases: tuple[Lease, ...]


@dataclass(frozen=True)
class _Entry:
    """One key under <prefix>/subnets/ as read: lease is None when the value is not a lease."""
    subnet: IPv4Network
    key: bytes
    lease: Lease | None             # expiration not filled in
    etcd_lease: int                 # 0: bound to no etcd lease (never expires)
    mod_revision: int

    def held_by(self, public_ip: str) -> bool:
        return self.lease is not None and self.lease.public_ip == public_ip


_GONE = object()    # an etcd lease that has already run out: its key is about to go


class EtcdStore(SubnetStore):
    def __init__(self, endpoints: str | Iterable[str | Endpoint], *,
                 prefix: str = DEFAULT_PREFIX, timeout: float = 5.0,
                 idle_check: float = 15.0, tls: TLSFiles | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        """endpoints: "http://a:2379,https://b:2379" or a list; tls, username, password as
        EtcdClient takes them. Nothing is contacted yet."""
        self.client = EtcdClient(endpoints, timeout=timeout, idle_check=idle_check, tls=tls,
                                 username=username, password=password)
        self.prefix = normalize_prefix(prefix)
        self.config_key = f"{self.prefix}/config".encode()
        self.subnets_prefix = f"{self.prefix}/subnets/".encode()
        self._expiry: dict[int, datetime] = {}       # etcd lease ID -> expiration
        self._warned: set[tuple[bytes, int]] = set()
        self._closed = False

    @property
    def location(self) -> str:
        return f"etcd {self.client.urls} (prefix {self.prefix})"

    # -- the interface ---------------------------------------------------------------------

    async def get_network_config(self) -> NetworkConfig:
        resp = await self._call(self.client.range(self.config_key))
        kvs = resp.get("kvs") or []
        key = self.config_key.decode()
        if not kvs:
            raise ConfigNotFound(
                f"{self.client.urls}: no network config at {key} (put flannel's net-conf.json "
                f"there, e.g. etcdctl put {key} '{{\"Network\": \"10.244.0.0/16\"}}')")
        try:
            text = unb64(kvs[0].get("value")).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"etcd {key}: not UTF-8 text ({exc.reason})") from None
        return parse_network_config(text, source=f"etcd {key}")

    async def acquire_lease(self, attrs: Attrs, *, requested: IPv4Network | None = None,
                            previous: IPv4Network | None = None, ttl: TTL = LEASE_TTL) -> Lease:
        attrs, seconds = as_attrs(attrs), _seconds(ttl)
        config = await self.get_network_config()
        if requested is not None:
            validate_subnet(config, requested)
        grant: tuple[int, datetime] | None = None
        try:
            for _ in range(RACE_RETRIES):
                entries, others, _ = await self._scan()
                target, existing, drop = await self._choose(config, attrs, entries, others,
                                                            requested, previous)
                reservation = existing is not None and existing.etcd_lease == 0
                lease_id, expiration = 0, None
                if not reservation:
                    if grant is None:
                        grant = await self._grant(seconds)
                    lease_id, expiration = grant
                if await self._write(target, attrs, lease_id, existing, drop):
                    if not reservation:
                        grant = None                       # in use now: keep it
                    await self._retire(e.etcd_lease for e in (existing, *drop)
                                       if e is not None and e.etcd_lease != lease_id)
                    return Lease.from_attrs(target, attrs, expiration)
                log.info("lost a race for %s; looking again", target)
        except StoreUnavailable:
            grant = None                # out of reach: the unused grant runs out on its own
            raise
        finally:
            if grant is not None:
                await self._retire([grant[0]])
        raise StoreUnavailable(f"{self.location}: gave up acquiring a lease after "
                               f"{RACE_RETRIES} races with other nodes")

    async def renew_lease(self, lease: Lease, ttl: TTL = LEASE_TTL) -> Lease:
        seconds = _seconds(ttl)
        key = self._key(lease.subnet)
        grant: tuple[int, datetime] | None = None
        try:
            for _ in range(RACE_RETRIES):
                resp = await self._call(self.client.range(key))
                entry = next(iter(self._entries(resp.get("kvs") or [])[0]), None)
                if entry is not None and not entry.held_by(lease.public_ip):
                    raise SubnetTaken(lease.subnet, await self._with_expiry(entry),
                                      ": our lease was taken over" if entry.lease else
                                      f" ({key.decode()} is unreadable)")
                if entry is None:
                    log.warning("lease %s had vanished or expired; writing it again",
                                lease.subnet)
                reservation = entry is not None and entry.etcd_lease == 0
                lease_id, expiration = 0, None
                if not reservation:
                    if grant is None:
                        grant = await self._grant(seconds)
                    lease_id, expiration = grant
                if await self._write(lease.subnet, lease.attrs, lease_id, entry, []):
                    if not reservation:
                        grant = None
                    if entry is not None and entry.etcd_lease != lease_id:
                        await self._retire([entry.etcd_lease])
                    return Lease.from_attrs(lease.subnet, lease.attrs, expiration)
        except StoreUnavailable:
            grant = None
            raise
        finally:
            if grant is not None:
                await self._retire([grant[0]])
        raise StoreUnavailable(f"{self.location}: gave up renewing {lease.subnet} after "
                               f"{RACE_RETRIES} concurrent changes")

    async def release_lease(self, subnet: IPv4Network) -> None:
        resp = await self._call(self.client.delete_range(self._key(subnet), prev_kv=True))
        await self._retire(int(kv.get("lease") or 0) for kv in resp.get("prev_kvs") or [])

    async def list_leases(self) -> tuple[list[Lease], Cursor]:
        leases, revision = await self._list()
        return leases, _Cursor(revision, tuple(leases))

    async def watch_leases(self, cursor: Cursor) -> AsyncIterator[list[LeaseEvent]]:
        if not isinstance(cursor, _Cursor):
            raise TypeError("watch_leases() takes the cursor list_leases() returned")
        self._check_open()
        known = {lease.subnet: lease for lease in cursor.leases}
        revision = cursor.revision
        while not self._closed:
            try:
                watch = await self.client.watch(self.subnets_prefix,
                                                prefix_end(self.subnets_prefix),
                                                start_revision=revision + 1)
            except EtcdError as exc:
                if self._closed:
                    return
                raise _unavailable(exc) from None
            compacted = 0
            try:
                async for resp in watch:
                    if int(resp.get("compact_revision") or 0):
                        compacted = int(resp["compact_revision"])
                        break
                    if resp.get("canceled"):
                        reason = resp.get("cancel_reason") or "no reason given"
                        raise StoreUnavailable(f"{watch.endpoint}: lease watch cancelled "
                                               f"({reason})")
                    events = resp.get("events") or []
                    if not events:
                        continue                          # created, progress notification
                    revision = max(revision, *(int(e["kv"].get("mod_revision") or 0)
                                               for e in events))
                    batch = await self._events(events, known)
                    if batch:
                        yield batch
            except EtcdError as exc:
                if self._closed:
                    return
                raise _unavailable(exc) from None
            finally:
                watch.close()
            if not compacted:
                if self._closed:
                    return
                raise StoreUnavailable(f"{watch.endpoint}: lease watch ended")
            # Events between our revision and the compaction are gone: list and diff instead.
            log.warning("lease watch at revision %d fell behind etcd's compaction (revision "
                        "%d): listing again", revision, compacted)
            leases, revision = await self._list()
            current = {lease.subnet: lease for lease in leases}
            batch = diff_leases(known, current)
            known = current
            if batch:
                yield batch

    async def close(self) -> None:
        self._closed = True
        await self.client.close()

    # -- also useful outside the interface -------------------------------------------------

    async def write_network_config(self, text: str) -> NetworkConfig:
        """Put net-conf.json at <prefix>/config, as an operator does (for labs and tools);
        ConfigError, and nothing written, if flannel would refuse it."""
        config = parse_network_config(text, source=f"etcd {self.config_key.decode()}")
        await self._call(self.client.put(self.config_key, text.encode()))
        return config

    # -- reading -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.location}: store is closed")

    async def _call(self, request: Any) -> Any:
        """Await a client call, as the store's errors (request is a coroutine)."""
        if self._closed:
            request.close()
            self._check_open()
        try:
            return await request
        except EtcdUnavailable as exc:
            raise _unavailable(exc) from None
        except EtcdRequestError as exc:
            raise StoreError(f"{self.location}: {exc}") from None
        except EtcdError as exc:
            if self._closed:
                self._check_open()
            raise StoreError(str(exc)) from None

    def _key(self, subnet: IPv4Network) -> bytes:
        return self.subnets_prefix + subnet_key(subnet).encode()

    async def _scan(self) -> tuple[list[_Entry], list[IPv4Network], int]:
        """Every subnet key: entries, IPv4 subnets of dual-stack keys, and the revision."""
        resp = await self._call(self.client.range(self.subnets_prefix,
                                                  prefix_end(self.subnets_prefix)))
        entries, others = self._entries(resp.get("kvs") or [])
        return entries, others, int((resp.get("header") or {}).get("revision") or 0)

    def _entries(self, kvs: list[dict[str, Any]]) -> tuple[list[_Entry], list[IPv4Network]]:
        entries, others = [], []
        for kv in kvs:
            entry = self._entry(kv)
            if entry is not None:
                entries.append(entry)
                continue
            name = unb64(kv.get("key"))[len(self.subnets_prefix):].decode("utf-8", "replace")
            v4 = parse_subnet_key(name.partition("&")[0]) if "&" in name else None
            if v4 is not None:
                others.append(v4)
        entries.sort(key=lambda e: e.subnet)
        return entries, others

    def _subnet_of(self, key: bytes) -> IPv4Network | None:
        if not key.startswith(self.subnets_prefix):
            return None
        return parse_subnet_key(key[len(self.subnets_prefix):].decode("utf-8", "replace"))

    def _entry(self, kv: dict[str, Any]) -> _Entry | None:
        """The entry for a key-value, or None if the key is not an IPv4 subnet key."""
        key = unb64(kv.get("key"))
        subnet = self._subnet_of(key)
        if subnet is None:
            return None
        mod_revision = int(kv.get("mod_revision") or 0)
        try:
            lease: Lease | None = Lease.from_json(subnet, unb64(kv.get("value")))
        except LeaseFormatError as exc:
            lease = None
            if (key, mod_revision) not in self._warned:
                self._warned.add((key, mod_revision))
                log.warning("etcd %s: not a flannel lease (%s); skipped, and its subnet counts "
                            "as taken", key.decode("utf-8", "replace"), exc)
        return _Entry(subnet, key, lease, int(kv.get("lease") or 0), mod_revision)

    async def _list(self) -> tuple[list[Lease], int]:
        entries, _, revision = await self._scan()
        readable = [(e.lease, e.etcd_lease) for e in entries if e.lease is not None]
        expirations = await self._expirations(etcd_lease for _, etcd_lease in readable)
        leases = [replace(lease, expiration=expirations[etcd_lease])
                  for lease, etcd_lease in readable if expirations[etcd_lease] is not _GONE]
        return leases, revision

    async def _expirations(self, lease_ids: Iterable[int]) -> dict[int, Any]:
        """etcd lease ID -> expiration (None: never; _GONE: already run out)."""
        # A few lookups in flight, not one task per lease: thousands of waiting tasks cost
        # megabytes of RSS at a cold start, and the client has only a few connections anyway.
        ids = iter(set(lease_ids))
        found: dict[int, Any] = {}

        async def worker() -> None:
            for lease_id in ids:
                found[lease_id] = await self._expiration(lease_id)
        await asyncio.gather(*(worker() for _ in range(LOOKUPS_IN_FLIGHT)))
        return found

    async def _expiration(self, lease_id: int) -> Any:
        if lease_id == 0:
            return None
        now = datetime.now(UTC)
        cached = self._expiry.get(lease_id)
        if cached is not None and cached > now:
            return cached
        self._expiry.pop(lease_id, None)
        ttl = await self._call(self.client.lease_time_to_live(lease_id))
        if ttl < 0:
            return _GONE
        expiration = now + timedelta(seconds=ttl)
        self._expiry[lease_id] = expiration
        return expiration

    async def _with_expiry(self, entry: _Entry) -> Lease | None:
        if entry.lease is None:
            return None
        expiration = await self._expiration(entry.etcd_lease)
        return replace(entry.lease, expiration=None if expiration is _GONE else expiration)

    async def _events(self, events: list[dict[str, Any]],
                      known: dict[IPv4Network, Lease]) -> list[LeaseEvent]:
        """Watch events as lease events, keeping `known` (subnet -> last lease seen) current."""
        # (subnet, entry): entry None for a DELETE; keys that are not subnets are dropped.
        changes: list[tuple[IPv4Network, _Entry | None]] = []
        for ev in events:
            kv = ev.get("kv") or {}
            if ev.get("type") == "DELETE":
                subnet = self._subnet_of(unb64(kv.get("key")))
                if subnet is not None:
                    changes.append((subnet, None))
            else:
                entry = self._entry(kv)
                if entry is not None:
                    changes.append((entry.subnet, entry))
        expirations = await self._expirations(e.etcd_lease for _, e in changes
                                              if e is not None and e.lease is not None)
        batch = []
        for subnet, entry in changes:
            if entry is None or entry.lease is None:       # deleted, or overwritten with junk
                if subnet in known:
                    batch.append(LeaseEvent(EventKind.REMOVED, known.pop(subnet)))
            else:
                expiration = expirations[entry.etcd_lease]
                if expiration is _GONE:
                    continue                      # already expired: its DELETE follows
                lease = replace(entry.lease, expiration=expiration)
                known[entry.subnet] = lease
                batch.append(LeaseEvent(EventKind.ADDED, lease))
        return batch

    # -- writing -----------------------------------------------------------------------------

    async def _choose(self, config: NetworkConfig, attrs: LeaseAttrs, entries: list[_Entry],
                      others: list[IPv4Network], requested: IPv4Network | None,
                      previous: IPv4Network | None
                      ) -> tuple[IPv4Network, _Entry | None, list[_Entry]]:
        """The subnet to write, our entry already on it (if any), and our entries to delete."""
        live = {e.subnet: e for e in entries}
        mine = [e for e in entries if e.held_by(attrs.public_ip)]
        target: IPv4Network | None = None
        if requested is not None:
            holder = live.get(requested)
            if holder is not None and not holder.held_by(attrs.public_ip):
                raise SubnetTaken(requested, await self._with_expiry(holder), "" if holder.lease
                                  else f" ({holder.key.decode()} is unreadable)")
            for e in entries:          # leases of another length after a config change
                if (e.subnet != requested and e.subnet.overlaps(requested)
                        and not e.held_by(attrs.public_ip)):
                    raise SubnetTaken(requested, await self._with_expiry(e),
                                      f" (as part of {e.subnet})")
            if any(o.overlaps(requested) for o in others):
                raise SubnetTaken(requested, None, " (by a dual-stack lease)")
            target = requested
        else:
            target = choose_unrequested(config, attrs.public_ip, [e.subnet for e in mine],
                                        [*live, *others], previous,
                                        f"{len(live)} leases in etcd under {self.prefix}",
                                        {sn: e.lease for sn, e in live.items()})
        drop = [e for e in mine if e.subnet != target]
        for e in drop:
            log.info("releasing %s, also held by %s", e.subnet, attrs.public_ip)
        return target, live.get(target), drop

    async def _grant(self, seconds: int) -> tuple[int, datetime]:
        """A new etcd lease and when it ends (counted from before we asked: never late)."""
        start = datetime.now(UTC)
        lease_id, granted = await self._call(self.client.lease_grant(seconds))
        expiration = start + timedelta(seconds=granted)
        self._expiry[lease_id] = expiration
        return lease_id, expiration

    async def _write(self, subnet: IPv4Network, attrs: LeaseAttrs, lease_id: int,
                     existing: _Entry | None, drop: list[_Entry]) -> bool:
        """Put the lease if neither its key nor those in `drop` changed since we read them,
        deleting those; False if something did (another node was faster)."""
        key = self._key(subnet)
        compare = [compare_mod(key, existing.mod_revision) if existing
                   else compare_create(key, 0)]
        compare += [compare_mod(e.key, e.mod_revision) for e in drop]
        success = [op_put(key, attrs.to_json(), lease_id)] + [op_delete(e.key) for e in drop]
        resp = await self._call(self.client.txn(compare, success))
        return bool(resp.get("succeeded"))

    async def _retire(self, lease_ids: Iterable[int]) -> None:
        """Revoke etcd leases left holding no key (replaced, released, or granted and unused).

        One that still holds a key is left alone: someone bound that key to it (or our write
        went through though its answer was lost). Best effort: a lease we could not revoke runs
        out on its own, as flannel lets every replaced lease do."""
        for lease_id in set(lease_ids) - {0}:
            self._expiry.pop(lease_id, None)
            try:
                if await self.client.lease_keys(lease_id) == []:
                    await self.client.lease_revoke(lease_id)
            except EtcdError as exc:
                log.info("could not revoke etcd lease %x (it will run out): %s", lease_id, exc)


def _seconds(ttl: TTL) -> int:
    ttl = as_ttl(ttl)
    if ttl < MIN_TTL:
        raise ValueError(f"lease TTL must be at least {MIN_TTL.total_seconds():g} s, not {ttl}")
    return math.ceil(ttl.total_seconds())


def _unavailable(exc: EtcdError) -> StoreUnavailable:
    return StoreUnavailable(str(exc))
