"""Sessions end to end over HTTP, side by side with a cold container of the same image.

    uv run python -m load_tests.bench_sessions [--creates 30] [--cells 300] [--plots 50]

Starts the real service (uvicorn, SQLite in a temp dir, a Python pool of 4 with the default
pre-imports) on a free loopback port, signs in as the admin, and measures on one keep-alive
connection:
- create: `POST /api/v1/sessions` then the first cell `print(1)`, e2e (each session is closed
  afterwards, outside the timing, and the next is created once the pool is full and warm again);
- cell: `print(1)` in a live session;
- plot: a cell that draws a 640x480 matplotlib figure and gets it back as PNG.
The cold figures run the same code with `docker run` of the same image and hardening.
Also reported: the create call alone, and for cells the time inside the kernel (the agent's
`execution_time`) and the kernel's CPU time, which show what a loaded machine adds.
Targets (issue 13): create + first cell p50 <= 25 ms, cell p50 <= 10 ms, plot p50 <= 150 ms.
Writes load_tests/results/bench_sessions-*.json.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from app.core.config import Settings
from app.sandbox import engine
from app.sandbox.languages import LANGUAGES
from app.sandbox.limits import SandboxLimits
from load_tests.bench_api import ADMIN, free_port, service_env, start_service
from load_tests.benchlib import cold_run_s, machine, summary_ms, write_result

TARGETS_MS = {"create_and_first_cell": 25.0, "cell": 10.0, "plot_cell": 150.0}
POOL_SIZE = 4
PLOT = (
    "import matplotlib.pyplot as plt\n"
    "fig = plt.figure(figsize=(6.4, 4.8), dpi=100)\n"
    "plt.plot(range(100), [i * i for i in range(100)])\n"
)


def _wait_until_warm(client: httpx.Client, timeout_s: float = 60.0) -> None:
    """Every container idle with its runner ready: a session is created from a warm one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        python = client.get("/api/v1/sandbox/pool/stats").json()["pools"]["python"]
        if python["available"] >= POOL_SIZE:
            return
        time.sleep(0.05)
    raise RuntimeError("the pool did not refill in time")


def _cell(client: httpx.Client, session_id: str, code: str) -> dict[str, Any]:
    response = client.post(f"/api/v1/sessions/{session_id}/execute", json={"code": code})
    body = response.json()
    if response.status_code != 200 or not body.get("success"):
        raise RuntimeError(f"unexpected cell answer {response.status_code}: {body}")
    return body


def measure_creates(client: httpx.Client, runs: int, parts: dict[str, list[float]]) -> list[float]:
    samples = []
    for _ in range(runs):
        _wait_until_warm(client)
        started = time.perf_counter()
        created = client.post("/api/v1/sessions", json={"language": "python"})
        parts["create_only"].append(time.perf_counter() - started)
        session_id = created.json()["session_id"]
        body = _cell(client, session_id, "print(1)")
        samples.append(time.perf_counter() - started)
        if created.status_code != 201 or body["output"] != "1\n":
            raise RuntimeError(f"unexpected answer {created.status_code}: {body}")
        client.delete(f"/api/v1/sessions/{session_id}").raise_for_status()
    return samples


def measure_cells(
    client: httpx.Client, runs: int, code: str, inside: list[float], cpu: list[float]
) -> list[float]:
    _wait_until_warm(client)
    session_id = client.post("/api/v1/sessions", json={}).json()["session_id"]
    try:
        for _ in range(10):
            _cell(client, session_id, code)
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            body = _cell(client, session_id, code)
            samples.append(time.perf_counter() - started)
            inside.append(body["execution_time"])
            cpu.append(body["usage"]["cpu_time_ms"] / 1000)
            if code == PLOT and (not body["artifacts"] or body["artifacts"][0]["width"] != 640):
                raise RuntimeError(f"no 640x480 figure came back: {body['artifacts']}")
        return samples
    finally:
        client.delete(f"/api/v1/sessions/{session_id}")


def measure_cold(runs: int, code: str) -> list[float]:
    settings = Settings(_env_file=None)
    docker_client = engine.connect(1)
    limits = SandboxLimits.from_settings(settings, LANGUAGES["python"])
    image = LANGUAGES["python"].image(settings)
    code += "\nprint('hello')"  # what cold_run_s checks for
    try:
        return [cold_run_s(docker_client, image, limits, code) for _ in range(runs)]
    finally:
        docker_client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--creates", type=int, default=30)
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--plots", type=int, default=50)
    parser.add_argument("--cold-runs", type=int, default=5)
    args = parser.parse_args()
    password = secrets.token_urlsafe(16)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="warmbox-bench-") as data_dir:
        env = service_env(Path(data_dir), password)
        env.update(SESSIONS_MAX_PER_USER="0", MAX_CONCURRENT_RUNS_PER_USER="0")
        server = start_service(env, port)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                login = client.post(
                    "/api/v1/auth/login", json={"username": ADMIN, "password": password}
                )
                login.raise_for_status()
                client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
                parts: dict[str, list[float]] = {
                    name: [] for name in ("create_only", "cell_in_kernel", "cell_cpu",
                                          "plot_in_kernel", "plot_cpu")
                }  # fmt: skip
                warm = {
                    "create_and_first_cell": summary_ms(
                        measure_creates(client, args.creates, parts)
                    ),
                    "cell": summary_ms(
                        measure_cells(client, args.cells, "print(1)", parts["cell_in_kernel"],
                                      parts["cell_cpu"])
                    ),
                    "plot_cell": summary_ms(
                        measure_cells(client, args.plots, PLOT, parts["plot_in_kernel"],
                                      parts["plot_cpu"])
                    ),
                }  # fmt: skip
                warm["parts"] = {name: summary_ms(values) for name, values in parts.items()}
        finally:
            server.terminate()
            server.wait(timeout=30)
    cold = {
        "create_and_first_cell": summary_ms(measure_cold(args.cold_runs, "print(1)")),
        "plot_cell": summary_ms(measure_cold(args.cold_runs, PLOT)),
    }
    return report(warm, cold)


def report(warm: dict[str, Any], cold: dict[str, dict[str, float]]) -> int:
    passed = {name: warm[name]["p50_ms"] <= target for name, target in TARGETS_MS.items()}
    data = {"machine": machine(), "warm": warm, "cold": cold, "targets_ms": TARGETS_MS}
    data["passed"] = passed
    path = write_result("bench_sessions", data)
    m = data["machine"]
    print(f"bench_sessions on {m['cores']} cores, load {m['load_average_1m']}, {m['date']}")
    for name, target in TARGETS_MS.items():
        figures = warm[name]
        line = (
            f"  {name:24s} p50 {figures['p50_ms']:8.2f} ms  p95 {figures['p95_ms']:8.2f} ms"
            f"  (n={figures['count']}, target <= {target:g} ms: "
            f"{'PASS' if passed[name] else 'FAIL'})"
        )
        if name in cold:
            line += f"  cold container p50 {cold[name]['p50_ms']:.0f} ms"
        print(line)
    for name, figures in warm["parts"].items():
        print(f"    {name:22s} p50 {figures['p50_ms']:8.2f} ms  p95 {figures['p95_ms']:8.2f} ms")
    print(f"  written to {path}")
    return 0 if all(passed.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
