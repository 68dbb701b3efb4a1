"""runc against gVisor (runsc), side by side, all figures from one run, for choosing a runtime.

    uv run python -m load_tests.bench_runtimes [--runs 100] [--cold-runs 10] [--seconds 10]

For each configuration (runc reused, runc single-use, runsc single-use; Settings refuse runsc with
reuse) it measures, with the pool's exact hardening:
- cold: `docker run` of `print('hello')` in a fresh container (create, attach, start, remove);
- warm: `print('hello')` through a pool of 2, one caller, each run started once a warm container
  is waiting and its runner has had RUNNER_SETTLE_S to start (p50/p95);
- reset: reuse mode, the host's wait for the agent's clean report; single-use mode, the time to
  replace the used container (a new one started until its agent says hello);
- throughput: runs/s of 2 callers back to back on a pool of 2 (single-use: bound by how fast
  containers are replaced).
Writes load_tests/results/bench_runtimes-*.json.
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

POOL_SIZE = 2
# A reused container is idle again before its agent has started the next runner; a single-use
# one says hello only after. The pause lets both be fully warm, so they compare fairly.
RUNNER_SETTLE_S = 0.1
CONFIGURATIONS = [("runc", "reuse"), ("runc", "single_use"), ("runsc", "single_use")]


def _settings(runtime: str, mode: str) -> Settings:
    return Settings(
        _env_file=None,
        sandbox_runtime="" if runtime == "runc" else runtime,
        pool_mode=mode,
        pool_initial_size=POOL_SIZE,
        pool_min_size=POOL_SIZE,
        pool_max_size=POOL_SIZE,
        pool_max_runs_per_container=100_000,
        pool_acquire_timeout_s=60,
        pool_start_timeout_s=60,
        pool_health_check_interval_s=3600,
        pool_idle_reclaim_interval_s=3600,
    )


def _wait_until_full(pool: ContainerPool, timeout_s: float = 60.0) -> float:
    """Block until every container of the pool is idle and warm; returns the seconds waited."""
    started = time.perf_counter()
    while pool.stats()["available"] < POOL_SIZE:
        if time.perf_counter() - started > timeout_s:
            raise RuntimeError("the pool did not refill in time")
        time.sleep(0.002)
    return time.perf_counter() - started


def measure_warm(pool: ContainerPool, runs: int) -> tuple[list[float], list[float]]:
    """Caller-side latencies of runs that each find a warm container, and (single-use) how long
    the pool then took to replace the container used."""
    latencies: list[float] = []
    refills: list[float] = []
    for index in range(runs + 5):
        _wait_until_full(pool)
        time.sleep(RUNNER_SETTLE_S)
        started = time.perf_counter()
        result = pool.run(RunRequest(code=HELLO))
        elapsed = time.perf_counter() - started
        if result.stdout != "hello\n":
            raise RuntimeError(f"wrong output {result}")
        refill = _wait_until_full(pool) + elapsed
        if index >= 5:  # the first runs warm the page cache and the interpreter
            latencies.append(elapsed)
            refills.append(refill)
    return latencies, refills


def measure_throughput(pool: ContainerPool, seconds: float) -> float:
    done = [0] * POOL_SIZE
    stop_at = time.monotonic() + seconds

    def caller(index: int) -> None:
        while time.monotonic() < stop_at:
            if pool.run(RunRequest(code=f"print({index})")).stdout != f"{index}\n":
                raise RuntimeError("a run returned another run's output")
            done[index] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=caller, args=(n,)) for n in range(POOL_SIZE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def measure(client: Any, runtime: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    settings = _settings(runtime, mode)
    pool = ContainerPool(settings, client, LANGUAGES["python"])
    pool.start()
    try:
        limits = SandboxLimits.from_settings(settings, LANGUAGES["python"])
        cold_run_s(client, pool.image, limits, HELLO)  # pays for the page cache, not counted
        cold = [cold_run_s(client, pool.image, limits, HELLO) for _ in range(args.cold_runs)]
        warm, refills = measure_warm(pool, args.runs)
        reset = (
            pool.counters.reset_time.summary()
            if mode == "reuse"
            else {k: v for k, v in summary_ms(refills).items() if k != "p99_ms"}
        )
        runs_per_s = measure_throughput(pool, args.seconds)
    finally:
        pool.shutdown()
    return {
        "runtime": runtime,
        "mode": mode,
        "cold": summary_ms(cold),
        "warm": summary_ms(warm),
        "reset": reset,
        "reset_is": "agent clean report" if mode == "reuse" else "run + container replaced",
        "runs_per_s": round(runs_per_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    client = engine.connect(8)
    report = {"machine": machine(), "pool_size": POOL_SIZE, "results": []}
    for runtime, mode in CONFIGURATIONS:
        report["results"].append(measure(client, runtime, mode, args))
    report["machine"]["load_average_1m_end"] = machine()["load_average_1m"]
    path = write_result("bench_runtimes", report)
    _print(report, path)
    return 0


def _print(report: dict[str, Any], path: Any) -> None:
    m = report["machine"]
    print(f"bench_runtimes on {m['cores']} cores, load {m['load_average_1m']}, {m['date']}")
    print("  runtime mode        cold p50/p95 ms   warm p50/p95 ms   reset p50/p95 ms   runs/s")
    for r in report["results"]:
        print(
            f"  {r['runtime']:7} {r['mode']:10} "
            f"{r['cold']['p50_ms']:7.1f} /{r['cold']['p95_ms']:7.1f}"
            f"   {r['warm']['p50_ms']:6.1f} /{r['warm']['p95_ms']:6.1f}"
            f"     {r['reset']['p50_ms']:6.1f} /{r['reset']['p95_ms']:6.1f}"
            f"   {r['runs_per_s']:6.1f}"
        )
    print(f"  written to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
