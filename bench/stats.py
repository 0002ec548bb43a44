"""Small statistics over the standard library's `statistics`: medians, percentiles, ratios,
the order of a run, and log-spaced histograms that keep latency distributions small in the
results."""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable, Sequence


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None; None when there are none."""
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default, which is
    statistics.quantiles' "inclusive" method)."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    xs = sorted(values)
    if not xs:
        return None
    if len(xs) == 1 or q in (0, 100):
        return xs[0] if q == 0 or len(xs) == 1 else xs[-1]
    if float(q).is_integer():
        return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]
    pos = (len(xs) - 1) * q / 100         # a fractional percentile: the same rule by hand
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline; None when either is missing or the baseline is zero."""
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def schedule(names: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, name) in run order: every round visits every dataplane in the same order,
    A B C A B C ..., so slow drift of the machine spreads over all of them alike."""
    return [(r, name) for r in range(1, rounds + 1) for name in names]


class LogHistogram:
    """Counts in log-spaced bins (BINS_PER_DECADE per factor of 10) from LOW to HIGH; values
    outside land in the first or last bin. Mergeable, and a few hundred bytes in JSON."""

    LOW, HIGH, BINS_PER_DECADE = 1.0, 1e6, 40

    def __init__(self, counts: Sequence[int] | None = None) -> None:
        n = self.nbins()
        self.counts = list(counts) if counts is not None else [0] * n
        if len(self.counts) != n:
            raise ValueError(f"a histogram has {n} bins, not {len(self.counts)}")

    @classmethod
    def nbins(cls) -> int:
        return round(math.log10(cls.HIGH / cls.LOW) * cls.BINS_PER_DECADE)

    @classmethod
    def edges(cls) -> list[float]:
        return [cls.LOW * 10 ** (i / cls.BINS_PER_DECADE) for i in range(cls.nbins() + 1)]

    def add(self, value: float) -> None:
        i = bisect.bisect_right(self.edges(), value) - 1
        self.counts[min(max(i, 0), len(self.counts) - 1)] += 1

    def extend(self, values: Iterable[float]) -> None:
        edges = self.edges()
        last = len(self.counts) - 1
        for v in values:
            self.counts[min(max(bisect.bisect_right(edges, v) - 1, 0), last)] += 1

    def merge(self, other: LogHistogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]

    @property
    def total(self) -> int:
        return sum(self.counts)

    def cdf(self) -> tuple[list[float], list[float]]:
        return cdf(self.counts, self.edges())


def cdf(counts: Sequence[int], edges: Sequence[float]) -> tuple[list[float], list[float]]:
    """(upper bin edge, fraction of values at or below it) at every non-empty bin."""
    xs, ys, seen, total = [], [], 0, sum(counts)
    for i, c in enumerate(counts):
        if c:
            seen += c
            xs.append(edges[i + 1])
            ys.append(seen / total)
    return xs, ys
