"""Packet rate as capacity (RFC 2544 style): the highest offered rate of 64-byte UDP that a
dataplane carries with at most LOSS_LIMIT lost, found by binary search over short trials.

    trial 1:    as fast as one sender goes (-b 0): the sender's ceiling, and if that loses
                no more than the limit, the answer (marked sender-limited: the dataplane may
                carry more than one sender offers)
    trial 2..n: offered rate halfway between the best passing and the lowest failing rate

What one sender achieves (trial 1's received rate) is kept beside it, as the old figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from bench import parsers, traffic
from bench.topology import Topology

LOSS_LIMIT_PCT = 0.1
PAYLOAD = 64


@dataclass(frozen=True)
class Trial:
    offered_pps: float | None    # None: unlimited (-b 0)
    sent: int
    lost: int
    seconds: float

    @property
    def loss_pct(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 100.0

    @property
    def rx_pps(self) -> float:
        return (self.sent - self.lost) / self.seconds if self.seconds > 0 else 0.0

    @property
    def tx_pps(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Capacity:
    pps: float | None            # highest received rate of a passing trial; None: none passed
    sender_limited: bool         # the unlimited sender itself passed
    sender_rx_pps: float         # what one unlimited sender got through
    sender_loss_pct: float
    trials: list[Trial]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["trials"] = [{**asdict(t), "loss_pct": round(t.loss_pct, 4)} for t in self.trials]
        return d


def search(run_trial: Callable[[float | None], Trial], trials: int,
           loss_limit_pct: float = LOSS_LIMIT_PCT) -> Capacity:
    """Binary search with `trials` trials in all (at least 1); run_trial(None) sends as fast
    as it can, run_trial(pps) offers that rate."""
    first = run_trial(None)
    done = [first]
    ok = first.loss_pct <= loss_limit_pct
    if ok or trials <= 1:
        return Capacity(first.rx_pps if ok else None, ok, first.rx_pps, first.loss_pct, done)
    best: Trial | None = None
    low, high = 0.0, first.tx_pps       # high: the lowest offered rate known to fail
    for _ in range(trials - 1):
        offered = (low + high) / 2
        t = run_trial(offered)
        done.append(t)
        if t.loss_pct <= loss_limit_pct:
            low = offered
            if best is None or t.rx_pps > best.rx_pps:
                best = t
        else:
            high = offered
    return Capacity(best.rx_pps if best else None, False, first.rx_pps, first.loss_pct, done)


def measure(topo: Topology, seconds: float, trials: int, cpus: set[int] | None) -> Capacity:
    """The search against one lab: one iperf3 server for all trials (no -1: it serves them
    one after the other), each trial a `seconds`-long client run."""
    ip = topo.server.ip
    argv = [a for a in traffic.iperf3_server(ip) if a != "-1"]

    def run_trial(pps: float | None) -> Trial:
        bps = 0 if pps is None else max(1, round(pps * PAYLOAD * 8))
        cmd = traffic.iperf3_udp(ip, seconds, PAYLOAD)
        cmd[cmd.index("-b") + 1] = str(bps)
        out = traffic.client(topo, cmd, cpus, timeout=seconds + 30)
        r = parsers.iperf3_udp(out.stdout)
        return Trial(pps, r.packets_sent, r.packets_lost, r.seconds)

    with traffic.server(topo, argv, "tcp", traffic.IPERF_PORT, cpus):
        return search(run_trial, trials)
