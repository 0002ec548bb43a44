"""The four ways pod traffic leaves a pod, and the source address the far end sees on each:

    loopback    inside the pod, over lo                 seen from 127.0.0.1
    same node   to a pod on the same node, over cni0    seen from the pod's own address
    other node  to a pod on another node, the tunnel    seen from the pod's own address
                (host routes for host-gw)               (flannel's rules RETURN pod <-> pod)
    outside     to the outside host, through the NAT    seen from the node's underlay address
                                                        (FLANNEL-POSTRTG's MASQUERADE)

One UDP datagram each way, from sockets this process opens inside the namespaces (a thread
joins each namespace just to create its socket: see nsthread), so no process is started and
`lab status` stays fast. The far end answers with nothing but the datagram itself; what it saw
is what its recvfrom() returned.
"""

from __future__ import annotations

import os
import select
import socket
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from dataplane.backends import UDP
from dataplane.lab import naming
from dataplane.lab.nsthread import call_in_netns

if TYPE_CHECKING:
    from dataplane.lab.lab import Lab

KINDS = ("loopback", "same node", "other node", "outside")


@dataclass(frozen=True)
class PathResult:
    kind: str
    src: str              # the pod it was sent from
    src_ip: str
    dst: str              # the namespace that answered: a pod, or the outside host
    dst_ip: str
    via: str              # how it travels (device names, as on the node)
    seen: str | None      # the source address the far end saw; None: nothing arrived
    replied: bool         # and its answer came back (through the NAT, for outside)
    note: str             # whose address `seen` is

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _udp_socket(ns: str, bind: tuple[str, int] | None) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        if bind is not None:
            sock.bind(bind)
        return sock
    return call_in_netns(ns, make)


def probe(lab: Lab, *, timeout: float = 1.0) -> list[PathResult]:
    """The four kinds from the first pod with an address (fewer when the lab has no second
    pod on that node, or no second node with pods)."""
    pods = [p for p in lab.pods if p.ip is not None]
    if not pods:
        return []
    src = pods[0]
    node = lab.node(src.node)
    others_here = [p for p in pods if p.node == src.node and p is not src]
    elsewhere = [p for p in pods if p.node != src.node]
    tunnel = {"udp": UDP.device(lab.vni), "vxlan": naming.vxlan_device(lab.vni),
              "kernel-vxlan": naming.vxlan_device(lab.vni), "host-gw": "eth0 (host routes)"}
    targets = [("loopback", src.netns, "127.0.0.1", "lo")]
    if others_here:
        targets.append(("same node", others_here[0].netns, str(others_here[0].ip), "cni0"))
    if elsewhere:
        far = lab.node(elsewhere[0].node)
        via = tunnel[node.backend]
        if via != tunnel[far.backend]:
            via += f" -> {tunnel[far.backend]}"
        targets.append(("other node", elsewhere[0].netns, str(elsewhere[0].ip), via))
    targets.append(("outside", lab.outside_ns, str(naming.OUTSIDE_IP), "eth0, NAT"))

    names = {str(n.underlay_ip): f"{n.name}'s underlay address" for n in lab.nodes}
    names.update({str(p.ip): f"{p.name}, the pod itself" if p is src else p.name
                  for p in pods})
    names["127.0.0.1"] = "loopback"
    names.update({str(n.gateway): f"{n.name}'s cni0" for n in lab.nodes})
    names.update({str(n.subnet.network_address): f"{n.name}'s {tunnel[n.backend]}"
                  for n in lab.nodes})

    answers = exchange(src.netns, [(ns, ip) for _, ns, ip, _ in targets], timeout=timeout)
    results = []
    for (kind, ns, ip, via), (who, replied) in zip(targets, answers):
        results.append(PathResult(kind=kind, src=src.name, src_ip=str(src.ip), dst=ns,
                                  dst_ip=ip, via=via, seen=who, replied=replied,
                                  note=names.get(who, "") if who else ""))
    return results


def exchange(src_ns: str, targets: list[tuple[str, str]], *, timeout: float = 1.0
             ) -> list[tuple[str | None, bool]]:
    """From namespace `src_ns`, one UDP datagram to each (namespace, address), which answers
    it: for each, the source address it saw (None if nothing arrived) and whether the answer
    came back. Resent every 200 ms until answered (the first may wait on ARP)."""
    client = _udp_socket(src_ns, None)
    servers: list[socket.socket] = []
    seen: dict[int, str] = {}
    replied: set[int] = set()
    try:
        for ns, ip in targets:
            servers.append(_udp_socket(ns, (ip, 0)))
        token = os.urandom(8)
        deadline = time.monotonic() + timeout
        next_send = 0.0
        while len(replied) < len(targets) and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_send:
                for i, server in enumerate(servers):
                    if i not in replied:
                        try:
                            client.sendto(token + bytes([i]), server.getsockname())
                        except OSError:
                            pass        # no route: reported as nothing seen
                next_send = now + 0.2
            ready, _, _ = select.select([client, *servers], [], [],
                                        max(0.0, min(next_send, deadline) - time.monotonic()))
            for sock in ready:
                try:
                    data, addr = sock.recvfrom(64)
                except OSError:
                    continue
                if len(data) != len(token) + 1 or data[:-1] != token:
                    continue
                i = data[-1]
                if sock is client:
                    replied.add(i)
                elif i < len(servers) and sock is servers[i]:
                    seen.setdefault(i, addr[0])
                    try:
                        sock.sendto(data, addr)
                    except OSError:
                        pass        # e.g. the outside host has no route back to a pod
    finally:
        for sock in (client, *servers):
            sock.close()
    return [(seen.get(i), i in replied) for i in range(len(targets))]
