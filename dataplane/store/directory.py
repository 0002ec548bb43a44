"""The embedded subnet store: a directory in flannel's layout, shared by processes on one machine.

    DIR/config                  flannel's net-conf.json
    DIR/subnets/10.244.1.0-24   flannel's lease JSON, exactly what etcd would hold
    DIR/.lock                   flock(2) taken by every writer

Expiry lives in the lease file's mtime, so the content stays flannel's JSON and one file holds
the whole lease. We write mtime = expiration time (in the future), so `ls -l --full-time` shows
when each lease expires and a renewal is a utime(2). A file someone else wrote (by hand, cp, a
sync tool) has mtime <= ctime, since a write sets both to now; such a file counts as renewed
when it was written, with flannel's 24 h TTL, rather than as already expired. (Changing the
metadata of an expired file, e.g. chmod, can revive it that way for 24 h: do not.)

Atomicity: every writer holds an exclusive flock on DIR/.lock for its whole read-decide-write
(acquire, renew, release), so two daemons never decide on the same free subnet. flock locks
belong to the open file description, so they exclude threads of one process too and vanish
when a holder dies. A lease file is written whole to a temp file and fsynced, its mtime set,
then os.link()ed to its name to create it (fails if the name exists: even a writer that ignored
the lock is never overwritten) or os.rename()d over it to replace it. Readers (list, watch, the
leases command) take no lock: they only ever see complete files. The expiry is computed after
the fsync and TTLs are at least 1 s, so our mtime is always ahead of the ctime the link/rename
sets, whatever the disk's latency.

Expired leases count as free and are deleted by the next acquire; a watcher reports "removed"
as soon as a lease expires, whether or not its file is gone. The watch hears of writes through
inotify (store/dirwatch.py) and reads just the files named, so a change reaches it in
milliseconds whatever the number of leases; it wakes at the earliest expiry of a lease it knows
(no file event announces one) and looks at every file every RESCAN_INTERVAL all the same. Where
inotify is refused (some network file systems, exhausted watches) it polls every 0.5 s.

A store object belongs to one event loop; its blocking file work runs in the default executor.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from ipaddress import IPv4Network
from pathlib import Path
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TypeVar

from dataplane.lease import (Lease, LeaseAttrs, LeaseFormatError, parse_subnet_key, subnet_key,
                             validate_subnet)
from dataplane.netconf import ConfigError, NetworkConfig, parse_network_config
from dataplane.store.dirwatch import DirWatch
from dataplane.store.base import (LEASE_TTL, TTL, Attrs, ConfigNotFound, Cursor, LeaseEvent,
                                  StoreError, StoreUnavailable, SubnetStore, SubnetTaken,
                                  as_attrs, as_ttl, choose_unrequested, diff_leases)

log = logging.getLogger(__name__)

DEFAULT_STORE_DIR = "/var/lib/dataplane/store"
FOREIGN_TTL = LEASE_TTL            # lifetime of a lease file we did not write
MIN_TTL = timedelta(seconds=1)     # see _write: keeps our mtimes ahead of ctime
RACE_RETRIES = 10                  # flannel's raceRetries
STALE_TEMP_SECONDS = 60            # a temp file this old belongs to a writer that died
POLL_INTERVAL = 0.5                # without inotify: how often the watch looks at every file
RESCAN_INTERVAL = 5.0              # with inotify: a full look now and then all the same
BURST = 0.01                       # after an inotify wake-up: let a burst of writes land
EXPIRY_SLACK = 0.05                # look just after a lease's expiry, not just before
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = TypeVar("T")


@dataclass(frozen=True)
class _Snapshot:
    """The directory store's cursor: the leases list_leases() returned."""
    leases: tuple[Lease, ...]


@dataclass(frozen=True)
class _Entry:
    """One lease file as read: lease is None when its content is not a lease."""
    subnet: IPv4Network
    path: Path
    data: bytes
    lease: Lease | None
    expiration: datetime
    sig: tuple[int, int, int, int]      # inode, mtime, ctime, size: changes with any write

    def held_by(self, public_ip: str) -> bool:
        return self.lease is not None and self.lease.public_ip == public_ip


