"""The webhook delivery worker: time from enqueue to arrival, and deliveries per second.

    uv run python -m load_tests.bench_webhooks [--deliveries 500] [--workers 4]

Runs the app's lifespan (no sandbox pool) on a fresh SQLite database with a receiver on loopback
that answers 200 at once, then (1) enqueues 50 deliveries one at a time, each after the previous
one arrived (the latency a receiver sees: the worker is woken by the enqueuing commit), and (2)
enqueues `--deliveries` in one commit and times until the last arrives. Every attempt is a fresh
connection, signed, and recorded in the database (SQLite with synchronous FULL).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.migrations import upgrade_to_head
from app.main import create_app
from app.webhooks.service import enqueue_delivery
from load_tests.benchlib import machine, summary_ms, write_result


class Arrivals:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.lock = threading.Lock()

    def wait_for(self, count: int, timeout_s: float = 300.0) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.times) >= count:
                    return self.times[count - 1]
            time.sleep(0.001)
        raise TimeoutError(f"only {len(self.times)} of {count} deliveries arrived")


def _receiver(arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with arrivals.lock:
                arrivals.times.append(time.monotonic())
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _enqueue(client: TestClient, url: str, count: int) -> None:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        for number in range(count):
            enqueue_delivery(
                session, resource="job", resource_id=str(number), url=url, payload={"n": number}
            )
        session.commit()


def run(deliveries: int, workers: int) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        data_dir=data_dir,
        sandbox_enabled=False,
        rate_limit_enabled=False,
        log_level="WARNING",
        webhook_allowed_hosts=["127.0.0.1/32"],
        webhook_workers=workers,
    )
    upgrade_to_head(settings.database_url)
    arrivals = Arrivals()
    server = _receiver(arrivals)
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    latencies = []
    with TestClient(create_app(settings)) as client:
        for number in range(50):
            started = time.monotonic()
            _enqueue(client, url, 1)
            latencies.append(arrivals.wait_for(number + 1) - started)
        started = time.monotonic()
        _enqueue(client, url, deliveries)
        elapsed = arrivals.wait_for(50 + deliveries) - started
    server.shutdown()
    return {
        "machine": machine(),
        "webhook_workers": workers,
        "enqueue_to_arrival": summary_ms(latencies),
        "burst": {"deliveries": deliveries, "seconds": round(elapsed, 2)},
        "deliveries_per_s": round(deliveries / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=500)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    result = run(args.deliveries, args.workers)
    path = write_result("bench_webhooks", result)
    latency = result["enqueue_to_arrival"]
    print(
        f"enqueue -> arrival p50 {latency['p50_ms']} ms, p95 {latency['p95_ms']} ms; "
        f"{result['burst']['deliveries']} deliveries in {result['burst']['seconds']} s = "
        f"{result['deliveries_per_s']}/s (load {result['machine']['load_average_1m']}); {path}"
    )


if __name__ == "__main__":
    main()
