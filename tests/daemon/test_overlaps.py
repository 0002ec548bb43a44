"""SubnetIndex against the obvious scan, on random blocks of mixed lengths."""

from __future__ import annotations

from ipaddress import IPv4Network

from hypothesis import given
from hypothesis import strategies as st

from dataplane.daemon.overlaps import SubnetIndex

blocks = st.builds(lambda a, n: IPv4Network((a, n), strict=False),
                   st.integers(0, 2**32 - 1) | st.sampled_from([0x0AF40000, 0x0AF40100]),
                   st.sampled_from([0, 8, 16, 22, 24, 24, 24, 26, 32]))


@given(st.lists(st.tuples(st.booleans(), blocks), max_size=40), blocks)
def test_overlapping_agrees_with_a_scan(ops, probe):
    index, held = SubnetIndex(), set()
    for add, net in ops:
        (index.add if add else index.discard)(net)
        (held.add if add else held.discard)(net)
    found = index.overlapping(probe)
    clashes = {n for n in held if n != probe and n.overlaps(probe)}
    assert (found is None) == (not clashes)
    assert found is None or found in clashes


def test_the_usual_cases():
    index = SubnetIndex()
    for i in range(1, 200):
        index.add(IPv4Network(f"10.244.{i}.0/24"))
    assert index.overlapping(IPv4Network("10.244.7.0/24")) is None          # itself
    assert index.overlapping(IPv4Network("10.244.0.0/24")) is None          # a free one
    assert index.overlapping(IPv4Network("10.244.0.0/16")) == IPv4Network("10.244.1.0/24")
    assert index.overlapping(IPv4Network("10.244.7.128/25")) == IPv4Network("10.244.7.0/24")
    index.discard(IPv4Network("10.244.7.0/24"))
    assert index.overlapping(IPv4Network("10.244.7.128/25")) is None
