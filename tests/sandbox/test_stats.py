"""The one percentile helper and the pool's latency windows built on it."""

from __future__ import annotations

import statistics

from app.sandbox.stats import LatencyWindow, percentile


def test_percentile_is_statistics_quantiles_inclusive():
    samples = [float(value) for value in range(1, 101)]
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    assert percentile(samples, 50) == cuts[49] == 50.5
    assert percentile(samples, 95) == cuts[94]


def test_percentile_of_no_sample_is_none_and_of_one_is_itself():
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0


def test_latency_window_keeps_the_most_recent_samples():
    window = LatencyWindow(size=10)
    for value in range(100):
        window.add(float(value))
    summary = window.summary()
    assert summary["count"] == 10
    assert summary["avg_ms"] == 94.5
    assert summary["p50_ms"] == 94.5
    assert LatencyWindow().summary()["p95_ms"] == 0.0
