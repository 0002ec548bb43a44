"""One node's life: lease, device, peers, forwarding, and a clean exit.

    start: network config from the store -> underlay -> UDP socket -> lease -> TUN + route
           -> forwarder with a snapshot of the other leases -> readers -> subnet.env (ready)
    run:   lease watch keeps the peer table in step; the lease is renewed before it expires
    stop:  readers off, TUN closed (the kernel removes it and its route), lease released,
           subnet.env removed
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from dataplane import fastpath, hostnet, subnetenv
from dataplane.daemon.datapath import Datapath, open_udp_socket
from dataplane.fastpath.types import MODE_UDP, MODE_VXLAN, ForwarderConfig, format_mac, parse_mac
from dataplane.lease import Lease
from dataplane.netconf import NetworkConfig
from dataplane.store.base import LeaseEvent, SubnetStore
from dataplane.tun import open_tun

log = logging.getLogger(__name__)

OVERHEAD = {"udp": 28, "vxlan": 50}        # outer IPv4 + UDP (+ VXLAN + inner Ethernet)
TXQUEUELEN = 5000                           # the default 500 drops bursts from a batch


@dataclass
class NodeOptions:
    store: SubnetStore
    public_ip: str | None = None
    iface: str | None = None
    subnet: ipaddress.IPv4Network | None = None
    subnet_file: str = subnetenv.DEFAULT_PATH
    fastpath: str = fastpath.DEFAULT
    ip_masq: bool = False
    tun_name: str | None = None
    lease_ttl: float = 24 * 3600
    renew_margin: float = 3600
    on_ready: list = field(default_factory=list)   # callbacks(node) once forwarding


def vtep_mac(public_ip: str, vni: int) -> bytes:
    """A VtepMAC that is stable across restarts of the same node: derived, locally
    administered, unicast. A kernel receiver drops frames whose source MAC equals its own, so
    it must differ between nodes; the public IP makes it so."""
    digest = bytearray(hashlib.sha256(f"dataplane-vtep/{public_ip}/{vni}".encode()).digest()[:6])
    digest[0] = (digest[0] | 0x02) & 0xFE
    return bytes(digest)


class Node:
    def __init__(self, options: NodeOptions) -> None:
        self.opts = options
        self.store = options.store
        self.config: NetworkConfig | None = None
        self.lease: Lease | None = None
        self.fwd = None
        self.datapath: Datapath | None = None
        self.underlay: hostnet.Underlay | None = None
        self.tun_name = ""
        self.tun_mtu = 0
        self.mac = b""
        self.peers: dict[ipaddress.IPv4Network, Lease] = {}
        self.ready = asyncio.Event()
        self.started = time.time()
        self.store_errors = 0
        self._stop = asyncio.Event()

    # ---- lifecycle --------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await self._start(stack)
            tasks = [asyncio.create_task(self._follow_leases(), name="lease-watch"),
                     asyncio.create_task(self._keep_lease(), name="lease-renew")]
            stack.push_async_callback(_cancel, tasks)
            self.ready.set()
            for callback in self.opts.on_ready:
                callback(self)
            stop = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            for task in done:
                if task is not stop and task.exception():
                    raise task.exception()
            log.info("stopping")

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        opts = self.opts
        self.config = cfg = await self.store.get_network_config()
        backend = cfg.backend_type
        self.underlay = ul = hostnet.find_underlay(opts.public_ip, opts.iface)
        self.tun_mtu = ul.mtu - OVERHEAD[backend]
        self.mac = vtep_mac(ul.address, cfg.vni) if backend == "vxlan" else b""

        sock = open_udp_socket(ul.address, cfg.port)
        stack.callback(sock.close)

        self.lease = await self.store.acquire_lease(
            self._lease_attrs(), requested=opts.subnet, previous=self._previous_subnet(),
            ttl=opts.lease_ttl)
        stack.push_async_callback(self._release)
        subnet = self.lease.subnet
        log.info("lease %s for %s (%s backend)", subnet, ul.address, backend)

        self.tun_name = opts.tun_name or ("flannel0" if backend == "udp" else f"flannel.{cfg.vni}")
        tun = open_tun(self.tun_name)
        stack.callback(tun.close)
        hostnet.configure_tun(self.tun_name, str(subnet.network_address), self.tun_mtu,
                              str(cfg.network), TXQUEUELEN)

        impl = fastpath.load(opts.fastpath)
        self.fwd = impl.Forwarder(ForwarderConfig(
            mode=MODE_VXLAN if backend == "vxlan" else MODE_UDP,
            local_subnet=str(subnet), port=cfg.port, vni=cfg.vni,
            mac=self.mac or b"\0" * 6, max_inner=self.tun_mtu))
        leases, cursor = await self.store.list_leases()
        for lease in leases:
            self._apply(LeaseEvent("added", lease))
        self._cursor = cursor

        self.datapath = Datapath(self.fwd, tun.fd, sock)
        self.datapath.start()
        stack.callback(self.datapath.stop)

        subnetenv.write(opts.subnet_file, network=cfg.network, subnet=subnet,
                        mtu=self.tun_mtu, ipmasq=opts.ip_masq)
        stack.callback(_unlink, opts.subnet_file)
        log.info("forwarding: %s mtu %d, %d peers, fastpath %s%s", self.tun_name, self.tun_mtu,
                 len(self.peers), opts.fastpath,
                 f", VtepMAC {format_mac(self.mac)}" if self.mac else "")

    def _lease_attrs(self) -> dict:
        attrs = {"public_ip": self.underlay.address}
        if self.config.backend_type == "vxlan":
            attrs["backend_type"] = "vxlan"
            attrs["backend_data"] = {"VNI": self.config.vni, "VtepMAC": format_mac(self.mac)}
        return attrs

    def _previous_subnet(self) -> ipaddress.IPv4Network | None:
        try:
            env = subnetenv.read(self.opts.subnet_file)
        except (OSError, ValueError):
            return None
        value = env.get("FLANNEL_SUBNET")
        return ipaddress.IPv4Network(value, strict=False) if value else None

    async def _release(self) -> None:
        if self.lease is None:
            return
        try:
            await self.store.release_lease(self.lease.subnet)
            log.info("released lease %s", self.lease.subnet)
        except Exception as exc:        # the lease will expire on its own
            log.warning("could not release lease %s: %s", self.lease.subnet, exc)

    # ---- peers ------------------------------------------------------------------------------

    def _apply(self, event: LeaseEvent) -> None:
        lease = event.lease
        if lease.subnet == self.lease.subnet:
            if event.kind == "removed" and not self._stop.is_set():
                log.warning("our lease %s was removed from the store; re-acquiring", lease.subnet)
                self._lost_lease = True
            return
        if event.kind == "removed":
            if self.peers.pop(lease.subnet, None) is not None:
                self.fwd.del_peer(str(lease.subnet))
                log.info("peer %s (%s) left", lease.subnet, lease.public_ip)
            return
        mac = b"\0" * 6
        if self.config.backend_type == "vxlan":
            data = lease.backend_data or {}
            if lease.backend_type != "vxlan" or "VtepMAC" not in data:
                log.warning("ignoring lease %s: not a vxlan lease", lease.subnet)
                return
            try:
                mac = parse_mac(data["VtepMAC"])
            except ValueError:
                log.warning("ignoring lease %s: bad VtepMAC %r", lease.subnet, data["VtepMAC"])
                return
        known = self.peers.get(lease.subnet)
        self.peers[lease.subnet] = lease
        self.fwd.set_peer(str(lease.subnet), lease.public_ip, mac)
        if known is None or known.public_ip != lease.public_ip:
            log.info("peer %s at %s", lease.subnet, lease.public_ip)

    async def _follow_leases(self) -> None:
        async for events in self.store.watch_leases(self._cursor):
            for event in events:
                self._apply(event)
            if getattr(self, "_lost_lease", False):
                self._lost_lease = False
                await self._reacquire()

    async def _reacquire(self) -> None:
        self.lease = await self.store.acquire_lease(
            self._lease_attrs(), requested=self.lease.subnet, previous=None,
            ttl=self.opts.lease_ttl)
        log.info("re-acquired lease %s", self.lease.subnet)

    async def _keep_lease(self) -> None:
        while True:
            expires = self.lease.expiration
            if expires is None:
                wait = self.opts.lease_ttl - self.opts.renew_margin
            else:
                left = (expires - datetime.now(timezone.utc)).total_seconds()
                wait = left - self.opts.renew_margin
            await asyncio.sleep(max(wait, 1.0))
            self.lease = await self.store.renew_lease(self.lease, ttl=self.opts.lease_ttl)
            log.debug("renewed lease %s", self.lease.subnet)


async def _cancel(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
