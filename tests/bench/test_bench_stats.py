"""Medians, percentiles, ratios, the interleaved order and the latency histogram."""

from __future__ import annotations

import pytest

from bench.stats import LogHistogram, median, percentile, ratio, schedule


def test_median_odd_even_and_missing():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    assert median([None, 5, None, 1, 3]) == 3
    assert median([]) is None
    assert median([None]) is None


def test_percentile_interpolates_between_ranks():
    xs = [10, 20, 30, 40, 50]
    assert percentile(xs, 0) == 10
    assert percentile(xs, 50) == 30
    assert percentile(xs, 100) == 50
    assert percentile(xs, 90) == pytest.approx(46.0)
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(xs, 101)


def test_ratio_guards_missing_and_zero_baseline():
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(3.0, None) is None
    assert ratio(3.0, 0) is None


def test_schedule_interleaves_rounds():
    assert schedule(["A", "B", "C"], 2) == [
        (1, "A"), (1, "B"), (1, "C"), (2, "A"), (2, "B"), (2, "C")]
    assert schedule(["A"], 0) == []


def test_histogram_bins_merge_and_cdf():
    h = LogHistogram()
    assert len(h.counts) == LogHistogram.nbins() == 240
    h.extend([50.0, 50.0, 100.0, 1e9, 0.1])       # out of range: first and last bins
    assert h.total == 5
    assert h.counts[0] == 1 and h.counts[-1] == 1
    edges = LogHistogram.edges()
    i = next(k for k, c in enumerate(h.counts) if c == 2)
    assert edges[i] <= 50.0 < edges[i + 1]
    other = LogHistogram()
    other.add(100.0)
    h.merge(other)
    assert h.total == 6
    xs, ys = h.cdf()
    assert ys[-1] == 1.0 and xs == sorted(xs) and ys == sorted(ys)
    with pytest.raises(ValueError):
        LogHistogram([0, 1])
