"""One node's life: lease, device, peers, forwarding, and a clean exit.

    start: network config from the store -> underlay -> UDP socket -> lease -> TUN + route
           -> forwarder with a snapshot of the other leases -> readers -> subnet.env (ready)
    run:   the lease watch keeps the peer table in step; the lease is renewed before it ends
    stop:  readers off, TUN closed (the kernel removes it and its route); the lease (left to
           expire on its TTL) and subnet.env stay, as flanneld leaves them, so the next start
           takes the same subnet back and pods keep their addresses meanwhile. Giving the
           subnet back is explicit: `dataplane leases release` (daemon/decommission.py).

The store may fail at any time (etcd down, a leader change): every store call is retried with
backoff while forwarding goes on with the last known peers, and a watch that breaks is
resumed from a fresh listing, whose difference with what we knew is applied as events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from dataplane import fastpath, hostnet, subnetenv
from dataplane.backends import BACKENDS
from dataplane.daemon.directroutes import DirectRoutes
from dataplane.daemon.errors import BindError
from dataplane.daemon.host import Host, LinuxHost, SocketPair, TrafficRules
from dataplane.daemon.ownlease import OwnWrites
from dataplane.daemon.peers import Peers, Tunnels
from dataplane.daemon.pump import (Pump, Worker, close_sockets, socket_buffers,
                                   socket_busy_poll)
from dataplane.fastpath.api import Forwarder
from dataplane.fastpath.types import (IO_TUN_USO, IO_UDP_GRO, IO_UDP_GSO, IO_VNET, URING_BATCH,
                                      URING_MULTISHOT, URING_OFF, Counters, ForwarderConfig,
                                      format_mac)
from dataplane.lease import Lease, LeaseAttrs
from dataplane.netconf import NetworkConfig
from dataplane.netfilter import NetfilterOptions
from dataplane.store.base import (ConfigNotFound, EventKind, LeaseEvent, StoreUnavailable,
                                  SubnetStore, SubnetTaken, renewal_delay)
from dataplane.tun import TUN_F_USO4, Tun, describe_offload

if TYPE_CHECKING:                           # run() loads it only when serving /metrics
    from dataplane.daemon.metrics import MetricsServer

log = logging.getLogger(__name__)

TXQUEUELEN = 5000                           # the default 500 drops the bursts a batch makes
BACKOFF_MIN, BACKOFF_MAX = 0.5, 10.0

T = TypeVar("T")


class LeaseLost(RuntimeError):
    """Our subnet now belongs to another node: pods addressed from it cannot stay."""


@dataclass
class NodeOptions:
    store: SubnetStore
    public_ip: str | None = None
    iface: str | None = None
    selection: hostnet.Selection | None = None   # --iface/--iface-regex/--iface-can-reach
    subnet: ipaddress.IPv4Network | None = None
    subnet_file: str = subnetenv.DEFAULT_PATH
    fastpath: str = fastpath.DEFAULT
    offload: bool = True            # TUN super-packets, UDP GSO/GRO (C fast path only)
    workers: int = 1                # TUN queues and forwarding threads (C fast path only)
    busy_poll: int = 0              # --busy-poll: microseconds to keep polling after a wakeup
    tun_uring: str = "auto"         # io_uring on the TUN: auto (the best there is), batch, off
    ip_masq: bool = False
    blackhole_route: bool = False   # flanneld's --ip-blackhole-route, kept every resync period
    netfilter: NetfilterOptions = field(default_factory=NetfilterOptions)
    tun_name: str | None = None
    lease_ttl: float = 24 * 3600
    renew_margin: float = 3600
    healthz: tuple[str, int] | None = None      # (address, port) of /healthz and /metrics
    on_ready: list[Callable[[Node], None]] = field(default_factory=list)
    host: Host = field(default_factory=LinuxHost)   # the machine: TUN, sockets, netlink


def vtep_mac(public_ip: str, vni: int, prefix: bytes | None = None) -> bytes:
    """A VtepMAC stable across restarts of the same node: derived, locally administered,
    unicast. A kernel receiver drops frames whose source MAC equals its own, so it must differ
    between nodes; the public IP makes it so. With Backend.MacPrefix (flannel's, Windows only
    there) it is that prefix and the public IP's four octets: unique wherever the IPs are."""
    if prefix is not None:
        return prefix + ipaddress.IPv4Address(public_ip).packed
    digest = bytearray(hashlib.sha256(f"dataplane-vtep/{public_ip}/{vni}".encode()).digest()[:6])
    digest[0] = (digest[0] | 0x02) & 0xFE
    return bytes(digest)


