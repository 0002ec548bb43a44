"""dp_csum_copy: copies exactly and sums exactly as dp_csum_partial, at any length/alignment."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dataplane.fastpath import cnative as C
from dataplane.fastpath import pyref as P
from offload_packets import inet_sum


@given(data=st.binary(max_size=300), skew=st.integers(0, 7),
       initial=st.integers(0, 0xFFFFFFFF))
def test_csum_copy_agrees(data, skew, initial):
    src = bytes(skew) + data
    view = memoryview(src)[skew:]           # unaligned source
    copy, total = C.csum_copy(view, initial)
    assert copy == data
    assert (copy, total) == P.csum_copy(data, initial)
    assert total == C.csum_partial(data, initial)
    if data or initial:
        assert total == inet_sum(data, initial)


def test_csum_copy_long_buffers():
    for n in (1447, 1448, 9000, 65535):
        data = bytes((i * 131 + 7) & 0xFF for i in range(n))
        assert C.csum_copy(data)[1] == P.csum_partial(data) == inet_sum(data)


def test_all_ones_sum_is_ffff_not_zero():
    assert C.csum_copy(b"\xff\xff" * 40)[1] == 0xFFFF
    assert C.csum_copy(b"\0" * 40)[1] == 0
