"""Benchmark of the ContainerPool against a cold container, all figures from one run.

    uv run python -m load_tests.bench_pool [--runs 300] [--cold-runs 15] [--seconds 10]

Prints, and writes to load_tests/results/:
- cold: a fresh container per run with the same hardening (create, attach, start, remove);
- warm: `print('hello')` through the pool, one caller, pool of 4 (p50/p99, ratio to cold);
- reset: the host's wait for the agent's clean report after each run, and the agent's own time;
- throughput: runs/s sustained by 4 concurrent callers on a pool of 4.
Targets (issue 3): warm p50 <= 15 ms, p99 <= 40 ms, >= 10x faster than cold, reset p50 <= 10 ms,
>= 60 runs/s.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from app.core.config import Settings
from app.sandbox import engine
from app.sandbox.languages import LANGUAGES
from app.sandbox.limits import SandboxLimits
from app.sandbox.pool import ContainerPool
from app.sandbox.types import RunRequest
from load_tests.benchlib import HELLO, cold_run_s, machine, summary_ms, write_result

TARGETS = {
    "warm_p50_ms": 15.0,
    "warm_p99_ms": 40.0,
    "speedup_vs_cold": 10.0,
    "reset_p50_ms": 10.0,
    "runs_per_s": 60.0,
}


def _pool(client: Any, size: int) -> ContainerPool:
    settings = Settings(
        _env_file=None,
        pool_initial_size=size,
        pool_min_size=size,
        pool_max_size=size,
        pool_max_runs_per_container=100_000,
        pool_acquire_timeout_s=30,
        pool_health_check_interval_s=3600,
        pool_idle_reclaim_interval_s=3600,
    )
    pool = ContainerPool(settings, client, LANGUAGES["python"])
    pool.start()
    return pool


def measure_cold(client: Any, pool: ContainerPool, runs: int) -> list[float]:
    limits = SandboxLimits.from_settings(pool.settings)
    cold_run_s(client, pool.image, limits, HELLO)  # first one pays for page cache, not counted
    return [cold_run_s(client, pool.image, limits, HELLO) for _ in range(runs)]


def measure_warm(pool: ContainerPool, runs: int) -> list[float]:
    """One caller, back to back, after a short warm-up; returns the caller-side latencies."""
    for _ in range(20):
        pool.run(RunRequest(code=HELLO))
    latencies: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        result = pool.run(RunRequest(code=HELLO))
        latencies.append(time.perf_counter() - started)
        if result.stdout != "hello\n":
            raise RuntimeError(f"wrong output {result}")
    return latencies


def measure_throughput(pool: ContainerPool, callers: int, seconds: float) -> dict[str, float]:
    done = [0] * callers
    errors: list[str] = []
    stop_at = time.monotonic() + seconds

    def caller(index: int) -> None:
        while time.monotonic() < stop_at:
            result = pool.run(RunRequest(code=f"print({index})"))
            if result.stdout != f"{index}\n":
                errors.append(result.stdout)
            done[index] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} runs returned another run's output")
    return {"runs": sum(done), "seconds": round(elapsed, 2), "runs_per_s": sum(done) / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--cold-runs", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    client = engine.connect(8)
    pool = _pool(client, 4)
    try:
        cold = summary_ms(measure_cold(client, pool, args.cold_runs))
        warm = summary_ms(measure_warm(pool, args.runs))
        reset_wall = pool.counters.reset_time.summary()
        reset_agent = pool.counters.agent_reset_time.summary()
        throughput = measure_throughput(pool, callers=4, seconds=args.seconds)
        stats = pool.stats()
    finally:
        pool.shutdown()
    figures = {
        "warm_p50_ms": warm["p50_ms"],
        "warm_p99_ms": warm["p99_ms"],
        "speedup_vs_cold": round(cold["p50_ms"] / warm["p50_ms"], 1),
        "reset_p50_ms": float(reset_wall["p50_ms"]),
        "runs_per_s": round(throughput["runs_per_s"], 1),
    }
    passed = {
        key: (figures[key] <= target if key.endswith("_ms") else figures[key] >= target)
        for key, target in TARGETS.items()
    }
    report = {
        "machine": machine(),
        "cold": cold,
        "warm": warm,
        "reset_wall": reset_wall,
        "reset_agent": reset_agent,
        "pool_stats": {key: stats[key] for key in ("created", "resets", "reset_failures")},
        "throughput": throughput,
        "figures": figures,
        "targets": TARGETS,
        "passed": passed,
    }
    path = write_result("bench_pool", report)
    _print(report, path)
    return 0 if all(passed.values()) else 1


def _print(report: dict[str, Any], path: Any) -> None:
    m = report["machine"]
    print(f"bench_pool on {m['cores']} cores, load {m['load_average_1m']}, {m['date']}")
    print(
        f"  cold container run    p50 {report['cold']['p50_ms']:8.1f} ms   "
        f"p95 {report['cold']['p95_ms']:8.1f} ms   (n={report['cold']['count']})"
    )
    print(
        f"  warm pool run         p50 {report['warm']['p50_ms']:8.2f} ms   "
        f"p99 {report['warm']['p99_ms']:8.2f} ms   (n={report['warm']['count']})"
    )
    print(
        f"  reset after a run     p50 {report['figures']['reset_p50_ms']:8.2f} ms   "
        f"p95 {report['reset_wall']['p95_ms']:8.2f} ms   (agent's own work p50 "
        f"{report['reset_agent']['p50_ms']:.2f} ms)"
    )
    print(
        f"  throughput 4 callers  {report['throughput']['runs_per_s']:8.1f} runs/s "
        f"({report['throughput']['runs']} runs in {report['throughput']['seconds']} s)"
    )
    print(f"  speed-up warm vs cold {report['figures']['speedup_vs_cold']:8.1f}x")
    for key, ok in report["passed"].items():
        print(
            f"  {'PASS' if ok else 'FAIL'}  {key} = {report['figures'][key]} "
            f"(target {'<=' if key.endswith('_ms') else '>='} {report['targets'][key]})"
        )
    print(f"  written to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
