"""A machine for a node in one process, without root.

    TUN       each queue a socketpair(AF_UNIX, SOCK_DGRAM): the node's end is the queue's
              descriptor (one packet per read and write, as a TUN with IFF_NO_PI), the test's
              end plays the kernel (FakeTun.send: what pods send; FakeTun.recv: what they get)
    sockets   the node's real tunnel sockets, on a loopback address of its own (127.x.y.n): the
              drains and the kernel's UDP are the real ones, nothing leaves loopback
    the rest  the underlay is given, not looked up; address, MTU, routes and netfilter rules
              are recorded, not applied (the kernel's side of those is tested in namespaces)

FakeNetwork hands out those loopback addresses from a block chosen at random, so concurrent
runs on one machine do not meet on the tunnel port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import select
import socket
import threading
from dataclasses import dataclass, field

from dataplane import hostnet
from dataplane.daemon.host import Offloads, SocketPair, TrafficRules
from dataplane.daemon.pump import open_worker_sockets
from dataplane.fastpath.types import VNET_HLEN
from dataplane.netfilter import NetfilterOptions
from dataplane.tun import Tun

NO_OFFLOADS = Offloads(tun=0, gso=False, gro=False)     # an old kernel's answer


class FakeTun(Tun):
    """A TUN device whose queues are socketpairs; `fds` are the node's ends."""

    def __init__(self, name: str, queues: int, vnet_hdr: bool) -> None:
        super().__init__(name)
        self.vnet_hdr = vnet_hdr
        self.kernel: list[socket.socket] = []
        for _ in range(queues):
            node_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            node_end.setblocking(False)
            self.fds.append(node_end.detach())
            self.kernel.append(kernel_end)
        self.closed = False

    def close(self) -> None:
        super().close()
        self.closed = True

    def send(self, packet: bytes, queue: int = 0) -> None:
        """A pod sends `packet` (IPv4): the node reads it from queue `queue`."""
        head = bytes(VNET_HLEN) if self.vnet_hdr else b""     # no offload asked of us
        self.kernel[queue].send(head + packet)

    def recv(self, timeout: float = 5.0) -> bytes:
        """The next packet the node wrote into the TUN (any queue); TimeoutError if none."""
        ready, _, _ = select.select(self.kernel, [], [], timeout)
        if not ready:
            raise TimeoutError(f"nothing written to {self.name} in {timeout} s")
        data = ready[0].recv(1 << 17)
        return data[VNET_HLEN:] if self.vnet_hdr else data

    def release(self) -> None:
        for sock in self.kernel:
            sock.close()


@dataclass(frozen=True)
class TunConfig:
    """What configure_tun was asked: address/32, MTU, queue length and the network's route."""
    address: str
    mtu: int
    network: str
    txqueuelen: int


class FakeRoutes:
    """DirectRouting's routing table: peers whose public IP is in `on_link` are reachable
    without a gateway."""

    def __init__(self, on_link: set[str], routes: dict[str, str]) -> None:
        self.on_link = on_link
        self.routes = routes              # {subnet: gateway}, shared with the host
        self.calls: list[tuple[str, str, str]] = []

    def reaches_directly(self, address: str) -> bool:
        return address in self.on_link

    def replace(self, subnet: str, gateway: str) -> None:
        self.calls.append(("replace", subnet, gateway))
        self.routes[subnet] = gateway

    def delete(self, subnet: str, gateway: str) -> None:
        self.calls.append(("delete", subnet, gateway))
        if self.routes.get(subnet) == gateway:
            del self.routes[subnet]

    def ours(self) -> dict[str, str]:
        return dict(self.routes)


class FakeTraffic:
    """flanneld's rules, as asked for: nothing to keep in step."""

    def __init__(self, network: ipaddress.IPv4Network, subnet: ipaddress.IPv4Network,
                 ip_masq: bool, nftables: bool, options: NetfilterOptions) -> None:
        self.network, self.subnet = network, subnet
        self.ip_masq, self.nftables, self.options = ip_masq, nftables, options

    async def keep(self) -> None:
        await asyncio.get_running_loop().create_future()      # until cancelled


