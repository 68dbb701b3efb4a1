"""What a Python run costs in CPU with and without the fork server, and the runs/s that allows.

    uv run python -m load_tests.bench_python_cpu [--containers 2] [--callers 4] [--seconds 15]

For each mode (SANDBOX_PYTHON_FORK_SERVER true and false, the default preload list) a reused pool
of N containers serves C callers back to back with a graded-case sized script (read a number on
stdin, print a sum) for the given time. Printed per mode: runs/s; CPU per run inside the
containers (the cgroups' cpuacct.usage: agent, fork server, runners, and the replacement runner a
run leaves behind); CPU per run of this process (the pool's threads and channels: the host side
without HTTP); and the e2e p50/p95 of one run through the pool. Writes
load_tests/results/bench_python_cpu-*.json.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

import docker

from app.core.config import Settings
from app.sandbox.languages import LANGUAGES
from app.sandbox.pool import ContainerPool
from app.sandbox.types import RunRequest
from load_tests.benchlib import machine, summary_ms, write_result

CASE = "import sys\nn = int(sys.stdin.read())\nprint(sum(range(n)))\n"
CGROUP_CPU = Path("/sys/fs/cgroup/cpuacct/docker")  # cgroup v1, as the engine runs here


def _settings(fork_server: bool, containers: int) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        pool_mode="reuse",
        sandbox_python_fork_server=fork_server,
        pool_initial_size=containers,
        pool_min_size=containers,
        pool_max_size=containers,
        pool_max_total=containers,
        pool_start_timeout_s=60.0,
        pool_acquire_timeout_s=30.0,
        pool_max_runs_per_container=100_000,
    )


def _container_cpu_ns(client: docker.DockerClient, pool: ContainerPool) -> int:
    total = 0
    for container in client.containers.list(filters={"label": f"warmbox.pool={pool.pool_id}"}):
        usage = CGROUP_CPU / container.id / "cpuacct.usage"
        if usage.exists():
            total += int(usage.read_text())
    return total


def measure(client: docker.DockerClient, fork_server: bool, args: argparse.Namespace) -> dict:
    pool = ContainerPool(_settings(fork_server, args.containers), client, LANGUAGES["python"])
    pool.start()
    try:
        for number in range(args.containers * 3):  # every container warm, its runner ready
            pool.run(RunRequest(code=CASE, stdin=str(number), timeout_s=10.0))
        time.sleep(2.0)
        latencies: list[float] = []
        failures = [0]
        stop_at = time.monotonic() + args.seconds
        lock = threading.Lock()

        def caller(index: int) -> None:
            number = index
            while time.monotonic() < stop_at:
                started = time.monotonic()
                result = pool.run(RunRequest(code=CASE, stdin=str(number), timeout_s=10.0))
                elapsed = time.monotonic() - started
                with lock:
                    latencies.append(elapsed)
                    if result.stdout != f"{sum(range(number))}\n":
                        failures[0] += 1
                number += args.callers

        cpu_before = _container_cpu_ns(client, pool)
        host_before = time.process_time()
        started = time.monotonic()
        threads = [threading.Thread(target=caller, args=(i,)) for i in range(args.callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        time.sleep(1.5)  # the last resets (and their replacement runners) are part of the cost
        runs = len(latencies)
        container_ms = (_container_cpu_ns(client, pool) - cpu_before) / 1e6
        host_ms = (time.process_time() - host_before) * 1000
        return {
            "fork_server": fork_server,
            "runs": runs,
            "wrong_outputs": failures[0],
            "runs_per_s": round(runs / elapsed, 1),
            "container_cpu_ms_per_run": round(container_ms / max(runs, 1), 1),
            "host_cpu_ms_per_run": round(host_ms / max(runs, 1), 1),
            "e2e_ms": summary_ms(latencies),
        }
    finally:
        pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--containers", type=int, default=2)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    client = docker.from_env()
    results: dict[str, Any] = {"machine": machine(), "containers": args.containers}
    results["modes"] = [measure(client, fork, args) for fork in (True, False)]
    for mode in results["modes"]:
        print(
            f"fork server {'on ' if mode['fork_server'] else 'off'}: {mode['runs_per_s']} runs/s, "
            f"container CPU {mode['container_cpu_ms_per_run']} ms/run, "
            f"host CPU {mode['host_cpu_ms_per_run']} ms/run, e2e p50 {mode['e2e_ms']['p50_ms']} ms "
            f"p95 {mode['e2e_ms']['p95_ms']} ms, wrong outputs {mode['wrong_outputs']}"
        )
    print(f"written to {write_result('bench_python_cpu', results)}")


if __name__ == "__main__":
    main()
