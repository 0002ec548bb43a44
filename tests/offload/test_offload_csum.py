"""dp_csum_partial (csum64.c) and dp_csum_copy: the same sum (and an exact copy), at any length
and alignment."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dataplane.fastpath import pyref as P
from offload_packets import budget, inet_sum


@budget()
@given(data=st.binary(max_size=300), skew=st.integers(0, 7),
       initial=st.integers(0, 0xFFFFFFFF))
def test_csum_copy_agrees(impl, data, skew, initial):
    src = bytes(skew) + data
    view = memoryview(src)[skew:]           # unaligned source
    copy, total = impl.csum_copy(view, initial)
    assert copy == data
    assert (copy, total) == P.csum_copy(data, initial)
    assert total == impl.csum_partial(data, initial) == impl.csum_partial(view, initial)
    if data or initial:
        assert total == inet_sum(data, initial)


def test_csum_copy_long_buffers(impl):
    for n in (1447, 1448, 9000, 65535):
        data = bytes((i * 131 + 7) & 0xFF for i in range(n))
        assert impl.csum_copy(data)[1] == impl.csum_partial(data) == inet_sum(data)


def test_all_ones_sum_is_ffff_not_zero(impl):
    assert impl.csum_copy(b"\xff\xff" * 40)[1] == impl.csum_partial(b"\xff\xff" * 40) == 0xFFFF
    assert impl.csum_copy(b"\0" * 40)[1] == impl.csum_partial(b"\0" * 40) == 0


@budget()
@given(data=st.lists(st.sampled_from([0x00, 0x01, 0xFE, 0xFF]), max_size=600).map(bytes),
       initial=st.sampled_from([0, 1, 0xFFFF, 0x10000, 0xFFFFFFFF]))
def test_carries_at_the_edges(impl, data, initial):
    """Bytes near 0 and 0xff make the 64-bit adds carry (or just miss) at every step."""
    expected = P.csum_partial(data, initial)
    assert impl.csum_partial(data, initial) == impl.csum_copy(data, initial)[1] == expected
