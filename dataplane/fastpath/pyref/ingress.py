"""Ingress: datagrams from the peers (the UDP socket) to the local pods (the TUN).

The twin of csrc/ingress.c, without offloads (the reference never offloads). The inbound flow,
one drain_udp call per socket readiness:

  1. udp_adapter.recv_datagram receives one datagram.
  2. _ingress_one decides it: the outer source must hold a lease -> vxlan: flags, VNI, inner
     MACs, EtherType -> validate IPv4 -> the inner source inside the sender's subnet, the inner
     destination inside ours -> udp: decrement TTL -> the TCP/UDP checksum (partial: completed
     here, or left to a vnet TUN as NEEDS_CSUM; wrong: dropped).
  3. tun_adapter.write_delivered writes it to the TUN, a kernel peer's super-packet cut first.
"""

from __future__ import annotations

import socket

from dataplane.drops import Drop
from dataplane.fastpath.pyref.fields import (
    _INGRESS,
    _PROTO_UDP,
    _mask,
)
from dataplane.fastpath.pyref.forward import ForwarderState
from dataplane.fastpath.pyref.packet import (
    ipv4_validate,
    l4_csum,
    l4_csum_complete,
    super_gso,
    ttl_decrement,
    vxlan_check,
)
from dataplane.fastpath.pyref.tun_adapter import (
    write_delivered,
)
from dataplane.fastpath.pyref.udp_adapter import recv_datagram
from dataplane.fastpath.types import (
    CSUM_BAD,
    CSUM_PARTIAL,
    CSUM_VALID,
    IO_TUN_USO,
    IO_VNET,
    Action,
    Verdict,
    ip_to_int,
)


class Ingress(ForwarderState):
    """csrc/ingress.c: the decisions and the loop of the inbound flow."""

    def _ingress_one(self, src: str, payload: bytes, udp_gso: int = 0) -> Verdict:
        src_ip = ip_to_int(src)
        if src_ip not in self._by_ip:
            return self._drop(_INGRESS, Drop.UNKNOWN_PEER)
        if self._vxlan:
            why, off = vxlan_check(payload, self.config.vni, self._mac)
            if why:
                return self._drop(_INGRESS, why)
            payload = payload[off:]
        why = ipv4_validate(payload)
        if why:
            return self._drop(_INGRESS, why)
        buf = bytearray(payload[: (payload[2] << 8) | payload[3]])
        gso = 0
        if len(buf) > self.config.max_inner and (
                not (gso := super_gso(buf, self.config.max_inner, udp_gso))
                or buf[9] == _PROTO_UDP
                and self.config.io_flags & (IO_VNET | IO_TUN_USO) == IO_VNET):
            return self._drop(_INGRESS, Drop.OVERSIZE)
        # our own subnet is never a source from the wire, whatever lease covers it
        inner_src = int.from_bytes(buf[12:16], "big")
        mask = _mask(self._local_plen)
        peer = self._peer_of(inner_src)
        if peer is None or peer[0] != src_ip or inner_src & mask == self._local_net & mask:
            return self._drop(_INGRESS, Drop.SPOOFED_SOURCE)
        if int.from_bytes(buf[16:20], "big") & mask != self._local_net & mask:
            return self._drop(_INGRESS, Drop.NOT_LOCAL)
        if self._ttl:
            why = ttl_decrement(buf)
            if why:
                return self._drop(_INGRESS, why)
        cs = CSUM_PARTIAL if gso else l4_csum(buf)
        if cs == CSUM_BAD:
            return self._drop(_INGRESS, Drop.BAD_L4_CHECKSUM)
        if cs == CSUM_PARTIAL and not gso and not self.config.io_flags & IO_VNET:
            l4_csum_complete(buf)
            cs = CSUM_VALID
        self._packets[_INGRESS] += 1
        self._bytes[_INGRESS] += len(buf)
        return Verdict(Action.TUN, Drop.NONE, None, 0, bytes(buf), cs)


    def ingress(self, datagrams: list[tuple[str, int, bytes]],
                hints: list[int] | None = None) -> list[Verdict]:
        """hints: per datagram, the drain's UDP_GRO size for one that is a whole tunnelled
        super-packet (dp_pkt.gso_size in; see super_gso), else 0."""
        if datagrams:
            self._batches[_INGRESS] += 1
        hints = hints or [0] * len(datagrams)
        return [self._ingress_one(src, payload, h)
                for (src, _port, payload), h in zip(datagrams, hints, strict=True)]


    def drain_udp(self, sock: socket.socket, tun_fd: int, budget: int) -> int:
        n = 0
        calls = self._syscalls
        while n < budget:
            calls[_INGRESS] += 1
            got = recv_datagram(sock)                                   # 1
            if got is None:
                break
            payload, src, _port = got
            n += 1
            self._batches[_INGRESS] += 1
            v = self._ingress_one(src, payload)                         # 2
            if v.action == Action.TUN:
                self._deliver(tun_fd, v.data)                           # 3
        return n

    def _deliver(self, tun_fd: int, pkt: bytes, udp_gso: int = 0) -> None:
        write_delivered(self, tun_fd, pkt, udp_gso)
