"""Counters and latency windows of a pool; read by the admin endpoint and the metrics."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


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
            samples = sorted(self._samples)
        if not samples:
            return {"count": 0, "avg_ms": 0.0, "p50_ms": 0.0, "p95_ms": 0.0}

        def at(fraction: float) -> float:
            return round(samples[min(len(samples) - 1, round(fraction * (len(samples) - 1)))], 3)

        return {
            "count": len(samples),
            "avg_ms": round(sum(samples) / len(samples), 3),
            "p50_ms": at(0.50),
            "p95_ms": at(0.95),
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
            "acquire_wait": self.acquire_wait.summary(),
            "run_time": self.run_time.summary(),
            "reset_time": self.reset_time.summary(),
            "agent_reset_time": self.agent_reset_time.summary(),
        }
