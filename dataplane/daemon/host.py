"""What a node asks of its machine, behind one interface: the seam between the node's logic
and the kernel.

    underlay   which interface carries the tunnel, and the address we publish
    sockets    the tunnel's UDP sockets, one (receive, send) pair per worker
    TUN        the device and its queues; which offloads the kernel grants
    addresses  the TUN's address, MTU and the pod network's route; DirectRouting's routes
               and the blackhole route of --ip-blackhole-route
    netfilter  flanneld's NAT and FORWARD rules

`LinuxHost` is this machine (netlink, ioctls, iptables/nft): what `dataplane run` uses.
`dataplane.testing.FakeHost` stands in for it in one process and without root; tests that play
an older kernel use `dataplane.testing.DenyingLinuxHost`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Protocol

from dataplane import hostnet
from dataplane.daemon.directroutes import KernelRoutes, RouteTable
from dataplane.daemon.pump import open_worker_sockets, udp_offloads
from dataplane.netfilter import NetfilterOptions, TrafficManager
from dataplane.tun import OFFLOAD_CHOICES, TUN_PATH, Tun, open_tun, set_offload

SocketPair = tuple[socket.socket, socket.socket]      # (receive, send) of one worker


@dataclass(frozen=True)
class Offloads:
    """What the kernel granted: the TUNSETOFFLOAD set taken, UDP_SEGMENT and UDP_GRO on every
    tunnel socket."""
    tun: int
    gso: bool
    gro: bool


class TrafficRules(Protocol):
    """flanneld's rules once installed: kept in step until the node stops."""

    async def keep(self) -> None: ...


class Host(Protocol):
    def unfit(self) -> str | None:
        """Why a node cannot run here (no CAP_NET_ADMIN, no TUN device), or None."""
        ...

    def find_underlay(self, selection: hostnet.Selection) -> hostnet.Underlay: ...

    def open_sockets(self, address: str, port: int, workers: int) -> list[SocketPair]:
        """OSError (EADDRINUSE, ...) if the port cannot be bound."""
        ...

    def open_tun(self, name: str, queues: int, vnet_hdr: bool) -> Tun: ...

    def negotiate_offloads(self, tun: Tun, pairs: list[SocketPair]) -> Offloads: ...

    def configure_tun(self, name: str, address: str, mtu: int, network: str,
                      txqueuelen: int) -> None: ...

    def direct_routes(self, underlay: hostnet.Underlay,
                      network: ipaddress.IPv4Network) -> RouteTable: ...

    def ensure_blackhole_route(self, subnet: str) -> bool:
        """True if the route had to be added."""
        ...

    def start_traffic(self, network: ipaddress.IPv4Network, subnet: ipaddress.IPv4Network, *,
                      ip_masq: bool, nftables: bool,
                      options: NetfilterOptions) -> TrafficRules: ...


CAP_NET_ADMIN = 12      # linux/capability.h


def has_net_admin() -> bool:
    """The capability, not the uid: root without it fails, a unit granting it to a user works."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return os.geteuid() == 0


class LinuxHost:
    """This machine, in the current network namespace."""

    # TUNSETOFFLOAD sets tried in order (a test host plays a kernel that refuses some)
    offload_choices: tuple[int, ...] = OFFLOAD_CHOICES

    def unfit(self) -> str | None:
        if not has_net_admin():
            return ("must run as root (or with CAP_NET_ADMIN): the TUN device, its address "
                    "and routes need CAP_NET_ADMIN")
        if not os.path.exists(TUN_PATH):
            return f"{TUN_PATH} is missing: load the tun module (modprobe tun)"
        return None

    def find_underlay(self, selection: hostnet.Selection) -> hostnet.Underlay:
        return hostnet.find_underlay(selection=selection)

    def open_sockets(self, address: str, port: int, workers: int) -> list[SocketPair]:
        return open_worker_sockets(address, port, workers)

    def open_tun(self, name: str, queues: int, vnet_hdr: bool) -> Tun:
        return open_tun(name, queues=queues, vnet_hdr=vnet_hdr)

    def negotiate_offloads(self, tun: Tun, pairs: list[SocketPair]) -> Offloads:
        """Ask the kernel for every offload we can use (TUNSETOFFLOAD applies to the whole
        device: any queue will do)."""
        taken = set_offload(tun.fd, self.offload_choices)
        granted = [udp_offloads(sock) for pair in pairs for sock in set(pair)]
        return Offloads(taken, all(g for g, _ in granted), all(r for _, r in granted))

    def configure_tun(self, name: str, address: str, mtu: int, network: str,
                      txqueuelen: int) -> None:
        hostnet.configure_tun(name, address, mtu, network, txqueuelen)

    def direct_routes(self, underlay: hostnet.Underlay,
                      network: ipaddress.IPv4Network) -> RouteTable:
        return KernelRoutes(underlay, network)

    def ensure_blackhole_route(self, subnet: str) -> bool:
        return hostnet.ensure_blackhole_route(subnet)

    def start_traffic(self, network: ipaddress.IPv4Network, subnet: ipaddress.IPv4Network, *,
                      ip_masq: bool, nftables: bool,
                      options: NetfilterOptions) -> TrafficRules:
        return TrafficManager.start(network, subnet, ip_masq=ip_masq, nftables=nftables,
                                    options=options)
