"""The issue-11 speed table: every language over HTTP, each next to a cold container of its image.

    uv run python -m load_tests.bench_languages [--runs 30] [--cold-runs 3] [--pause-ms 1000]
        [--only python,javascript]

Starts the real service (uvicorn, SQLite in a temp dir, POOL_MAX_TOTAL=6 shared by all
languages) on a loopback port, logs in once and sends each measure's program on one keep-alive
connection (after warm-up runs, so the language has a warm container), twice: back to back (the
next request as soon as the answer is in, so a run may wait for the runner its container is
still starting: node, a JVM, a forked Python) and paced (each request `--pause-ms` after the
last answer, or 1.5 times the back-to-back p50 when that is longer, as a user at a keyboard
sends them: the container had time to get warm again; a pause of 0 skips it). Before the timed
runs of each, ten untimed ones, then a wait until the machine's cores are under 20 % busy over a
second (the service starts a container per language at start-up, the JVM warms its compiler for
seconds, and a pool grows under back-to-back requests: none of that is the measure). The load
average is printed with each figure. Compiled measures change a comment in the source on every
run, so each one really compiles; the cache measure repeats one source. The cold figure of each
measure is the same program run through a pool of the same image that has nothing warm:
container start, agent hello, run (and compile), measured in the same process run. A language
the server does not list as available is reported as missing, never faked. Writes
load_tests/results/bench_languages-*.json.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.core.config import Settings
from app.sandbox import engine
from app.sandbox.languages import LANGUAGES
from app.sandbox.pool import ContainerPool
from app.sandbox.types import RunRequest
from load_tests.bench_api import ADMIN, free_port, service_env, start_service
from load_tests.benchlib import (
    machine,
    steal_jiffies,
    steal_percent,
    summary_ms,
    wait_quiet,
    write_result,
)

PANDAS = """import numpy as np
import pandas as pd
frame = pd.DataFrame({"a": np.arange(1000), "b": np.random.default_rng(1).random(1000)})
print(frame.describe())
"""
HELLO: dict[str, str] = {
    "python": "print('hello')",
    "javascript": "console.log('hello')",
    "bash": "echo hello",
    "typescript": "const greeting: string = 'hello';\nconsole.log(greeting);",
    "c": '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }',
    "cpp": '#include <iostream>\nint main() { std::cout << "hello" << std::endl; }',
    "go": 'package main\nimport "fmt"\nfunc main() { fmt.Println("hello") }',
    "rust": 'fn main() { println!("hello"); }',
    "java": (
        'public class Main { public static void main(String[] a) { System.out.println("hello"); } }'
    ),
}
COMMENT = {"python": "#", "bash": "#"}  # every other language here takes //
# Runs before each measure, not timed: the language gets as many containers as back-to-back
# requests make the pool start; then the machine must be quiet before the timed runs begin.
WARM_UPS = 10


@dataclass(frozen=True)
class Measure:
    label: str
    language: str
    source: Callable[[int], str]  # the program of run n
    expect: str
    target_ms: float
    min_speedup: float | None = None


def _hello(language: str, unique: bool) -> Callable[[int], str]:
    mark = COMMENT.get(language, "//")
    if not unique:
        return lambda _n: HELLO[language]
    return lambda n: f"{HELLO[language]}\n{mark} run {n}\n"


def measures() -> list[Measure]:
    table = [
        Measure(f"{name} hello, e2e p50", name, _hello(name, False), "hello", 15.0)
        for name in ("python", "javascript", "bash")
    ]
    table.append(
        Measure(
            "numpy + pandas describe(), e2e p50", "python", lambda _n: PANDAS, "count", 20.0, 30
        )
    )
    table.append(
        Measure("typescript hello, e2e p50", "typescript", _hello("typescript", True), "hello", 60)
    )
    table.append(Measure("c hello, compile + run, e2e p50", "c", _hello("c", True), "hello", 150))
    for name in ("cpp", "go", "rust"):
        table.append(
            Measure(f"{name} hello, compile + run, e2e p50", name, _hello(name, True), "hello", 800)
        )
    table.append(
        Measure("java hello, compile + run, e2e p50", "java", _hello("java", True), "hello", 400)
    )
    table.append(
        Measure("c repeat of one source (cache), e2e p50", "c", _hello("c", False), "hello", 20)
    )
    return table


def _execute(client: httpx.Client, language: str, code: str, expect: str) -> dict[str, Any]:
    response = client.post(
        "/api/v1/code/execute", json={"code": code, "language": language, "timeout": 30}
    )
    body = response.json()
    if response.status_code != 200 or expect not in body.get("output", ""):
        detail = body.get("error") or (body.get("compile") or {}).get("output") or body
        last_line = (str(detail).strip().splitlines() or [""])[-1]
        raise RuntimeError(f"{language}: HTTP {response.status_code}, {last_line}")
    return body


def measure_warm(
    client: httpx.Client, measure: Measure, runs: int, pause_s: float = 0.0
) -> dict[str, Any]:
    for n in range(WARM_UPS):  # the language gets its containers, the page cache its files
        _execute(client, measure.language, measure.source(-1 - n), measure.expect)
    waited_s = wait_quiet()  # containers the warm-up started (or the budget moved) are ready
    steal_before = steal_jiffies()
    latencies = []
    compile_times = []
    first = 1000 if pause_s else 0  # paced runs compile sources of their own, not cached ones
    for n in range(first, first + runs):
        time.sleep(pause_s)
        started = time.perf_counter()
        body = _execute(client, measure.language, measure.source(n), measure.expect)
        latencies.append(time.perf_counter() - started)
        if body.get("compile"):
            compile_times.append(float(body["compile"]["time"]))
    result = summary_ms(latencies)
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    result["waited_for_quiet_s"] = waited_s
    result["steal_percent"] = steal_percent(steal_before, steal_jiffies())
    if compile_times:
        result["compile_p50_ms"] = summary_ms(compile_times)["p50_ms"]
    return result


def measure_cold(measure: Measure, runs: int) -> dict[str, Any]:
    """The program through a pool of the same image with nothing warm, `runs` times."""
    settings = Settings(
        _env_file=None,
        pool_initial_size=0,
        pool_min_size=0,
        pool_health_check_interval_s=3600,
        pool_idle_reclaim_interval_s=3600,
        pool_start_timeout_s=120,
        pool_acquire_timeout_s=120,
    )
    client = engine.connect(2)
    samples = []
    try:
        for n in range(runs):
            pool = ContainerPool(settings, client, LANGUAGES[measure.language])
            pool.start()
            try:
                request = RunRequest(code=measure.source(10_000 + n), language=measure.language)
                started = time.perf_counter()
                result = pool.run(request)
                samples.append(time.perf_counter() - started)
                if measure.expect not in result.stdout:
                    raise RuntimeError(f"cold {measure.language} printed {result}")
            finally:
                pool.shutdown()
    finally:
        client.close()
    return summary_ms(samples)


def _login(client: httpx.Client, password: str) -> None:
    login = client.post("/api/v1/auth/login", json={"username": ADMIN, "password": password})
    login.raise_for_status()
    client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"


def run_table(
    base: str, password: str, runs: int, cold_runs: int, pause_s: float, only: set[str]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with httpx.Client(base_url=base, timeout=120) as client:
        _login(client, password)
        listed = client.get("/api/v1/languages").json()["languages"]
        available = {entry["name"] for entry in listed if entry["available"]}
        for measure in measures():
            if only and measure.language not in only:
                continue
            row: dict[str, Any] = {"measure": measure.label, "target_ms": measure.target_ms}
            if measure.language not in available:
                rows.append(row | {"missing": f"{measure.language} is not installed"})
                continue
            try:
                warm = measure_warm(client, measure, runs)
                # At least 1.5 back-to-back runs' time: where a run waits for its runner's start
                # (a JVM warming javac takes seconds under load), that is about what it waits.
                pause = max(pause_s, 1.5 * warm["p50_ms"] / 1000)
                paced = measure_warm(client, measure, runs, pause) if pause_s else None
                cold = measure_cold(measure, cold_runs)
            except RuntimeError as exc:  # e.g. numpy absent from the image: say so
                rows.append(row | {"missing": str(exc)[:400]})
                continue
            best = min(warm["p50_ms"], paced["p50_ms"]) if paced else warm["p50_ms"]
            speedup = cold["p50_ms"] / best if best else 0.0
            passed = best <= measure.target_ms
            if measure.min_speedup is not None:
                passed = passed and speedup >= measure.min_speedup
            rows.append(
                row
                | {"warm": warm, "paced": paced, "cold": cold}
                | {"speedup": round(speedup, 1), "passed": passed}
            )
    return rows


def print_table(report: dict[str, Any], path: Path) -> None:
    m = report["machine"]
    print(f"bench_languages on {m['cores']} cores, load {m['load_average_1m']}, {m['date']}")
    print(
        f"  {'measure':44} {'p50':>9} {'(load)':>6} {'paced':>9} {'(load)':>6} {'target':>8}"
        f" {'cold p50':>10} {'x':>6}"
    )
    for row in report["rows"]:
        if "missing" in row:
            print(
                f"  {row['measure']:44} {'MISSING':>9} {row['target_ms']:>6g}ms  {row['missing']}"
            )
            continue
        warm, paced, cold = row["warm"], row["paced"] or {}, row["cold"]
        verdict = "PASS" if row["passed"] else "FAIL"
        extra = f"  compile p50 {warm['compile_p50_ms']} ms" if "compile_p50_ms" in warm else ""
        if "compile_p50_ms" in paced:
            extra += f" (paced {paced['compile_p50_ms']} ms)"
        paced_text = f"{paced['p50_ms']:7.1f}ms ({paced['load_average_1m']:>4})" if paced else ""
        steal = f"steal {warm.get('steal_percent', 0)}/{paced.get('steal_percent', 0)} %"
        print(
            f"  {row['measure']:44} {warm['p50_ms']:7.1f}ms ({warm['load_average_1m']:>4})"
            f" {paced_text:>16} {row['target_ms']:>6g}ms"
            f" {cold['p50_ms']:8.1f}ms {row['speedup']:>5}x  {verdict}  {steal}{extra}"
        )
    print(f"  written to {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument(
        "--pause-ms", type=float, default=1000, help="pause before each paced run (0: none)"
    )
    parser.add_argument("--only", default="", help="comma-separated languages (default: all)")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    password = secrets.token_urlsafe(16)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="warmbox-bench-") as data_dir:
        env = service_env(Path(data_dir), password)
        env.update(
            {
                "POOL_MAX_TOTAL": "6",
                "POOL_INITIAL_SIZE": "1",
                "POOL_MIN_SIZE": "1",
                "POOL_MAX_SIZE": "4",
                "MAX_CODE_BYTES": "65536",
            }
        )
        server = start_service(env, port)
        try:
            rows = run_table(
                f"http://127.0.0.1:{port}",
                password,
                args.runs,
                args.cold_runs,
                args.pause_ms / 1000,
                only,
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    report = {"machine": machine(), "rows": rows}
    path = write_result("bench_languages", report)
    print_table(report, path)
    measured = [row for row in rows if "missing" not in row]
    return 0 if all(row["passed"] for row in measured) else 1


if __name__ == "__main__":
    raise SystemExit(main())
