"""Per-language warm run times, next to a cold container of the same image for one run.

    uv run python -m load_tests.bench_runtimes_langs [--runs 20] [--languages python,c]

One reuse-mode pool of one container per language (the real agent, runners and images); each
sample is one `pool.run` of the language's hello (python also a numpy + pandas script), measured
in-process around the call, so the HTTP layer (a few ms, see bench_api) is not included. The pool
hands the container out only once its runner is ready, so a sample never waits for a pre-import.
"Cached" repeats the same compiled source with the build the first run returned (the build cache
of the budget branch passes it the same way). Issue 11's targets are printed beside each figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from typing import Any

from app.core.config import Settings
from app.sandbox import engine
from app.sandbox.languages import LANGUAGES
from app.sandbox.pool import ContainerPool
from app.sandbox.types import RunRequest
from load_tests.benchlib import machine, summary_ms, write_result

HELLO = {
    "python": "print('hello')",
    "javascript": "console.log('hello')",
    "typescript": "const greeting: string = 'hello';\nconsole.log(greeting);",
    "bash": "echo hello",
    "c": '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n',
    "cpp": '#include <iostream>\nint main() { std::cout << "hello" << std::endl; }\n',
    "java": (
        "public class Main {\n  public static void main(String[] a) {\n"
        '    System.out.println("hello");\n  }\n}\n'
    ),
    "go": 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello") }\n',
    "rust": 'fn main() { println!("hello"); }\n',
}
NUMPY_PANDAS = (
    "import numpy as np\nimport pandas as pd\n"
    "frame = pd.DataFrame(np.random.default_rng(1).normal(size=(1000, 4)), columns=list('abcd'))\n"
    "print(frame.describe())\nprint('hello')"
)
TARGET_MS = {
    "python": 15, "javascript": 15, "bash": 15, "typescript": 60, "c": 150,
    "cpp": 800, "go": 800, "rust": 800, "java": 400, "numpy+pandas": 20, "cached": 20,
}  # fmt: skip


def sample(pool: ContainerPool, code: str, runs: int, **extra: Any) -> tuple[list[float], Any]:
    times, last = [], None
    for _ in range(runs):
        started = time.perf_counter()
        last = pool.run(RunRequest(code=code, language=pool.language.name, **extra))
        times.append(time.perf_counter() - started)
        if "hello" not in last.stdout:
            raise RuntimeError(f"{pool.language.name}: {last}")
        time.sleep(0.05)  # let the agent's reset (and the next runner's warm-up) finish
        while not pool.stats()["available"]:
            time.sleep(0.01)
    return times, last


def cold_once(client: Any, pool: ContainerPool, code: str) -> float:
    """A fresh container of the same image, started for one run and removed (its start included)."""
    settings = pool.settings.model_copy(update={"pool_mode": "single_use"})
    cold = ContainerPool(settings, client, pool.language)
    started = time.perf_counter()
    cold.start()
    try:
        cold.run(RunRequest(code=code, language=pool.language.name))
    finally:
        cold.shutdown()
    return time.perf_counter() - started


def measure(client: Any, name: str, runs: int) -> dict[str, Any]:
    settings = Settings(
        _env_file=None,
        pool_initial_size=1, pool_min_size=1, pool_max_size=1,
        pool_acquire_timeout_s=60.0, pool_start_timeout_s=60.0,
        pool_max_runs_per_container=100000,
    )  # type: ignore[call-arg]  # fmt: skip
    pool = ContainerPool(settings, client, LANGUAGES[name])
    pool.start()
    report: dict[str, Any] = {}
    try:
        sample(pool, HELLO[name], 2)  # page cache, JIT of the agent's paths
        times, last = sample(pool, HELLO[name], runs)
        report[name] = summary_ms(times)
        if last.compile is not None and last.build is not None:
            cached, _ = sample(pool, HELLO[name], runs, build=last.build)
            report[f"{name} cached"] = summary_ms(cached)
        if name == "python":
            sample(pool, NUMPY_PANDAS, 2)
            numpy_times, _ = sample(pool, NUMPY_PANDAS, runs)
            report["numpy+pandas"] = summary_ms(numpy_times)
            report["numpy+pandas cold_ms"] = round(cold_once(client, pool, NUMPY_PANDAS) * 1000)
        report[f"{name} cold_ms"] = round(cold_once(client, pool, HELLO[name]) * 1000)
    finally:
        pool.shutdown()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--languages", default=",".join(LANGUAGES))
    args = parser.parse_args()
    client = engine.connect(4)
    results: dict[str, Any] = {
        "machine": machine(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip(),
    }
    for name in args.languages.split(","):
        for key, value in measure(client, name, args.runs).items():
            results[key] = value
            if isinstance(value, dict):
                target = TARGET_MS.get(key.split()[0] if "cached" not in key else "cached")
                print(f"{key:>16}: p50 {value['p50_ms']:8.1f} ms  p95 {value['p95_ms']:8.1f} ms  "
                      f"(target <= {target} ms)", flush=True)  # fmt: skip
            else:
                print(f"{key:>16}: {value} ms (one cold container)", flush=True)
    results["machine"]["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    print(f"load average at start {results['machine']['load_average_1m']}, "
          f"at end {results['machine']['load_average_1m_end']}")  # fmt: skip
    print(write_result("runtimes-langs", results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