class DirectoryStore(SubnetStore):
    waits_for_config = False     # no config in a local directory: say so and stop

    def __init__(self, path: str | os.PathLike[str], *, poll_interval: float | None = None,
                 inotify: bool = True, lock_timeout: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        """`poll_interval`: seconds between full looks at every file (default: POLL_INTERVAL
        without inotify, RESCAN_INTERVAL with it). `clock` (seconds since the epoch) is for
        tests; it must not run behind time.time()."""
        self.path = Path(path)
        self.config_path = self.path / "config"
        self.subnets_dir = self.path / "subnets"
        self.lock_path = self.path / ".lock"
        self.poll_interval = poll_interval
        self.inotify = inotify
        self.lock_timeout = lock_timeout
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._warned: set[tuple[str, tuple[int, int, int, int]]] = set()
        self._closed = asyncio.Event()
        self._wakers: set[asyncio.Event] = set()
        self._inotify_refused = False

    @property
    def location(self) -> str:
        return str(self.path)

    # -- the interface ---------------------------------------------------------------------

    async def get_network_config(self) -> NetworkConfig:
        return await self._run(self._read_config)

    async def acquire_lease(self, attrs: Attrs, *, requested: IPv4Network | None = None,
                            previous: IPv4Network | None = None, ttl: TTL = LEASE_TTL) -> Lease:
        return await self._run(self._acquire, as_attrs(attrs), requested, previous, _ttl(ttl))

    async def renew_lease(self, lease: Lease, ttl: TTL = LEASE_TTL) -> Lease:
        return await self._run(self._renew, lease, _ttl(ttl))

    async def release_lease(self, subnet: IPv4Network) -> None:
        await self._run(self._release, subnet)

    async def list_leases(self) -> tuple[list[Lease], Cursor]:
        leases = await self._run(self._live_leases)
        return leases, _Snapshot(tuple(leases))

    async def watch_leases(self, cursor: Cursor) -> AsyncIterator[list[LeaseEvent]]:
        if not isinstance(cursor, _Snapshot):
            raise TypeError("watch_leases() takes the cursor list_leases() returned")
        known = {lease.subnet: lease for lease in cursor.leases}
        woken = asyncio.Event()
        self._wakers.add(woken)
        loop = asyncio.get_running_loop()
        watch: DirWatch | None = None
        touched: set[str] | None = set()       # names inotify told of; None: look at all
        soonest = _soonest(known.values())     # the earliest expiry among them (or earlier)

        def on_inotify(watch: DirWatch) -> None:
            # Read at once: the descriptor is level-triggered, and left unread it would make
            # the loop call us again and again until the watch gets to it.
            nonlocal touched
            names = watch.read()
            if names is not None:
                names = {n for n in names if parse_subnet_key(n) is not None}
                if not names:
                    return                        # temp files of a writer: nothing to say
            touched = None if names is None or touched is None else touched | names
            woken.set()
        try:
            while not self._closed.is_set():
                if watch is None and self.inotify:
                    watch = await self._open_watch()
                    if watch is not None:
                        loop.add_reader(watch.fd, on_inotify, watch)
                try:
                    await asyncio.wait_for(woken.wait(), self._wait(soonest, watch is not None))
                except TimeoutError:
                    pass
                if self._closed.is_set():
                    return
                names = None                                   # None: look at every file
                if watch is not None and woken.is_set():
                    await asyncio.sleep(BURST)                 # a burst of writes: one batch
                    woken.clear()
                    names, touched = touched, set()
                    if names is None:                          # overflow, or dir gone
                        loop.remove_reader(watch.fd)
                        watch.close()
                        watch = None
                try:
                    if names is None:
                        current = {lease.subnet: lease
                                   for lease in await self._run(self._live_leases)}
                        events = diff_leases(known, current)
                        known = current
                        soonest = _soonest(known.values())
                    else:                  # only what was touched: the cost of a write is
                        now = dict(await self._run(self._live_of, names))   # not O(leases)
                        was = {sn: known[sn] for sn in now if sn in known}
                        events = diff_leases(was, {sn: ls for sn, ls in now.items() if ls})
                        for sn, lease in now.items():
                            if lease is None:
                                known.pop(sn, None)
                            else:
                                known[sn] = lease
                        # a removal or renewal leaves it early: then a full look corrects it
                        soonest = _soonest([*now.values(), soonest])
                except ConfigNotFound as exc:             # the directory went away under us
                    raise StoreUnavailable(str(exc)) from None
                if events:
                    yield events
        finally:
            self._wakers.discard(woken)
            if watch is not None:
                loop.remove_reader(watch.fd)
                watch.close()

    def _wait(self, soonest: datetime | None, watched: bool) -> float:
        """Seconds until the next full look: the poll interval, and with inotify (which tells
        of every write, but of no expiry) the earliest expiry of a known lease, else a rescan
        every RESCAN_INTERVAL as a safety net."""
        if not watched:
            return self.poll_interval if self.poll_interval is not None else POLL_INTERVAL
        wait = self.poll_interval if self.poll_interval is not None else RESCAN_INTERVAL
        if soonest is not None:
            left = (soonest - self._now()).total_seconds()
            wait = min(wait, max(left, 0.0) + EXPIRY_SLACK)
        return wait

    async def _open_watch(self) -> DirWatch | None:
        """inotify on subnets/ (made if the store exists without it); None where the kernel
        or the file system will not (then the watch polls), said once."""
        def open_() -> DirWatch:
            try:
                return DirWatch(self.subnets_dir)
            except FileNotFoundError:
                if not self.path.is_dir():
                    raise
                os.makedirs(self.subnets_dir, exist_ok=True)
                return DirWatch(self.subnets_dir)
        try:
            return await asyncio.to_thread(open_)
        except OSError as exc:
            if exc.errno != errno.ENOENT and not self._inotify_refused:
                self._inotify_refused = True
                log.warning("%s: no inotify (%s); polling every %g s", self.subnets_dir,
                            exc.strerror or exc, self._wait(None, False))
            return None

    def _live_of(self, names: set[str]) -> list[tuple[IPv4Network, Lease | None]]:
        """The named lease files as they are now: (subnet, lease or None if gone or expired)."""
        now = self._now()
        out = []
        for name in names:
            subnet = parse_subnet_key(name)
            if subnet is None:
                continue                          # temp files, .lock, foreign names
            entry = self._read_entry(name, subnet)
            if entry is None:
                self._cache.pop(name, None)
            live = entry is not None and entry.lease is not None and entry.expiration > now
            out.append((subnet, entry.lease if live and entry is not None else None))
        return out

    async def close(self) -> None:
        self._closed.set()
        for woken in self._wakers:
            woken.set()

    # -- also useful outside the interface -------------------------------------------------

    async def list_all_leases(self) -> list[Lease]:
        """Every readable lease file, expired ones included (for `dataplane leases --all`)."""
        return await self._run(lambda: [e.lease for e in self._scan() if e.lease is not None])

    # -- blocking implementation, run in a worker thread -----------------------------------

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed.is_set():
            raise StoreError(f"{self.path}: store is closed")
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise StoreUnavailable(f"{self.path}: {exc.strerror or exc}"
                                   f"{f' ({exc.filename})' if exc.filename else ''}") from exc

    def _now(self) -> datetime:
        return _EPOCH + timedelta(microseconds=int(self._clock() * 1_000_000))

    def _check_exists(self) -> None:
        if not self.path.is_dir():
            raise ConfigNotFound(f"{self.path}: no such store directory (create it, with "
                                 f"flannel's net-conf.json as {self.config_path})")

    def _read_config(self) -> NetworkConfig:
        self._check_exists()
        try:
            text = self.config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigNotFound(f"{self.config_path}: no network config (write flannel's "
                                 f"net-conf.json there)") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{self.config_path}: not UTF-8 text ({exc.reason})") from None
        return parse_network_config(text, source=str(self.config_path))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._check_exists()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StoreUnavailable(f"{self.lock_path}: still locked by another "
                                               f"process after {self.lock_timeout:g} s") from None
                    time.sleep(0.002)
            os.makedirs(self.subnets_dir, exist_ok=True)
            yield
        finally:
            os.close(fd)                          # closing the description drops the lock

    def _scan(self) -> list[_Entry]:
        """Every lease file (expired or not), sorted by subnet."""
        try:
            names = [e.name for e in os.scandir(self.subnets_dir)]
        except FileNotFoundError:
            self._check_exists()
            return []                             # no lease written yet
        entries = []
        seen = set()
        for name in names:
            subnet = parse_subnet_key(name)
            if subnet is None:
                continue                          # temp files, .lock, foreign names
            entry = self._read_entry(name, subnet)
            if entry is not None:
                entries.append(entry)
                seen.add(name)
        for name in list(self._cache):
            if name not in seen:
                self._cache.pop(name, None)
        entries.sort(key=lambda e: e.subnet)
        return entries

    def _read_entry(self, name: str, subnet: IPv4Network) -> _Entry | None:
        path = self.subnets_dir / name
        try:
            st = os.stat(path)
            cached = self._cache.get(name)
            if cached is not None and cached.sig == _sig(st):
                return cached
            # Read and fstat one open file, so content and expiry belong to the same version.
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            return None                           # deleted meanwhile
        sig = _sig(st)
        if st.st_mtime_ns > st.st_ctime_ns:       # we set mtime: it is the expiry
            expiration = _EPOCH + timedelta(microseconds=st.st_mtime_ns // 1000)
        else:                                     # written by someone else: renewed then
            expiration = (_EPOCH + timedelta(microseconds=st.st_mtime_ns // 1000)
                          + FOREIGN_TTL)
        try:
            lease: Lease | None = Lease.from_json(subnet, data, expiration)
        except LeaseFormatError as exc:
            lease = None
            if (name, sig) not in self._warned:
                self._warned.add((name, sig))
                log.warning("%s: not a flannel lease (%s); its subnet counts as taken until "
                            "it expires", path, exc)
        entry = _Entry(subnet, path, data, lease, expiration, sig)
        self._cache[name] = entry
        return entry

    def _live_leases(self) -> list[Lease]:
        now = self._now()
        return [e.lease for e in self._scan() if e.lease is not None and e.expiration > now]

    def _acquire(self, attrs: LeaseAttrs, requested: IPv4Network | None,
                 previous: IPv4Network | None, ttl: timedelta) -> Lease:
        config = self._read_config()
        if requested is not None:
            validate_subnet(config, requested)
        for _ in range(RACE_RETRIES):
            with self._locked():
                now = self._now()
                live = self._collect_garbage(now)
                target = self._choose(config, attrs, live, requested, previous)
                try:
                    return self._write(target, attrs, ttl, replace=target in live)
                except FileExistsError:
                    # Someone wrote the file without taking the lock; look again.
                    log.warning("%s appeared while we held the lock; retrying",
                                self.subnets_dir / subnet_key(target))
        raise StoreUnavailable(f"{self.path}: gave up acquiring a lease after "
                               f"{RACE_RETRIES} races with writers that ignore {self.lock_path}")

    def _collect_garbage(self, now: datetime) -> dict[IPv4Network, _Entry]:
        """Delete expired lease files and dead writers' temp files; return the live entries."""
        live = {}
        for entry in self._scan():
            if entry.expiration > now:
                live[entry.subnet] = entry
                continue
            log.info("lease %s (%s) expired at %s: deleting", entry.subnet,
                     entry.lease.public_ip if entry.lease else "unreadable",
                     entry.expiration.isoformat(timespec="seconds"))
            _unlink(entry.path)
        wall = time.time()
        for e in os.scandir(self.subnets_dir):
            if e.name.startswith(".") and e.name.endswith(".tmp"):
                try:
                    if wall - e.stat().st_ctime > STALE_TEMP_SECONDS:
                        _unlink(Path(e.path))
                except FileNotFoundError:
                    pass
        return live

    def _choose(self, config: NetworkConfig, attrs: LeaseAttrs,
                live: dict[IPv4Network, _Entry], requested: IPv4Network | None,
                previous: IPv4Network | None) -> IPv4Network:
        mine = [e for e in live.values() if e.held_by(attrs.public_ip)]
        target: IPv4Network | None = None
        if requested is not None:
            holder = live.get(requested)
            if holder is not None and not holder.held_by(attrs.public_ip):
                raise SubnetTaken(requested, holder.lease,
                                  "" if holder.lease else f" ({holder.path} is unreadable)")
            for e in live.values():               # leases of another length after a config change
                if (e.subnet != requested and e.subnet.overlaps(requested)
                        and not e.held_by(attrs.public_ip)):
                    raise SubnetTaken(requested, e.lease, f" (as part of {e.subnet})")
            target = requested
        else:
            target = choose_unrequested(config, attrs.public_ip, [e.subnet for e in mine],
                                        list(live), previous,
                                        f"{len(live)} leases in {self.subnets_dir}",
                                        {sn: e.lease for sn, e in live.items()})
        for e in mine:                            # one node, one lease
            if e.subnet != target:
                log.info("releasing %s, also held by %s", e.subnet, attrs.public_ip)
                _unlink(e.path)
        return target

    def _renew(self, lease: Lease, ttl: timedelta) -> Lease:
        with self._locked():
            now = self._now()
            entry = self._read_entry(subnet_key(lease.subnet), lease.subnet)
            if (entry is not None and entry.expiration > now
                    and not entry.held_by(lease.public_ip)):
                raise SubnetTaken(lease.subnet, entry.lease, ": our lease was taken over")
            if entry is not None and entry.data == lease.to_json():
                now = self._now()
                expiration = now + ttl
                os.utime(entry.path, ns=(_ns(now), _ns(expiration)))
                return Lease.from_attrs(lease.subnet, lease.attrs, expiration)
            if entry is None or entry.expiration <= now:
                log.warning("lease %s had vanished or expired; writing it again", lease.subnet)
            return self._write(lease.subnet, lease.attrs, ttl, replace=entry is not None)

    def _release(self, subnet: IPv4Network) -> None:
        with self._locked():
            _unlink(self.subnets_dir / subnet_key(subnet))

    def _write(self, subnet: IPv4Network, attrs: LeaseAttrs, ttl: timedelta, *,
               replace: bool) -> Lease:
        """Write a lease file whole: replace=False creates it (FileExistsError if it exists).

        The expiry is taken only once the data is synced, right before utime and link/rename,
        so with ttl >= MIN_TTL the file's mtime is always ahead of its ctime: that is how a
        reader tells our expiry from a hand-written file's modification time.
        """
        key = subnet_key(subnet)
        final = self.subnets_dir / key
        tmp = self.subnets_dir / f".{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(attrs.to_json())
                f.flush()
                os.fsync(f.fileno())
            now = self._now()
            expiration = now + ttl
            os.utime(tmp, ns=(_ns(now), _ns(expiration)))
            if replace:
                os.rename(tmp, final)
            else:
                os.link(tmp, final)
        finally:
            _unlink(tmp)
        return Lease.from_attrs(subnet, attrs, expiration)


def _soonest(items: Iterable[Lease | datetime | None]) -> datetime | None:
    """The earliest expiration among leases (and datetimes, or None for none)."""
    times = [x.expiration if isinstance(x, Lease) else x for x in items if x is not None]
    return min((t for t in times if t is not None), default=None)


def _ttl(ttl: TTL) -> timedelta:
    ttl = as_ttl(ttl)
    if ttl < MIN_TTL:
        raise ValueError(f"lease TTL must be at least {MIN_TTL.total_seconds():g} s, not {ttl}")
    return ttl


def _sig(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _ns(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
