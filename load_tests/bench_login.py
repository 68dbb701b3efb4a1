"""Concurrent failed logins against the real server: memory added and /health latency.

    uv run python -m load_tests.bench_login [--logins 30] [--hash-concurrency 0]

Starts `python -m app.serve` on a free loopback port with a fresh SQLite database (no sandbox
pool, no rate limits), registers one user, then fires `--logins` wrong-password logins at once
while /health is asked every 10 ms and the server's RSS is sampled. Targets (issue 9 item 10):
under 300 MB added and /health under 50 ms. `--hash-concurrency 30` shows the unbounded case.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

from app.core.migrations import upgrade_to_head
from load_tests.benchlib import machine, summary_ms, write_result

REPO_ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct-horse-battery-staple"
TARGET_ADDED_MB = 300
TARGET_HEALTH_MS = 50


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(data_dir: Path, hash_concurrency: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATA_DIR": str(data_dir),
        "SANDBOX_ENABLED": "false",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "PASSWORD_HASH_CONCURRENCY": str(hash_concurrency),
        "PASSWORD_HASH_QUEUE_MAX": "64",
        "PASSWORD_HASH_WAIT_S": "30",
        "PYTHONPATH": str(REPO_ROOT),  # the server runs in DATA_DIR, away from any .env
    }
    upgrade_to_head(f"sqlite:///{data_dir / 'warmbox.db'}")
    command = [sys.executable, "-m", "app.serve", "--port", str(port)]
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen(command, cwd=data_dir, env=env, stdout=log, stderr=log)
    base_url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return process, base_url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError((data_dir / "server.log").read_text()[-2000:])


def _watch_health(base_url: str, stop: threading.Event, samples: list[float]) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        while not stop.is_set():
            started = time.perf_counter()
            http.get("/health")
            samples.append(time.perf_counter() - started)
            time.sleep(0.01)


def measure(base_url: str, pid: int, logins: int) -> dict[str, Any]:
    server = psutil.Process(pid)
    with httpx.Client(base_url=base_url, timeout=120) as http:
        body = {"username": "alice", "password": PASSWORD}
        http.post("/api/v1/auth/register", json=body).raise_for_status()
        time.sleep(1)
        baseline = peak = server.memory_info().rss
        health: list[float] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_watch_health, args=(base_url, stop, health))
        watcher.start()
        wrong = {"username": "alice", "password": "wrong-guess"}
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=logins) as pool:
            futures = [
                pool.submit(http.post, "/api/v1/auth/login", json=wrong) for _ in range(logins)
            ]
            while not all(future.done() for future in futures):
                peak = max(peak, server.memory_info().rss)
                time.sleep(0.01)
        burst_s = time.perf_counter() - started
        stop.set()
        watcher.join()
    statuses = [future.result().status_code for future in futures]
    return {
        "logins": logins,
        "statuses": {str(code): statuses.count(code) for code in sorted(set(statuses))},
        "burst_s": round(burst_s, 2),
        "rss_baseline_mb": round(baseline / 2**20, 1),
        "rss_added_mb": round((peak - baseline) / 2**20, 1),
        "health": summary_ms(health),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logins", type=int, default=30)
    parser.add_argument("--hash-concurrency", type=int, default=0, help="0: one per core")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="warmbox-bench-login-") as work:
        process, base_url = _start(Path(work), arguments.hash_concurrency)
        try:
            result = measure(base_url, process.pid, arguments.logins)
        finally:
            process.terminate()
            process.wait(timeout=15)
    result["hash_concurrency"] = arguments.hash_concurrency or "cores"
    result["machine"] = machine()
    result["targets_met"] = (
        result["rss_added_mb"] < TARGET_ADDED_MB and result["health"]["max_ms"] < TARGET_HEALTH_MS
    )
    print(json.dumps(result, indent=2))
    write_result(f"login-c{arguments.hash_concurrency}", result)


if __name__ == "__main__":
    main()
