"""Longest-prefix match: the twin of csrc/routes.c."""

from __future__ import annotations

from dataplane.fastpath.pyref.fields import (
    _mask,
)
from dataplane.fastpath.types import (
    ip_to_int,
    parse_net,
)

# ---- longest-prefix match -------------------------------------------------------------------

class RouteTable:
    """prefix/len -> non-negative int, longest match wins."""

    def __init__(self) -> None:
        self._routes: dict[tuple[int, int], int] = {}
        self._per_len = [0] * 33

    def set(self, cidr: str, value: int) -> None:
        prefix, plen = parse_net(cidr)
        self._set(prefix, plen, value)

    def delete(self, cidr: str) -> None:
        prefix, plen = parse_net(cidr)
        if not self._del(prefix, plen):
            raise KeyError(cidr)

    def lookup(self, addr: str) -> int:
        return self._lookup(ip_to_int(addr))

    def __len__(self) -> int:
        return len(self._routes)

    def _set(self, prefix: int, plen: int, value: int) -> None:
        if value < 0:
            raise ValueError("route values are non-negative")
        key = (prefix & _mask(plen), plen)
        if key not in self._routes:
            self._per_len[plen] += 1
        self._routes[key] = value

    def _del(self, prefix: int, plen: int) -> bool:
        key = (prefix & _mask(plen), plen)
        if self._routes.pop(key, None) is None:
            return False
        self._per_len[plen] -= 1
        return True

    def _lookup(self, addr: int) -> int:
        for plen in range(32, -1, -1):
            if self._per_len[plen]:
                value = self._routes.get((addr & _mask(plen), plen))
                if value is not None:
                    return value
        return -1


