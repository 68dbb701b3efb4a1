"""`python -m load_tests.bench_ab`: what one setting buys, measured in the same minutes.

Starts two real services (uvicorn, SQLite each, POOL_MAX_TOTAL=6) that differ only in the
settings given as `--a` and `--b` (NAME=VALUE, comma-separated), warms both, then sends the same
program to each in turn, the order alternating: paced (`--pause-ms` before each request), then
back to back (the request after three sent without a pause). Prints p50 and mean of each side and
the ratio a/b. Two services share the cores, so each figure is above what one service alone
gives (`bench_languages`); what counts is the comparison, made on the same machine at the same
time. Example: `--language javascript --a SANDBOX_EXIT_NOTICES=true --b SANDBOX_EXIT_NOTICES=false`.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from load_tests.bench_api import ADMIN, free_port, service_env, start_service
from load_tests.bench_languages import HELLO, PANDAS
from load_tests.benchlib import machine, summary_ms, write_result

WARM_UPS = 10
BURST = 3  # back to back: this many requests without a pause before the one measured


def _settings(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split(",") if item]
    if any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE[,NAME=VALUE...], got {text!r}")
    return dict(pairs)


def _service(settings: dict[str, str]) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    password = secrets.token_urlsafe(16)
    env = service_env(Path(tempfile.mkdtemp(prefix="warmbox-ab-")), password)
    env.update({"POOL_MAX_TOTAL": "6", "POOL_INITIAL_SIZE": "1", "POOL_MIN_SIZE": "1"})
    env.update(settings)
    port = free_port()
    server = start_service(env, port)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    login = client.post("/api/v1/auth/login", json={"username": ADMIN, "password": password})
    login.raise_for_status()
    client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    return server, client


def _run(client: httpx.Client, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = client.post("/api/v1/code/execute", json=body)
    elapsed = time.perf_counter() - started
    if response.status_code != 200 or not response.json().get("success"):
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
    return elapsed


def compare(
    clients: list[httpx.Client], body: dict[str, Any], runs: int, pause_s: float
) -> dict[str, list[dict[str, float]]]:
    for client in clients:
        for _ in range(WARM_UPS):
            _run(client, body)
    results: dict[str, list[dict[str, float]]] = {}
    for mode in ("paced", "back_to_back"):
        samples: list[list[float]] = [[], []]
        for n in range(runs):
            for side in (0, 1) if n % 2 else (1, 0):
                if mode == "paced":
                    time.sleep(pause_s)
                else:
                    for _ in range(BURST):
                        _run(clients[side], body)
                samples[side].append(_run(clients[side], body))
        results[mode] = [
            summary_ms(side) | {"mean_ms": round(statistics.fmean(side) * 1000, 2)}
            for side in samples
        ]
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--language", default="python")
    parser.add_argument("--code", help="the program (default: the language's hello; 'pandas')")
    parser.add_argument("--a", type=_settings, required=True, help="NAME=VALUE[,...] of side a")
    parser.add_argument("--b", type=_settings, required=True, help="NAME=VALUE[,...] of side b")
    parser.add_argument("--runs", type=int, default=60, help="requests per side and mode")
    parser.add_argument("--pause-ms", type=float, default=300)
    arguments = parser.parse_args()
    code = arguments.code or HELLO[arguments.language]
    if code == "pandas":
        code = PANDAS
    body = {"code": code, "language": arguments.language, "timeout": 30}
    services = []
    try:
        for settings in (arguments.a, arguments.b):
            services.append(_service(settings))
        results = compare([c for _, c in services], body, arguments.runs, arguments.pause_ms / 1000)
    finally:
        for server, client in services:
            client.close()
            server.terminate()
            server.wait()
    report = machine() | {"language": arguments.language, "a": arguments.a, "b": arguments.b}
    load, date = report["load_average_1m"], report["date"]
    print(f"bench_ab on {report['cores']} cores, load {load}, {date}")
    for mode, (a, b) in results.items():
        print(
            f"  {mode:13} a p50 {a['p50_ms']:7.2f} mean {a['mean_ms']:7.2f} ms | "
            f"b p50 {b['p50_ms']:7.2f} mean {b['mean_ms']:7.2f} ms | a/b p50 "
            f"{a['p50_ms'] / b['p50_ms']:.2f}"
        )
    path = write_result(f"bench_ab-{arguments.language}", report | {"results": results})
    print(f"  written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
