"""End-to-end benchmark: an authenticated `POST /api/v1/code/execute` over HTTP on loopback.

    uv run python -m load_tests.bench_api [--runs 300] [--cold-runs 10]

Starts the real service (uvicorn, SQLite in a temp dir, a pool of 4) on a free loopback port,
logs in once, sends `print('hello')` back to back on one keep-alive connection, and prints the
latencies next to a cold container run with the same hardening measured in the same run.
Target (issue 5): p50 <= 25 ms.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from app.core.config import REPO_ROOT, Settings
from app.sandbox import engine
from app.sandbox.languages import LANGUAGES
from app.sandbox.limits import SandboxLimits
from load_tests.benchlib import HELLO, cold_run_s, machine, summary_ms, write_result

TARGET_P50_MS = 25.0
ADMIN = "bench-admin"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_env(data_dir: Path, password: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATA_DIR": str(data_dir),
            "DATABASE_URL": "",
            "ENVIRONMENT": "development",
            "LOG_LEVEL": "WARNING",
            "ADMIN_USERNAME": ADMIN,
            "ADMIN_PASSWORD": password,
            "RATE_LIMIT_ENABLED": "false",
            "POOL_INITIAL_SIZE": "4",
            "POOL_MIN_SIZE": "4",
            "POOL_MAX_SIZE": "4",
            "POOL_MAX_RUNS_PER_CONTAINER": "100000",
        }
    )
    return env


def start_service(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"], env=env, cwd=REPO_ROOT, check=True
    )
    command = [sys.executable, "-m", "uvicorn", "app.main:app_factory", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    server = subprocess.Popen(command, env=env, cwd=REPO_ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise RuntimeError("the service exited during start-up")
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError("the service did not become ready within 60 s")


def measure_api(base: str, password: str, runs: int) -> list[float]:
    with httpx.Client(base_url=base, timeout=30) as client:
        login = client.post("/api/v1/auth/login", json={"username": ADMIN, "password": password})
        login.raise_for_status()
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        for _ in range(20):
            client.post("/api/v1/code/execute", json={"code": HELLO}).raise_for_status()
        latencies = []
        for _ in range(runs):
            started = time.perf_counter()
            response = client.post("/api/v1/code/execute", json={"code": HELLO})
            latencies.append(time.perf_counter() - started)
            body = response.json()
            if response.status_code != 200 or body["output"] != "hello\n":
                raise RuntimeError(f"unexpected answer {response.status_code}: {body}")
        return latencies


def measure_cold(runs: int) -> list[float]:
    settings = Settings(_env_file=None)
    client = engine.connect(1)
    limits = SandboxLimits.from_settings(settings, LANGUAGES["python"])
    image = LANGUAGES["python"].image(settings)
    cold_run_s(client, image, limits, HELLO)
    try:
        return [cold_run_s(client, image, limits, HELLO) for _ in range(runs)]
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--cold-runs", type=int, default=10)
    args = parser.parse_args()
    password = secrets.token_urlsafe(16)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="warmbox-bench-") as data_dir:
        server = start_service(service_env(Path(data_dir), password), port)
        try:
            api = summary_ms(measure_api(f"http://127.0.0.1:{port}", password, args.runs))
            cold = summary_ms(measure_cold(args.cold_runs))
        finally:
            server.terminate()
            server.wait(timeout=30)
    report: dict[str, Any] = {
        "machine": machine(),
        "api_execute_hello": api,
        "cold_container": cold,
        "speedup_vs_cold": round(cold["p50_ms"] / api["p50_ms"], 1),
        "target_p50_ms": TARGET_P50_MS,
        "passed": api["p50_ms"] <= TARGET_P50_MS,
    }
    path = write_result("bench_api", report)
    m = report["machine"]
    print(f"bench_api on {m['cores']} cores, load {m['load_average_1m']}, {m['date']}")
    print(
        f"  POST /api/v1/code/execute  p50 {api['p50_ms']:7.2f} ms  p95 {api['p95_ms']:7.2f} ms"
        f"  p99 {api['p99_ms']:7.2f} ms  (n={api['count']}, authenticated, HTTP on loopback)"
    )
    print(
        f"  cold container run         p50 {cold['p50_ms']:7.2f} ms  p95 {cold['p95_ms']:7.2f} ms"
        f"  (n={cold['count']}, same hardening)"
    )
    print(f"  speed-up vs cold           {report['speedup_vs_cold']}x")
    print(
        f"  {'PASS' if report['passed'] else 'FAIL'}  p50 {api['p50_ms']} ms "
        f"(target <= {TARGET_P50_MS} ms)"
    )
    print(f"  written to {path}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
