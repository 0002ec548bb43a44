"""Egress: packets from the local pods (the TUN) to the peers (the UDP socket).

The twin of csrc/egress.c, without offloads (the reference never offloads). The outbound flow,
one drain_tun call per TUN readiness:

  1. tun_adapter.read_packet reads one packet from the TUN.
  2. _egress_one decides it: validate IPv4, find the peer holding the destination (none: ICMP
     net-unreachable back into the TUN), udp: decrement TTL | vxlan: VXLAN + inner Ethernet.
  3. udp_adapter.send_datagram sends it to the peer; an ICMP error goes back to the TUN
     (tun_adapter.write_packet).
"""

from __future__ import annotations

import socket
import time

from dataplane.drops import Drop
from dataplane.fastpath.pyref.fields import (
    _EGRESS,
)
from dataplane.fastpath.pyref.forward import ForwarderState
from dataplane.fastpath.pyref.packet import (
    icmp_net_unreachable,
    ipv4_validate,
    ttl_decrement,
    vxlan_header,
)
from dataplane.fastpath.pyref.tun_adapter import (
    read_packet,
    write_packet,
)
from dataplane.fastpath.pyref.udp_adapter import send_datagram
from dataplane.fastpath.types import (
    VXLAN_OVERHEAD,
    Action,
    Verdict,
    int_to_ip,
)


class Egress(ForwarderState):
    """csrc/egress.c: the decisions and the loop of the outbound flow."""

    def _egress_one(self, pkt: bytes) -> Verdict:
        if pkt[:1] and pkt[0] >> 4 == 6:
            return self._drop(_EGRESS, Drop.IPV6_UNSUPPORTED)
        why = ipv4_validate(pkt)
        if why:
            return self._drop(_EGRESS, why)
        buf = bytearray(pkt[: (pkt[2] << 8) | pkt[3]])
        if len(buf) > self.config.max_inner:
            return self._drop(_EGRESS, Drop.OVERSIZE)
        peer = self._peer_of(int.from_bytes(buf[16:20], "big"))
        if peer is None:
            reply = icmp_net_unreachable(buf, self._tun_addr)
            if reply and not self._icmp_allow():
                reply = b""
            return self._drop(_EGRESS, Drop.NO_ROUTE, reply)
        if self._ttl:
            why = ttl_decrement(buf)
            if why:
                return self._drop(_EGRESS, why)
        ip, mac = peer
        self._bytes[_EGRESS] += len(buf)              # inner bytes, as on ingress
        if self._vxlan:
            buf[0:0] = vxlan_header(self.config.vni, mac, self._mac)
        self._packets[_EGRESS] += 1
        return Verdict(Action.SEND, Drop.NONE, int_to_ip(ip), self.config.port, bytes(buf))


    def egress(self, packets: list[bytes]) -> list[Verdict]:
        if packets:
            self._batches[_EGRESS] += 1
        return [self._egress_one(p) for p in packets]


    def drain_tun(self, tun_fd: int, sock: socket.socket, budget: int) -> int:
        n = 0
        calls = self._syscalls
        self._now_ms = time.monotonic_ns() // 1_000_000
        while n < budget:
            calls[_EGRESS] += 1
            pkt = read_packet(tun_fd)                                   # 1
            if pkt is None:
                break
            n += 1
            self._batches[_EGRESS] += 1
            v = self._egress_one(pkt)                                   # 2
            if v.action != Action.DROP:
                calls[_EGRESS] += 1
            if v.action == Action.SEND:                                 # 3
                why = send_datagram(sock, v.data, str(v.addr), v.port)
                if why:
                    inner = len(v.data) - (VXLAN_OVERHEAD if self._vxlan else 0)
                    self._count_as_dropped(_EGRESS, inner, why)
            elif v.action == Action.TUN:
                write_packet(tun_fd, v.data)
        return n