class Node:
    def __init__(self, options: NodeOptions) -> None:
        self.opts = options
        self.store = options.store
        self.host = options.host
        self.config: NetworkConfig | None = None
        self.lease: Lease | None = None
        self.fwds: list[Forwarder] = []      # one forwarder per worker
        self.workers: list[Worker] = []      # threads, when there are several
        self.pumps: list[Pump] = []          # one per worker: the readers (busy-poll rounds)
        self.underlay: hostnet.Underlay | None = None
        self.tun_name = ""
        self.tun_mtu = 0
        self.mac = b""
        self.tunnels = Tunnels()             # the forwarders, as the peers see them
        self.direct = DirectRoutes(None, self.tunnels)   # DirectRouting peers: not tunnelled
        self.peers: Peers | None = None      # the leases and peers, once we hold a lease
        self.ready = asyncio.Event()
        self.started = time.time()
        self.store_errors = 0
        self.metrics: MetricsServer | None = None
        self.io_flags = 0
        self.tun_io = "read"                 # how the forwarders read the TUN (tun_uring)
        self.traffic: TrafficRules | None = None        # NAT and FORWARD rules
        self._stop = asyncio.Event()
        self.own = OwnWrites(options.lease_ttl, lambda: self.lease)   # vs. a second writer

    # ---- lifecycle --------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if self.opts.healthz is not None:
                from dataplane.daemon.metrics import MetricsServer
                self.metrics = MetricsServer(self, *self.opts.healthz)
                await self.metrics.start()
                stack.push_async_callback(self.metrics.close)
            if not await self._start(stack):
                return                                   # stopped while starting
            assert self.traffic is not None, "_start set the rules up"
            tasks = [asyncio.create_task(self._follow_leases(), name="lease-watch"),
                     asyncio.create_task(self._keep_lease(), name="lease-renew"),
                     asyncio.create_task(self.traffic.keep(), name="netfilter-resync")]
            if self.opts.blackhole_route:
                tasks.append(asyncio.create_task(self._keep_blackhole(), name="blackhole"))
            stack.push_async_callback(_cancel, tasks)
            self.ready.set()
            for callback in self.opts.on_ready:
                callback(self)
            marked = asyncio.create_task(self._retry("tell the store we are ready",
                                                     self.store.node_ready), name="node-ready")
            stack.push_async_callback(_cancel, [marked])
            stop = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            self.ready.clear()
            for task in done:
                if task is not stop and not task.cancelled():
                    failure = task.exception()
                    if failure is not None:
                        raise failure
            if self.lease is not None:
                log.info("stopping; lease %s kept until %s and %s left in place (give the "
                         "subnet back with `dataplane leases release`)", self.lease.subnet,
                         self.lease.expiration, self.opts.subnet_file)

    async def _start(self, stack: contextlib.AsyncExitStack) -> bool:
        opts = self.opts
        config = await self._retry(
            "read the network config", self.store.get_network_config,
            also=(ConfigNotFound,) if self.store.waits_for_config else ())
        if config is None:
            return False
        self.config = cfg = config
        backend = cfg.backend_type
        for warning in cfg.warnings:
            log.warning("%s", warning)
        stored_ip = await self._retry("read our public IP from the store",
                                      self.store.node_public_ip)
        if self._stop.is_set():
            return False
        # pyroute2's synchronous API runs a loop of its own: keep it off ours, in a thread.
        selection = opts.selection or hostnet.Selection(opts.public_ip,
                                                        (opts.iface,) if opts.iface else ())
        if stored_ip:              # the store's word (a Node's node-public-ip annotation) wins
            selection = dataclasses.replace(selection, public_ip=stored_ip)
        self.underlay = ul = await asyncio.to_thread(self.host.find_underlay, selection)
        log.debug("underlay %s (mtu %d): public IP %s, sending from %s", ul.ifname, ul.mtu,
                  ul.address, ul.bind_address)
        if cfg.mtu is not None and cfg.mtu > ul.mtu:
            log.warning("Backend.MTU %d is above %s's MTU %d: larger tunnel packets will be "
                        "fragmented or refused", cfg.mtu, ul.ifname, ul.mtu)
        self.tun_mtu = (cfg.mtu or ul.mtu) - BACKENDS[backend].overhead
        self.mac = vtep_mac(ul.address, cfg.vni, cfg.mac_prefix) if backend == "vxlan" else b""
        if cfg.direct_routing:
            self.direct = DirectRoutes(self.host.direct_routes(ul, cfg.network), self.tunnels)
            log.info("DirectRouting: peers on %s's own subnet are routed, not tunnelled",
                     ul.ifname)
            stack.callback(self.direct.close)

        impl = fastpath.load(opts.fastpath)
        workers = opts.workers if opts.fastpath == "c" else 1   # the reference holds the GIL
        # Sockets before the lease: a busy port costs no lease.
        try:
            pairs = self.host.open_sockets(ul.bind_address, cfg.port, workers)
        except OSError as exc:
            raise BindError("the tunnel port (UDP)", ul.bind_address, cfg.port, exc, {
                errno.EADDRINUSE: "another dataplane or flanneld on this node?",
                errno.EADDRNOTAVAIL: "check --public-ip and --iface"}) from None
        stack.callback(close_sockets, pairs)

        previous = subnetenv.previous_subnet(opts.subnet_file)
        lease = await self._retry("acquire a lease", lambda: self.store.acquire_lease(
            self._lease_attrs(), requested=opts.subnet, previous=previous, ttl=opts.lease_ttl))
        if lease is None:
            return False
        self.lease = lease
        self.own.wrote(lease)
        log.info("lease %s for %s (%s backend, store %s)", lease.subnet, ul.address, backend,
                 self.store.location)

        self.tun_name = opts.tun_name or BACKENDS[backend].device(cfg.vni)
        offload = opts.offload and opts.fastpath == "c"
        tun = self.host.open_tun(self.tun_name, queues=workers, vnet_hdr=offload)
        stack.callback(tun.close)
        self.io_flags = self._negotiate_offloads(tun, pairs) if offload else 0
        rcv, snd = socket_buffers(pairs[0][0])
        log.info("socket buffers: receive %d KiB, send %d KiB; %d worker%s", rcv >> 10,
                 snd >> 10, workers, "s" if workers > 1 else "")
        await asyncio.to_thread(self.host.configure_tun, self.tun_name,
                                str(lease.subnet.network_address), self.tun_mtu,
                                str(cfg.network), TXQUEUELEN)

        fwd_config = ForwarderConfig(
            mode=BACKENDS[backend].mode,
            local_subnet=str(lease.subnet), port=cfg.port, vni=cfg.vni,
            mac=self.mac or b"\0" * 6, max_inner=self.tun_mtu, io_flags=self.io_flags)
        self.fwds = self.tunnels.fwds = [impl.Forwarder(fwd_config) for _ in range(workers)]
        self.tun_io = self._tun_uring(tun.fds)
        listing = await self._retry("list leases", self.store.list_leases)
        if listing is None:
            return False
        leases, self._cursor = listing
        self.peers = Peers(lease.subnet, BACKENDS[backend], self.direct)
        self.direct.adopt()
        self._own_leases(self.peers.reset(leases))
        self.direct.prune()

        pumps = [Pump(fwd, fd, recv, send, busy_poll_us=opts.busy_poll)
                 for fwd, fd, (recv, send) in zip(self.fwds, tun.fds, pairs)]
        self.pumps = pumps
        if opts.busy_poll:
            socket_busy_poll(list({id(s): s for pair in pairs for s in pair}.values()),
                             opts.busy_poll)
        if workers == 1:
            pumps[0].start()
            stack.callback(pumps[0].stop)
        else:
            self.workers = self.tunnels.workers = [Worker(i, pump) for i, pump in enumerate(pumps)]
            for worker in self.workers:
                worker.start()
                stack.callback(worker.stop)

        # flanneld's rules before subnet.env: pods created from it have NAT; a stop keeps them.
        self.traffic = await asyncio.to_thread(
            self.host.start_traffic, cfg.network, lease.subnet, ip_masq=opts.ip_masq,
            nftables=cfg.enable_nftables, options=opts.netfilter)
        subnetenv.write(opts.subnet_file, network=cfg.network, subnet=lease.subnet,
                        mtu=self.tun_mtu, ipmasq=opts.ip_masq)
        log.info("forwarding: %s mtu %d, %d peers, fastpath %s%s%s", self.tun_name,
                 self.tun_mtu, len(self.peers), opts.fastpath,
                 f", VtepMAC {format_mac(self.mac)}" if self.mac else "",
                 f", busy-poll {opts.busy_poll} us" if opts.busy_poll else "")
        return True

    def _tun_uring(self, fds: list[int]) -> str:
        """io_uring on each worker's TUN queue, as far as --tun-uring and the kernel allow;
        logs and returns the mode taken (batch/off also play a kernel without multishot reads
        or without io_uring, so both fallbacks can be tested here)."""
        want = {"auto": URING_MULTISHOT, "batch": URING_BATCH, "off": URING_OFF}
        modes = {fwd.tun_uring(fd, want[self.opts.tun_uring]) for fwd, fd in zip(self.fwds, fds)}
        name = {URING_OFF: "read", URING_BATCH: "io_uring-batch",
                URING_MULTISHOT: "io_uring-multishot"}[min(modes)]
        log.info("TUN I/O: %s (--tun-uring %s%s)", name, self.opts.tun_uring,
                 "; the python fast path reads one packet a call" if self.opts.fastpath != "c"
                 else "")
        return name

    def _negotiate_offloads(self, tun: Tun, pairs: list[SocketPair]) -> int:
        """Ask the host for every offload we can use; log what it granted."""
        assert self.underlay is not None, "found before the TUN is opened"
        granted = self.host.negotiate_offloads(tun, pairs)
        taken, gso, gro = granted.tun, granted.gso, granted.gro
        flags = IO_VNET
        flags |= IO_UDP_GSO if gso else 0
        flags |= IO_UDP_GRO if gro else 0
        flags |= IO_TUN_USO if taken & TUN_F_USO4 else 0
        log.info("offloads: TUN %s; UDP_SEGMENT %s, UDP_GRO %s", describe_offload(taken),
                 "on" if gso else "refused", "on" if gro else "refused")
        if gro:
            # GRO on the underlay device aggregates a UDP flow for a local socket that asked
            # for UDP_GRO; rx-udp-gro-forwarding only matters for UDP the host forwards.
            log.info("underlay %s: tunnel datagrams reach us GRO-aggregated through UDP_GRO; "
                     "rx-udp-gro-forwarding left as it is (we terminate, not forward)",
                     self.underlay.ifname)
        return flags

    def _lease_attrs(self) -> LeaseAttrs:
        assert self.config is not None and self.underlay is not None, "read before any lease"
        backend = BACKENDS[self.config.backend_type]
        return LeaseAttrs(self.underlay.address, backend.lease_type,
                          backend.backend_data(self.config.vni, self.mac))

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]],
                     also: tuple[type[Exception], ...] = ()) -> T | None:
        """call() until it succeeds, backing off while the store is unavailable; None if the
        node is stopped meanwhile. Other errors propagate: they are not the store's weather."""
        delay = BACKOFF_MIN
        retried: tuple[type[Exception], ...] = (StoreUnavailable, *also)
        while not self._stop.is_set():
            try:
                return await call()
            except retried as exc:
                self.store_errors += 1
                log.warning("cannot %s (%s); retrying in %.1f s", what, exc, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, BACKOFF_MAX)
        return None

    # ---- peers ------------------------------------------------------------------------------

    def _own_leases(self, events: list[LeaseEvent]) -> None:
        """The events about our own subnet, which the peers leave to us."""
        for event in events:
            self._own_lease(event)

    def _own_lease(self, event: LeaseEvent) -> None:
        if event.kind == EventKind.REMOVED:
            if not self._stop.is_set():
                self._lost = True
        else:
            self.own.seen(event.lease)

    def counters(self) -> Counters | None:
        return Counters.total([fwd.counters() for fwd in self.fwds]) if self.fwds else None

    def busy_poll_rounds(self) -> tuple[int, int]:
        """(rounds polled, rounds that moved packets) over the workers (--busy-poll)."""
        return (sum(p.poll_rounds for p in self.pumps),
                sum(p.poll_hits for p in self.pumps))

    async def _follow_leases(self) -> None:
        peers = self.peers
        assert peers is not None, "_start made them"
        self._lost = False
        while not self._stop.is_set():
            try:
                async for events in self.store.watch_leases(self._cursor):
                    self._own_leases(peers.update(events))
                    if self._lost:
                        await self._reacquire()
                return                                    # the store was closed
            except StoreUnavailable as exc:
                self.store_errors += 1
                log.warning("lease watch broke (%s); forwarding goes on with %d known peers",
                            exc, len(peers))
            listing = await self._retry("list leases", self.store.list_leases)
            if listing is None:
                return
            leases, self._cursor = listing
            self._own_leases(peers.reset(leases))
            if self._lost:
                await self._reacquire()
            log.info("lease watch resumed: %d peers", len(peers))

    async def _reacquire(self) -> None:
        """An operator (or expiry) removed our lease: take the same subnet back."""
        self._lost = False
        subnet = self._held().subnet
        log.warning("our lease %s was removed from the store; re-acquiring it", subnet)
        try:
            # also while the config is missing: an etcd that came back empty is refilled by
            # its operator, and meanwhile the last known peers keep forwarding
            lease = await self.own.write(lambda: self._retry(
                "re-acquire our lease", lambda: self.store.acquire_lease(
                    self._lease_attrs(), requested=subnet, ttl=self.opts.lease_ttl),
                also=(ConfigNotFound,)), self._hold)
        except SubnetTaken as exc:
            raise LeaseLost(f"lease {subnet} was taken by another node: {exc}") from None
        if lease is not None:
            self.lease = lease
            if self.peers is not None:                # always, once we follow the leases
                self.peers.remember(lease)

    def _hold(self, lease: Lease) -> None:
        self.lease = lease

    def _held(self) -> Lease:
        """Our lease, for the tasks that run once _start took one (it is never dropped)."""
        assert self.lease is not None, "_start acquired the lease"
        return self.lease

    async def _keep_blackhole(self) -> None:
        """flanneld's --ip-blackhole-route: our subnet's route of last resort, put back every
        --iptables-resync seconds (as flanneld does) if someone removed it."""
        failed = ""
        while True:
            try:
                subnet = self._held().subnet
                if await asyncio.to_thread(self.host.ensure_blackhole_route, str(subnet)):
                    log.info("blackhole route %s metric %d", subnet,
                             hostnet.BLACKHOLE_METRIC)
                failed = ""
            except hostnet.HostNetError as exc:
                if str(exc) != failed:                 # once per distinct failure
                    log.warning("cannot set the blackhole route: %s", exc)
                failed = str(exc)
            await asyncio.sleep(self.opts.netfilter.resync)

    async def _keep_lease(self) -> None:
        margin = timedelta(seconds=self.opts.renew_margin)
        while True:
            await asyncio.sleep(max(renewal_delay(self._held(), margin), 0.2))
            try:
                lease = await self.own.write(lambda: self._retry(
                    "renew our lease", lambda: self.store.renew_lease(
                        self._held(), ttl=self.opts.lease_ttl)), self._hold)
            except SubnetTaken as exc:
                raise LeaseLost(f"lease {self._held().subnet} was taken by another node: "
                                f"{exc}") from None
            if lease is None:
                return
            self.lease = lease
            log.debug("renewed lease %s until %s", lease.subnet, lease.expiration)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