@dataclass
class FakeHost:
    """One node's machine. `address` is its underlay address (published in the lease, the
    tunnel sockets bind to it): a loopback address, from FakeNetwork.host()."""

    address: str
    public_ip: str | None = None        # published instead of `address` (a NAT in front)
    ifname: str = "eth0"
    mtu: int = 1500
    offloads: Offloads = NO_OFFLOADS
    on_link: set[str] = field(default_factory=set)     # DirectRouting: peers reached directly
    tuns: dict[str, FakeTun] = field(default_factory=dict)
    links: dict[str, TunConfig] = field(default_factory=dict)
    routes: dict[str, str] = field(default_factory=dict)       # DirectRouting's, kept
    blackholes: set[str] = field(default_factory=set)
    traffic: list[FakeTraffic] = field(default_factory=list)
    sockets: list[SocketPair] = field(default_factory=list)
    selections: list[hostnet.Selection] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)   # calls come from threads

    def unfit(self) -> str | None:
        return None

    def find_underlay(self, selection: hostnet.Selection) -> hostnet.Underlay:
        """Ours, whatever was asked (choosing one is tested on real interfaces)."""
        with self._lock:
            self.selections.append(selection)
        if self.public_ip is None:
            return hostnet.Underlay(self.ifname, 2, self.address, self.mtu)
        return hostnet.Underlay(self.ifname, 2, self.public_ip, self.mtu, local=self.address)

    def open_sockets(self, address: str, port: int, workers: int) -> list[SocketPair]:
        pairs = open_worker_sockets(address, port, workers)
        self.sockets = pairs
        return pairs

    def open_tun(self, name: str, queues: int, vnet_hdr: bool) -> Tun:
        old = self.tuns.get(name)
        if old is not None:
            old.release()
        tun = self.tuns[name] = FakeTun(name, queues, vnet_hdr)
        return tun

    def negotiate_offloads(self, tun: Tun, pairs: list[SocketPair]) -> Offloads:
        return self.offloads

    def configure_tun(self, name: str, address: str, mtu: int, network: str,
                      txqueuelen: int) -> None:
        with self._lock:
            self.links[name] = TunConfig(address, mtu, network, txqueuelen)

    def direct_routes(self, underlay: hostnet.Underlay,
                      network: ipaddress.IPv4Network) -> FakeRoutes:
        return FakeRoutes(self.on_link, self.routes)

    def ensure_blackhole_route(self, subnet: str) -> bool:
        with self._lock:
            added = subnet not in self.blackholes
            self.blackholes.add(subnet)
        return added

    def start_traffic(self, network: ipaddress.IPv4Network, subnet: ipaddress.IPv4Network, *,
                      ip_masq: bool, nftables: bool,
                      options: NetfilterOptions) -> TrafficRules:
        rules = FakeTraffic(network, subnet, ip_masq, nftables, options)
        with self._lock:
            self.traffic.append(rules)
        return rules

    def tun(self, name: str | None = None) -> FakeTun:
        """The TUN the node opened (the only one, unless named)."""
        if name is None:
            (name,) = self.tuns
        return self.tuns[name]

    def close(self) -> None:
        """The test's ends of every TUN (the node closes its own when it stops)."""
        for tun in self.tuns.values():
            tun.release()


class FakeNetwork:
    """Loopback addresses for the nodes of one test: 127.a.b.1, .2, ... with a and b chosen at
    random (the kernel routes all of 127/8 to lo, so any of them binds, without root)."""

    def __init__(self) -> None:
        self.block = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}"
        self.hosts: list[FakeHost] = []

    def address(self, n: int) -> str:
        return f"{self.block}.{n}"

    def host(self, **kwargs: object) -> FakeHost:
        host = FakeHost(self.address(len(self.hosts) + 1), **kwargs)   # type: ignore[arg-type]
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for host in self.hosts:
            host.close()
