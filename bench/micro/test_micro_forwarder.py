"""Forwarder decisions on batches of 64 packets of 1400 bytes, per mode.

Two C numbers are taken: through the Python API (Forwarder.egress/ingress, which copies each
packet into a batch and builds a Verdict per packet in Python) and the C batch call alone
(dp_egress_batch / dp_ingress_batch on slots prepared outside the timing), which is what
drain_tun/drain_udp run per readiness event. The Python reference has only the first.
"""

from __future__ import annotations

import pytest

from dataplane.fastpath.types import HEADROOM

from .conftest import BATCH, SIZE, egress_batch, forwarder, ingress_batch, tag


def test_forwarder_egress(benchmark, impl, mode):
    fwd, batch = forwarder(impl, mode), egress_batch()
    tag(benchmark, impl, f"Forwarder.egress {mode} x{BATCH}", BATCH)
    verdicts = benchmark(fwd.egress, batch)
    assert [v.action for v in verdicts] == [1] * BATCH


def test_forwarder_ingress(benchmark, impl, mode):
    fwd, batch = forwarder(impl, mode), ingress_batch(impl, mode)
    tag(benchmark, impl, f"Forwarder.ingress {mode} x{BATCH}", BATCH)
    verdicts = benchmark(fwd.ingress, batch)
    assert [v.action for v in verdicts] == [2] * BATCH


class CBatch:
    """64 slots as tun_adapter.c lays them out, restored from a pristine copy before every round
    (the batch functions rewrite packets in place)."""

    def __init__(self, c, payloads: list[bytes], src: int = 0):
        self.c, self.n = c, len(payloads)
        self.slot = HEADROOM + SIZE + 64
        self.arena = c.ffi.new("uint8_t[]", self.n * self.slot)
        self.pristine = c.ffi.new("uint8_t[]", self.n * self.slot)
        self.pkts = c.ffi.new("struct dp_pkt[]", self.n)
        self.lens = [len(p) for p in payloads]
        self.src = src
        for i, p in enumerate(payloads):
            c.ffi.memmove(self.pristine + i * self.slot + HEADROOM, p, len(p))

    def reset(self):
        self.c.ffi.memmove(self.arena, self.pristine, self.n * self.slot)
        for i in range(self.n):
            self.pkts[i].data = self.arena + i * self.slot + HEADROOM
            self.pkts[i].len = self.lens[i]
            self.pkts[i].addr = self.src


@pytest.mark.parametrize("direction", ["egress", "ingress"])
def test_c_batch_core(benchmark, cimpl, mode, direction):
    c = cimpl
    fwd = forwarder(c, mode)
    if direction == "egress":
        batch, call = CBatch(c, egress_batch()), c.lib.dp_egress_batch
    else:
        batch = CBatch(c, [p for _, _, p in ingress_batch(c, mode)], src=0x7F000002)
        call = c.lib.dp_ingress_batch
    benchmark.extra_info.update(impl="c-core", op=f"Forwarder.{direction} {mode} x{BATCH}",
                                packets=BATCH)
    benchmark.pedantic(call, args=(fwd._f, batch.pkts, BATCH), setup=batch.reset,
                       rounds=3000, warmup_rounds=50)
    want = 1 if direction == "egress" else 2                 # DP_ACT_SEND / DP_ACT_TUN
    assert [batch.pkts[i].action for i in range(BATCH)] == [want] * BATCH
