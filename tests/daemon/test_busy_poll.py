"""Two daemons with --busy-poll: traffic passes, the poll ran, and once traffic stops the
daemons sleep again (their CPU time hardly grows over a second of quiet). No latency figure is
asserted: that belongs to the benchmark."""

from __future__ import annotations

import os
import time

import pytest

from tests import netns
from tests.daemon.test_lifecycle import metrics, ping
from tests.daemon.test_offload import start_pair, stop

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every worker thread)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@pytest.mark.netns
@pytest.mark.parametrize("backend,workers", [("udp", "1"), ("vxlan", "2")])
def test_busy_poll_forwards_then_sleeps_when_idle(host, backend, workers):
    procs = start_pair(host, backend, "--busy-poll", "200", "--workers", workers)
    try:
        for proc in procs:      # `ip netns exec` execs the daemon: the pid is the daemon's
            with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            assert argv[0] != b"ip" and b"--busy-poll" in argv, argv
        assert netns.wait_for(lambda: ping(host.ns, "10.244.2.0"), what="a -> b")
        assert ping(host.peer_ns, "10.244.1.0", count=5)
        for ns, port in ((host.ns, 9101), (host.peer_ns, 9102)):
            m = metrics(ns, port)
            assert m['dataplane_packets_total{direction="egress"}'] >= 2
            # every wakeup that moved packets polled at least one round
            assert m["dataplane_busy_poll_rounds_total"] >= 1
            assert m["dataplane_busy_poll_hits_total"] <= m["dataplane_busy_poll_rounds_total"]

        time.sleep(0.5)         # the last windows close within 200 us
        rounds = [metrics(ns, port)["dataplane_busy_poll_rounds_total"]
                  for ns, port in ((host.ns, 9101), (host.peer_ns, 9102))]
        before = [cpu_seconds(p.pid) for p in procs]
        time.sleep(1.0)
        spent = [cpu_seconds(p.pid) - b for p, b in zip(procs, before)]
        polled = [metrics(ns, port)["dataplane_busy_poll_rounds_total"] - r
                  for (ns, port), r in zip(((host.ns, 9101), (host.peer_ns, 9102)), rounds)]
        # Spinning costs up to a CPU-s per polling worker (less on a loaded machine, where it
        # gets a share of a core: hundreds of thousands of rounds either way); sleeping costs
        # timers only, and a stray packet (the TUN's own IPv6 chatter) one short window.
        assert all(s < 0.3 for s in spent), spent
        assert all(n < 5000 for n in polled), polled
    finally:
        out = stop(procs)
    assert "busy-poll 200 us" in out and "Traceback" not in out
