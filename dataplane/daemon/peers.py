"""The other nodes' leases, reconciled into peers: the one copy of the peer set.

The store speaks in leases (events from a watch, or a whole listing after a reconnect); the
places a peer lives in (every worker's forwarder, DirectRouting's kernel routes) want to hear
that a peer was added, changed or removed. `Peers` sits between, as flannel's LeaseWatcher
(pkg/lease/lease.go) does for its backends:

    store event or listing -> Peers: known leases, admitted peers, refused leases
                           -> PeerSink.add_peer / change_peer / remove_peer

What it decides on the way:
  - our own subnet is never a peer: its events go back to the node (another writer, a removal);
  - a lease overlapping ours or an admitted peer's is refused (it would let its holder speak for
    those pods, e.g. a /16 left over from an older SubnetLen): logged once, admitted when what it
    overlaps goes away;
  - a vxlan lease without a usable VtepMAC is ignored, with a warning;
  - a listing is turned into the events that lead from what we knew to it, so a resync after a
    store outage adds and removes exactly what changed meanwhile.
Events may come in any order: a removal of what we never knew is nothing, an addition of what we
know is a change (or a renewal: the same peer, written again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Protocol

from dataplane.backends import Backend
from dataplane.daemon.pump import Worker
from dataplane.daemon.overlaps import SubnetIndex
from dataplane.fastpath.api import Forwarder
from dataplane.lease import Lease
from dataplane.store.base import EventKind, LeaseEvent, diff_leases

log = logging.getLogger("dataplane.daemon.node")     # the node's voice, as it always was


@dataclass(frozen=True)
class Peer:
    """What a sink needs of another node's lease to carry traffic to its pods."""

    subnet: IPv4Network
    public_ip: str
    mac: bytes                          # its VtepMAC (vxlan); six zero bytes for udp


class PeerSink(Protocol):
    """Where peers go: the forwarders (tunnelled), the kernel's routes (DirectRouting)."""

    def add_peer(self, peer: Peer) -> None: ...

    def change_peer(self, old: Peer, new: Peer) -> None:
        """The lease was written again: a new public IP or VtepMAC, or the same (a renewal:
        old == new). A sink that decides something from the network may decide it again."""

    def remove_peer(self, peer: Peer) -> None: ...


class Peers:
    """Known leases (ours included, as the store last showed them), the peers admitted from
    them, and the leases refused for overlapping."""

    def __init__(self, own: IPv4Network, backend: Backend, sink: PeerSink) -> None:
        self.own = own
        self.backend = backend
        self.sink = sink
        self.leases: dict[IPv4Network, Lease] = {}
        self.admitted: dict[IPv4Network, Peer] = {}
        self.refused: dict[IPv4Network, Lease] = {}
        self._index = SubnetIndex()          # the admitted subnets, for the overlap check

    def __len__(self) -> int:
        return len(self.admitted)

    def __contains__(self, subnet: object) -> bool:
        return subnet in self.admitted

    def reset(self, leases: Iterable[Lease]) -> list[LeaseEvent]:
        """A fresh listing: apply its difference with what we knew. Returns the events about
        our own subnet, for the node."""
        return self.update(diff_leases(self.leases, {lease.subnet: lease for lease in leases}))

    def update(self, events: Iterable[LeaseEvent]) -> list[LeaseEvent]:
        """Watch events, in order. Returns those about our own subnet, for the node."""
        own: list[LeaseEvent] = []
        for event in events:
            if self.apply(event):
                own.append(event)
        return own

    def remember(self, lease: Lease) -> None:
        """A lease we wrote ourselves (our own, re-acquired): known without an event."""
        self.leases[lease.subnet] = lease

    def apply(self, event: LeaseEvent) -> bool:
        """One event; True if it is about our own subnet (left to the node)."""
        lease = event.lease
        removed = event.kind == EventKind.REMOVED
        if removed:
            self.leases.pop(lease.subnet, None)
        else:
            self.leases[lease.subnet] = lease
        if lease.subnet == self.own:
            return True
        if removed:
            self._remove(lease)
        else:
            self._add(lease)
        return False

    def _remove(self, lease: Lease) -> None:
        self.refused.pop(lease.subnet, None)
        peer = self.admitted.pop(lease.subnet, None)
        if peer is None:
            return
        self._index.discard(lease.subnet)
        self.sink.remove_peer(peer)
        log.info("peer %s (%s) left", lease.subnet, lease.public_ip)
        for waiting in list(self.refused.values()):          # one may fit now
            self._add(waiting)

    def _add(self, lease: Lease) -> None:
        if self._refuse(lease):
            return
        try:
            mac = self.backend.peer_mac(lease)
        except ValueError as exc:
            log.warning("ignoring lease %s of %s: %s", lease.subnet, lease.public_ip, exc)
            return
        peer = Peer(lease.subnet, lease.public_ip, mac)
        known = self.admitted.get(lease.subnet)
        self.admitted[lease.subnet] = peer
        if known is None:
            self._index.add(lease.subnet)
            self.sink.add_peer(peer)
        else:
            self.sink.change_peer(known, peer)
        if known != peer:
            log.info("peer %s at %s%s", lease.subnet, lease.public_ip,
                     f" VtepMAC {lease.vtep_mac}" if lease.vtep_mac else "")

    def _refuse(self, lease: Lease) -> bool:
        """Keep a lease overlapping ours or an admitted peer's out; warn once per lease."""
        other = self._index.overlapping(lease.subnet)
        clash = (f"our own {self.own}" if lease.subnet.overlaps(self.own) else
                 f"peer {other} ({self.admitted[other].public_ip})" if other else None)
        if clash is None:
            self.refused.pop(lease.subnet, None)
            return False
        if lease.subnet not in self.refused:
            log.warning("refusing lease %s of %s: it overlaps %s", lease.subnet,
                        lease.public_ip, clash)
        self.refused[lease.subnet] = lease
        return True


class Tunnels:
    """The PeerSink of tunnelled peers: every worker's forwarder, each changed on its worker's
    own thread once the workers run (a forwarder is not shared state)."""

    def __init__(self, fwds: Sequence[Forwarder] = ()) -> None:
        self.fwds: list[Forwarder] = list(fwds)
        self.workers: Sequence[Worker] = ()

    def add_peer(self, peer: Peer) -> None:
        for fwd, run in self._each():
            run(fwd.set_peer, peer.subnet, peer.public_ip, peer.mac)

    def change_peer(self, old: Peer, new: Peer) -> None:
        if old != new:                           # a renewal changes nothing in a forwarder
            self.add_peer(new)                   # set_peer replaces

    def remove_peer(self, peer: Peer) -> None:
        for fwd, run in self._each():
            run(fwd.del_peer, peer.subnet)

    def _each(self) -> Iterator[tuple[Forwarder, Callable[..., None]]]:
        if self.workers:
            for worker, fwd in zip(self.workers, self.fwds):
                yield fwd, worker.call
        else:
            for fwd in self.fwds:
                yield fwd, _now


def _now(fn: Callable[..., None], *args: object) -> None:
    fn(*args)
