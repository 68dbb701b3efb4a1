"""Shared pieces of the benchmarks: a cold-container baseline, summaries, and result files.

The cold baseline is what a sandbox without a pool pays per run: create a container with exactly
the pool's hardening, attach, start, read the output to the end, remove it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker

from app.sandbox.engine import create_hardened_container
from app.sandbox.limits import SandboxLimits
from app.sandbox.stats import percentile

RESULTS = Path(__file__).parent / "results"
HELLO = "print('hello')"


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50) or 0.0, 2),
        "p95_ms": round(percentile(ms, 95) or 0.0, 2),
        "p99_ms": round(percentile(ms, 99) or 0.0, 2),
        "max_ms": round(max(ms), 2) if ms else 0.0,
    }


def cold_run_s(client: docker.DockerClient, image: str, limits: SandboxLimits, code: str) -> float:
    """One `docker run --rm` with the pool's hardening; returns seconds, checks the output."""
    started = time.perf_counter()
    entrypoint = ["python3", "-I", "-c", code]
    container_id = create_hardened_container(client, image, limits, entrypoint=entrypoint)
    try:
        stream = client.api.attach(container_id, stream=True, stdout=True, stderr=True)
        client.api.start(container_id)
        output = b"".join(stream)
        client.api.wait(container_id)
    finally:
        client.api.remove_container(container_id, force=True)
    elapsed = time.perf_counter() - started
    if b"hello" not in output:
        raise RuntimeError(f"cold run printed {output!r}")
    return elapsed


def _cpu_jiffies() -> list[int]:
    """The all-cores line of /proc/stat: user, nice, system, idle, iowait, irq, softirq, steal..."""
    with open("/proc/stat") as stat:
        return [int(value) for value in stat.readline().split()[1:]]


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    fields = _cpu_jiffies()
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def steal_jiffies() -> tuple[int, int]:
    """(steal, total) jiffies since boot: the time the hypervisor gave this VM's cores to others."""
    fields = _cpu_jiffies()
    return fields[7], sum(fields)


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    return round(100 * (after[0] - before[0]) / max(after[1] - before[1], 1), 1)


def wait_quiet(busy_below: float = 0.2, window_s: float = 1.0, limit_s: float = 90.0) -> float:
    """Wait until the machine's cores were less than `busy_below` busy over a whole `window_s`
    (containers a pool is still starting, a JVM warming its compiler: nothing of the measure),
    at most `limit_s`; returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        busy, total = _cpu_times()
        time.sleep(window_s)
        busy_after, total_after = _cpu_times()
        if (busy_after - busy) < busy_below * max(total_after - total, 1):
            break
    return round(time.monotonic() - started, 1)


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    path = RESULTS / f"{name}-{stamp}-{os.cpu_count()}cores.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
