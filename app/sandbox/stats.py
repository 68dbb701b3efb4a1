"""Counters and latency windows of a pool; read by the admin endpoint and the metrics.

`percentile` is the one percentile calculation of the project: the pool's windows, the benchmarks
and the load-test summary all use it (this module imports nothing but the standard library).
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(samples: Sequence[float], point: int) -> float | None:
    """The `point`-th percentile (1-99) of `samples`, None when there are none.

    `statistics.quantiles` with the inclusive method interpolates between the samples, so the
    samples are treated as the whole population measured, as a benchmark's are.
    """
    if not samples:
        return None
    if len(samples) == 1:
        return float(samples[0])
    return statistics.quantiles(samples, n=100, method="inclusive")[point - 1]


class LatencyWindow:
    """The most recent samples of a duration, for an average and a p95 that follow current load."""

    def __init__(self, size: int = 1000) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value_ms: float) -> None:
        with self._lock:
            self._samples.append(value_ms)

    def summary(self) -> dict[str, float | int]:
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return {"count": 0, "avg_ms": 0.0, "p50_ms": 0.0, "p95_ms": 0.0}
        return {
            "count": len(samples),
            "avg_ms": round(statistics.fmean(samples), 3),
            "p50_ms": round(percentile(samples, 50) or 0.0, 3),
            "p95_ms": round(percentile(samples, 95) or 0.0, 3),
        }


@dataclass
class PoolCounters:
    created: int = 0
    destroyed: int = 0
    executions: int = 0
    resets: int = 0
    reset_failures: int = 0
    health_check_failures: int = 0
    replacements: int = 0
    start_failures: int = 0
    exhausted: int = 0
    cold_starts: int = 0  # containers started because a run found nothing warm
    evictions: int = 0  # idle containers given up for another language's waiting run
    reclaimed: int = 0  # idle containers given back after the idle timeout
    acquire_wait: LatencyWindow = field(default_factory=LatencyWindow)
    run_time: LatencyWindow = field(default_factory=LatencyWindow)
    # the host's wait for the clean report after a result, and the agent's own cleaning time
    reset_time: LatencyWindow = field(default_factory=LatencyWindow)
    agent_reset_time: LatencyWindow = field(default_factory=LatencyWindow)

    def snapshot(self) -> dict[str, object]:
        return {
            "created": self.created,
            "destroyed": self.destroyed,
            "executions": self.executions,
            "resets": self.resets,
            "reset_failures": self.reset_failures,
            "health_check_failures": self.health_check_failures,
            "replacements": self.replacements,
            "start_failures": self.start_failures,
            "exhausted": self.exhausted,
            "cold_starts": self.cold_starts,
            "evictions": self.evictions,
            "reclaimed": self.reclaimed,
            "acquire_wait": self.acquire_wait.summary(),
            "run_time": self.run_time.summary(),
            "reset_time": self.reset_time.summary(),
            "agent_reset_time": self.agent_reset_time.summary(),
        }
