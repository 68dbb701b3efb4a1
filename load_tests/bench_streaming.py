"""Benchmark: how long a line printed by a running program takes to reach an SSE or a WebSocket
client.

    uv run python -m load_tests.bench_streaming [--runs 3] [--lines 40]

Starts the real service (uvicorn, SQLite in a temp dir, a pool of 4) on a free loopback port,
signs in once, and runs a program that prints `time.time()` on each line every 50 ms. The client
takes its own `time.time()` when the line arrives: the container and the client share the host's
kernel clock, so the difference is print-to-receive (the program's stdout pipe, the agent's
OUTPUT frame, the pool thread, the event log, the event loop and the socket). SSE: the program
runs as a queued job followed with GET /jobs/{id}/events (httpx, read as it streams); WebSocket:
an interactive run on /code/ws (the `websockets` client). Target (issue 13): p50 <= 20 ms.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from load_tests.bench_api import ADMIN, free_port, service_env, start_service
from load_tests.benchlib import machine, summary_ms, write_result

TARGET_P50_MS = 20.0
LEAD_S = 0.5  # the program waits this long first, so the reader is connected before line one


def program(lines: int) -> str:
    return (
        f"import time\ntime.sleep({LEAD_S})\nfor _ in range({lines}):\n"
        "    print(f'{time.time():.6f}', flush=True)\n    time.sleep(0.05)\n"
    )


def _lags(text: str, arrived: float, pending: list[str]) -> list[float]:
    """Whole lines in `text` (a chunk may end mid-line), each as arrival minus its stamp."""
    pending.append(text)
    *complete, rest = "".join(pending).split("\n")
    pending[:] = [rest]
    return [arrived - float(line) for line in complete if line.strip()]


def measure_sse(client: httpx.Client, runs: int, lines: int) -> list[float]:
    lags: list[float] = []
    for _ in range(runs):
        job = client.post("/api/v1/jobs", json={"code": program(lines), "timeout": 30})
        job.raise_for_status()
        pending: list[str] = []
        with client.stream("GET", f"/api/v1/jobs/{job.json()['job_id']}/events") as response:
            response.raise_for_status()
            kind = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "stdout":
                    lags += _lags(json.loads(line[6:]), time.time(), pending)
                elif line.startswith("data: ") and kind == "result":
                    break
    return lags


def measure_ws(base: str, token: str, runs: int, lines: int) -> list[float]:
    lags: list[float] = []
    url = base.replace("http://", "ws://") + "/api/v1/code/ws"
    for _ in range(runs):
        pending: list[str] = []
        with connect(url) as ws:
            ws.send(json.dumps({"type": "run", "token": token, "code": program(lines)}))
            while True:
                message = json.loads(ws.recv(timeout=60))
                if message["type"] == "stdout":
                    lags += _lags(message["data"], time.time(), pending)
                elif message["type"] in ("result", "error"):
                    break
    return lags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lines", type=int, default=40)
    args = parser.parse_args()
    password = secrets.token_urlsafe(16)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="warmbox-bench-") as data_dir:
        env = service_env(Path(data_dir), password)
        env["SANDBOX_PYTHON_PRELOAD"] = ""  # no scientific imports respawned between runs
        server = start_service(env, port)
        try:
            with httpx.Client(base_url=base, timeout=60) as client:
                login = client.post(
                    "/api/v1/auth/login", json={"username": ADMIN, "password": password}
                )
                login.raise_for_status()
                token = login.json()["access_token"]
                client.headers["Authorization"] = f"Bearer {token}"
                measure_sse(client, 1, 5)  # warm-up
                sse = summary_ms(measure_sse(client, args.runs, args.lines))
            ws = summary_ms(measure_ws(base, token, args.runs, args.lines))
        finally:
            server.terminate()
            server.wait(timeout=30)
    report: dict[str, Any] = {
        "machine": machine(),
        "sse_print_to_receive": sse,
        "websocket_print_to_receive": ws,
        "target_p50_ms": TARGET_P50_MS,
        "passed": max(sse["p50_ms"], ws["p50_ms"]) <= TARGET_P50_MS,
    }
    path = write_result("bench_streaming", report)
    m = report["machine"]
    print(f"bench_streaming on {m['cores']} cores, load {m['load_average_1m']}, {m['date']}")
    for name, figures in (("SSE (job events)", sse), ("WebSocket (/code/ws)", ws)):
        print(
            f"  {name:22} print-to-receive p50 {figures['p50_ms']:6.2f} ms  "
            f"p95 {figures['p95_ms']:6.2f} ms  max {figures['max_ms']:6.2f} ms  "
            f"(n={figures['count']})"
        )
    verdict = "PASS" if report["passed"] else "FAIL"
    print(f"  {verdict}  p50 target <= {TARGET_P50_MS} ms; written to {path}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
