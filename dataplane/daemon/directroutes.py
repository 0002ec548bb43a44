"""vxlan `DirectRouting`: peers on our underlay's own subnet get a plain route, as flannel's
host-gw backend gives every peer, and are left out of the forwarder:

    <peer subnet> via <peer public IP> dev <underlay> proto 0xdb

Their pods' packets never enter the TUN (the /24 is more specific than the TUN's route for the
whole network) and cross the underlay unencapsulated; only peers elsewhere are tunnelled.

Which peers: decided as flannel's vxlan backend decides it (pkg/ip DirectRouting), when a lease
arrives or changes: `ip route get <public IP>` gives one route without a gateway, and here also
through the underlay itself.

The receiving side needs nothing of us: a directly routed packet arrives on the underlay for one
of our pods, and the kernel forwards it to cni0, whose /24 is more specific than the TUN's route.
Strict reverse-path filtering passes too: the route back to the sender's subnet is the direct
route on that same underlay. A kernel flannel node with DirectRouting does exactly this.

Lifetime: a route goes when its peer's lease goes or the peer stops being directly reachable
(then it is tunnelled again). The routes follow our own lease, not the process: a stop that keeps
the lease keeps them (pods keep reaching their direct peers meanwhile, as with flanneld, which
leaves its routes); the next start adopts them by their protocol mark and removes those whose
peer left meanwhile; giving the lease back (withdraw_all) removes them all.

Netlink runs on a thread of its own: pyroute2's synchronous API will not run inside our loop.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from dataplane import hostnet
from dataplane.daemon.peers import Peer, PeerSink

log = logging.getLogger(__name__)

NETLINK_TIMEOUT = 10.0
T = TypeVar("T")


class RouteTable(Protocol):
    """The kernel as DirectRoutes sees it (a fake in tests)."""

    def reaches_directly(self, address: str) -> bool: ...
    def replace(self, subnet: str, gateway: str) -> None: ...
    def delete(self, subnet: str, gateway: str) -> None: ...
    def ours(self) -> dict[str, str]: ...


class KernelRoutes:
    """The main routing table, through the underlay interface, over netlink."""

    def __init__(self, underlay: hostnet.Underlay, network: ipaddress.IPv4Network) -> None:
        self.index = underlay.index
        self.network = str(network)

    def reaches_directly(self, address: str) -> bool:
        return hostnet.reaches_directly(address, self.index)

    def replace(self, subnet: str, gateway: str) -> None:
        hostnet.replace_direct_route(subnet, gateway, self.index)

    def delete(self, subnet: str, gateway: str) -> None:
        hostnet.delete_direct_route(subnet, gateway, self.index)

    def ours(self) -> dict[str, str]:
        return hostnet.direct_routes(self.index, self.network)


class DirectRoutes:
    """The PeerSink in front of the tunnels: the peers it routes directly, {subnet: gateway},
    and the others passed on to `tunnels`. Disabled, it routes none."""

    def __init__(self, table: RouteTable | None, tunnels: PeerSink, *,
                 threaded: bool = True) -> None:
        self.table = table
        self.tunnels = tunnels
        self.routes: dict[ipaddress.IPv4Network, str] = {}
        self._stale: dict[ipaddress.IPv4Network, str] = {}
        self._pool = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="netlink")
                      if table is not None and threaded else None)

    @property
    def enabled(self) -> bool:
        return self.table is not None

    def __contains__(self, subnet: ipaddress.IPv4Network) -> bool:
        return subnet in self.routes

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        if self._pool is None:
            return fn(*args)
        return self._pool.submit(fn, *args).result(NETLINK_TIMEOUT)

    def adopt(self) -> None:
        """Take over the routes a previous run left; prune() removes those not confirmed."""
        if self.table is not None:
            self._stale = {ipaddress.IPv4Network(s): g
                           for s, g in self._call(self.table.ours).items()}

    def prune(self) -> None:
        """After the first listing: remove adopted routes whose peer is gone or tunnelled now."""
        stale, self._stale = self._stale, {}
        for subnet, gateway in stale.items():
            if subnet not in self.routes:
                self._delete(subnet, gateway, "its peer left while we were stopped")

    # ---- PeerSink: a peer is routed directly or tunnelled, never both -----------------------

    def add_peer(self, peer: Peer) -> None:
        if not self.place(peer):
            self.tunnels.add_peer(peer)

    def change_peer(self, old: Peer, new: Peer) -> None:
        """Decided again at every write of its lease (as flannel does): a renewal too, since
        the route to its public IP may have changed meanwhile."""
        was_direct = old.subnet in self.routes
        if self.place(new):
            if not was_direct:
                self.tunnels.remove_peer(old)
        elif was_direct:
            self.tunnels.add_peer(new)
        else:
            self.tunnels.change_peer(old, new)

    def remove_peer(self, peer: Peer) -> None:
        if not self.forget(peer.subnet):
            self.tunnels.remove_peer(peer)

    # ---- the routes ------------------------------------------------------------------------

    def place(self, peer: Peer) -> bool:
        """Route this peer directly if it is on our underlay subnet; True if it now is (keep it
        out of the forwarder), False to tunnel it (and any direct route it had is removed)."""
        if self.table is None:
            return False
        subnet, gateway = peer.subnet, peer.public_ip
        try:
            direct = self._call(self.table.reaches_directly, gateway)
        except Exception as exc:            # netlink trouble: tunnelling works regardless
            log.warning("cannot tell whether %s is on our subnet (%s); tunnelling %s",
                        gateway, exc, subnet)
            direct = False
        if direct:
            if self.routes.get(subnet) == gateway:
                return True
            try:
                self._call(self.table.replace, str(subnet), gateway)
            except Exception as exc:
                log.warning("cannot route %s via %s (%s); tunnelling it", subnet, gateway, exc)
            else:
                self.routes[subnet] = gateway
                log.info("peer %s at %s: on our subnet, routed directly", subnet, gateway)
                return True
        old = self.routes.pop(subnet, None)
        if old is not None:
            self._delete(subnet, old, f"{gateway} is not on our subnet now")
        return False

    def forget(self, subnet: ipaddress.IPv4Network) -> bool:
        """The peer left: remove its route; True if it was routed directly."""
        gateway = self.routes.pop(subnet, None)
        if gateway is None:
            return False
        self._delete(subnet, gateway, "its lease is gone")
        return True

    def withdraw_all(self) -> None:
        """Our lease is given back: remove every route we added."""
        for subnet in list(self.routes):
            self.forget(subnet)

    def _delete(self, subnet: ipaddress.IPv4Network, gateway: str, why: str) -> None:
        assert self.table is not None            # there are routes only while enabled
        try:
            self._call(self.table.delete, str(subnet), gateway)
            log.info("removed direct route %s via %s: %s", subnet, gateway, why)
        except Exception as exc:
            log.warning("cannot remove direct route %s via %s: %s", subnet, gateway, exc)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
