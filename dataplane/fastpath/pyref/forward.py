"""The forwarder's state: configuration, peers, counters, clock, the ICMP error bucket.
The twin of csrc/forward.c; the decisions are in egress.py and ingress.py."""

from __future__ import annotations

import errno

from dataplane.drops import Direction, Drop
from dataplane.fastpath.pyref.fields import (
    _mask,
    _overlap,
)
from dataplane.fastpath.pyref.routes import RouteTable
from dataplane.fastpath.types import (
    MODE_VXLAN,
    Action,
    Counters,
    ForwarderConfig,
    Subnet,
    Verdict,
    ip_to_int,
    parse_mac,
    parse_net,
)


class ForwarderState:
    """One node's hot-path state: peers, counters, the clock, the ICMP bucket."""

    def __init__(self, config: ForwarderConfig) -> None:
        self.config = config
        self._local_net, self._local_plen = parse_net(config.local_subnet)
        self._tun_addr = ip_to_int(config.tun_addr)
        self._mac = parse_mac(config.mac)
        self._ttl = config.decrements_ttl
        self._vxlan = config.mode == MODE_VXLAN
        self._routes = RouteTable()                  # subnet -> peer key
        self._peers: dict[tuple[int, int], tuple[int, bytes]] = {}   # -> (public ip, mac)
        self._by_ip: dict[int, int] = {}             # public ip -> number of peers
        self._packets = [0, 0]
        self._bytes = [0, 0]
        self._drops: dict[tuple[Direction, Drop], int] = {}
        self._batches = [0, 0]
        self._icmp = 0
        self._syscalls = [0, 0]
        self._now_ms = 0
        self._icmp_tokens = config.icmp_burst * 1000    # thousandths of an error
        self._icmp_last = 0
        self._icmp_suppressed = 0

    # peers
    def set_peer(self, subnet: Subnet, public_ip: str, mac: bytes | str = b"\0" * 6) -> None:
        """Add or replace; a subnet overlapping ours or another peer's is refused (EEXIST)."""
        key = parse_net(subnet)
        ip = ip_to_int(public_ip)
        mac = parse_mac(mac)
        if _overlap(key, (self._local_net, self._local_plen)) or any(
                k != key and _overlap(k, key) for k in self._peers):
            raise OSError(errno.EEXIST, f"{subnet} overlaps our subnet or a peer's")
        old = self._peers.get(key)
        if old is not None:
            self._unref(old[0])
        self._peers[key] = (ip, mac)
        self._by_ip[ip] = self._by_ip.get(ip, 0) + 1
        self._routes._set(key[0], key[1], 0)

    def del_peer(self, subnet: Subnet) -> None:
        key = parse_net(subnet)
        old = self._peers.pop(key, None)
        if old is None:
            raise KeyError(subnet)
        self._unref(old[0])
        self._routes._del(*key)

    def _unref(self, ip: int) -> None:
        self._by_ip[ip] -= 1
        if not self._by_ip[ip]:
            del self._by_ip[ip]

    @property
    def peer_count(self) -> int:
        return len(self._peers)

    def _peer_of(self, addr: int) -> tuple[int, bytes] | None:
        for plen in range(32, -1, -1):
            if self._routes._per_len[plen]:
                peer = self._peers.get((addr & _mask(plen), plen))
                if peer is not None:
                    return peer
        return None

    def counters(self) -> Counters:
        return Counters(list(self._packets), list(self._bytes), dict(self._drops),
                        list(self._batches), self._icmp, [0, 0], list(self._syscalls), 0,
                        self._icmp_suppressed)

    def set_clock(self, now_ms: int) -> None:
        self._now_ms = now_ms

    def _icmp_allow(self) -> bool:
        """The token bucket of csrc/forward.c:dp_icmp_allow, the same integer steps."""
        rate, cap = self.config.icmp_rate, self.config.icmp_burst * 1000
        if not rate:                       # no limit: every error goes, and is counted
            self._icmp += 1
            return True
        if self._now_ms > self._icmp_last:
            elapsed = self._now_ms - self._icmp_last
            full = elapsed >= (cap + rate - 1) // rate
            self._icmp_tokens = cap if full else min(self._icmp_tokens + elapsed * rate, cap)
            self._icmp_last = self._now_ms
        if self._icmp_tokens < 1000:
            self._icmp_suppressed += 1
            return False
        self._icmp_tokens -= 1000
        self._icmp += 1
        return True

    def _drop(self, direction: Direction, why: Drop, data: bytes = b"") -> Verdict:
        key = (direction, why)
        self._drops[key] = self._drops.get(key, 0) + 1
        return Verdict(Action.TUN if data else Action.DROP, why, None, 0, data)

    def _count_as_dropped(self, direction: Direction, length: int, why: Drop) -> None:
        self._packets[direction] -= 1
        self._bytes[direction] -= length
        key = (direction, why)
        self._drops[key] = self._drops.get(key, 0) + 1

