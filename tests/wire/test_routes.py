"""The longest-prefix-match table against a model too simple to be wrong."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test


class Model:
    """A dict and a linear scan: longest matching prefix wins."""

    def __init__(self):
        self.routes: dict[tuple[int, int], int] = {}

    @staticmethod
    def key(cidr: str) -> tuple[int, int]:
        net = ipaddress.IPv4Network(cidr, strict=False)
        return int(net.network_address), net.prefixlen

    def lookup(self, addr: str) -> int:
        a = int(ipaddress.IPv4Address(addr))
        best = (-1, -1)
        for (prefix, plen), value in self.routes.items():
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            if a & mask == prefix and plen > best[0]:
                best = (plen, value)
        return best[1]


def cidr(addr: int, plen: int) -> str:
    return f"{ipaddress.IPv4Address(addr)}/{plen}"


# Few distinct prefixes, so sets overwrite, deletes hit, and prefixes nest.
addrs = st.sampled_from([0, 0x0AF40000, 0x0AF40100, 0x0AF40180, 0x0AF401FF, 0x0AF50000,
                         0xC0A80001, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1)
plens = st.sampled_from([0, 8, 16, 24, 25, 31, 32]) | st.integers(0, 32)
values = st.integers(0, 2**31 - 1)


def make_machine(impl):
    class Routes(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.table = impl.RouteTable()
            self.model = Model()
            self.known: list[str] = []

        @rule(addr=addrs, plen=plens, value=values)
        def set(self, addr, plen, value):
            c = cidr(addr, plen)
            self.table.set(c, value)
            self.model.routes[Model.key(c)] = value
            self.known.append(c)

        @rule(data=st.data())
        def delete_known(self, data):
            if not self.known:
                return
            c = data.draw(st.sampled_from(self.known))
            key = Model.key(c)
            if key in self.model.routes:
                self.table.delete(c)
                del self.model.routes[key]
            else:
                with pytest.raises(KeyError):
                    self.table.delete(c)

        @rule(addr=addrs, plen=plens)
        def delete_any(self, addr, plen):
            c = cidr(addr, plen)
            if Model.key(c) in self.model.routes:
                self.table.delete(c)
                del self.model.routes[Model.key(c)]
            else:
                with pytest.raises(KeyError):
                    self.table.delete(c)

        @rule(addr=addrs)
        def lookup(self, addr):
            a = str(ipaddress.IPv4Address(addr))
            assert self.table.lookup(a) == self.model.lookup(a)

        @rule(data=st.data())
        def lookup_inside_known(self, data):
            if not self.known:
                return
            net = ipaddress.IPv4Network(data.draw(st.sampled_from(self.known)), strict=False)
            offset = data.draw(st.integers(0, net.num_addresses - 1))
            a = str(net.network_address + offset)
            assert self.table.lookup(a) == self.model.lookup(a)

        @invariant()
        def same_size(self):
            assert len(self.table) == len(self.model.routes)

    return Routes


def test_matches_the_model(impl):
    run_state_machine_as_test(make_machine(impl),
                              settings=settings(max_examples=60, stateful_step_count=40))


def test_zero_and_host_routes(impl):
    t = impl.RouteTable()
    assert t.lookup("10.0.0.1") == -1                 # empty
    t.set("0.0.0.0/0", 1)
    t.set("10.244.1.7/32", 2)
    t.set("10.244.1.0/24", 3)
    assert [t.lookup(a) for a in ("8.8.8.8", "10.244.1.7", "10.244.1.8", "255.255.255.255")] == \
        [1, 2, 3, 1]
    t.delete("0.0.0.0/0")
    assert t.lookup("8.8.8.8") == -1
    t.set("10.244.1.99/24", 4)                        # host bits are cleared: same route
    assert len(t) == 2 and t.lookup("10.244.1.8") == 4


def test_bad_values_and_missing_routes(impl):
    t = impl.RouteTable()
    with pytest.raises(ValueError):
        t.set("10.0.0.0/8", -1)
    with pytest.raises(KeyError):
        t.delete("10.0.0.0/8")
    assert len(t) == 0


def test_many_entries_resizes_and_tombstones(impl):
    # Thousands of inserts grow the table many times; deleting half leaves tombstones that
    # lookups must step over and inserts must reuse; everything is checked against the model.
    rng = random.Random(1624)
    t, model = impl.RouteTable(), Model()
    entries = [(rng.getrandbits(32), rng.choice((16, 24, 24, 24, 32))) for _ in range(3000)]
    for i, (a, plen) in enumerate(entries):
        t.set(cidr(a, plen), i)
        model.routes[Model.key(cidr(a, plen))] = i
    assert len(t) == len(model.routes)
    for a, plen in entries[::2]:
        c = cidr(a, plen)
        if Model.key(c) in model.routes:
            t.delete(c)
            del model.routes[Model.key(c)]
    for a, plen in entries[::4]:                       # reinsert over tombstones
        t.set(cidr(a, plen), 7)
        model.routes[Model.key(cidr(a, plen))] = 7
    assert len(t) == len(model.routes)
    # The model's scan is slow; index it by length for the check.
    by_len: dict[int, dict[int, int]] = {}
    for (prefix, plen), value in model.routes.items():
        by_len.setdefault(plen, {})[prefix] = value
    for a, _ in entries + [(rng.getrandbits(32), 0) for _ in range(500)]:
        want = next((by_len[p][a & ((0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF)]
                     for p in sorted(by_len, reverse=True)
                     if a & ((0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF) in by_len[p]), -1)
        assert t.lookup(str(ipaddress.IPv4Address(a))) == want


def test_churn_on_one_slot_does_not_fill_the_table(impl):
    # set/delete of different keys forever: tombstones must be swept, not pile up.
    t = impl.RouteTable()
    for i in range(20000):
        t.set(cidr(i << 8, 24), i)
        t.delete(cidr(i << 8, 24))
    assert len(t) == 0 and t.lookup("0.0.1.0") == -1
    t.set("10.0.0.0/8", 5)
    assert t.lookup("10.1.2.3") == 5
