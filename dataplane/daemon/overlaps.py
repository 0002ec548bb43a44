"""Which known subnet overlaps a given one, in a few lookups however many peers there are.

Leases are CIDR blocks, so two overlap exactly when one contains the other. The blocks are kept
as sorted network addresses per prefix length, and only the lengths present are probed (one in
practice, the network's SubnetLen): a shorter one at the address masked to it (a block holding
ours), a longer one by bisection over our range (a block inside ours). A cold start with 5,000
leases checks each in microseconds where a scan of the peers made it quadratic.
"""

from __future__ import annotations

import bisect
from ipaddress import IPv4Network

_ALL = 0xFFFFFFFF


class SubnetIndex:
    def __init__(self) -> None:
        self._by_len: dict[int, list[int]] = {}    # prefix length -> sorted network addresses

    def add(self, net: IPv4Network) -> None:
        starts = self._by_len.setdefault(net.prefixlen, [])
        a = int(net.network_address)
        i = bisect.bisect_left(starts, a)
        if i == len(starts) or starts[i] != a:
            starts.insert(i, a)

    def discard(self, net: IPv4Network) -> None:
        starts = self._by_len.get(net.prefixlen)
        if not starts:
            return
        a = int(net.network_address)
        i = bisect.bisect_left(starts, a)
        if i < len(starts) and starts[i] == a:
            del starts[i]
            if not starts:
                del self._by_len[net.prefixlen]

    def overlapping(self, net: IPv4Network) -> IPv4Network | None:
        """A block other than `net` itself that overlaps it, or None."""
        a, b = int(net.network_address), int(net.broadcast_address)
        for plen, starts in self._by_len.items():
            if plen < net.prefixlen:                         # one that would hold net
                start = a & (_ALL << (32 - plen)) & _ALL
                i = bisect.bisect_left(starts, start)
                if i < len(starts) and starts[i] == start:
                    return IPv4Network((start, plen))
            elif plen > net.prefixlen:                       # one inside net
                i = bisect.bisect_left(starts, a)
                if i < len(starts) and starts[i] <= b:
                    return IPv4Network((starts[i], plen))
        return None                  # of net's own length, only net itself can overlap it
