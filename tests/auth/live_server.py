"""A real uvicorn server in a child process, for what only a real server shows: when the response
leaves relative to the commit, which peer address uvicorn believes, memory under load.

    with live_server(tmp_path, RATE_LIMIT_ENABLED="true") as base_url:
        httpx.get(f"{base_url}/health")
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.core.config import Settings
from app.core.migrations import upgrade_to_head

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
# uvicorn started by hand, as the run script did before app.serve existed ({port} is filled in).
UVICORN_COMMAND = [
    sys.executable, "-m", "uvicorn", "app.main:app_factory", "--factory",
    "--host", "127.0.0.1", "--port", "{port}",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a test server: its own DATA_DIR and database, no pool, no .env."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RATE_LIMIT", "TRUSTED_PROXIES", "FORWARDED_ALLOW_IPS"))
    }
    env.update(
        ENVIRONMENT="test",
        DATA_DIR=str(data_dir),
        SANDBOX_ENABLED="false",
        RATE_LIMIT_ENABLED="false",
        LOG_FORMAT="json",
        LOG_LEVEL="WARNING",
    )
    env.update(overrides)
    return env


@contextmanager
def live_server(
    data_dir: Path, *, command: list[str] | None = None, **settings: str
) -> Iterator[str]:
    """Migrate, start `python -m app.serve` (or `command`) on a free loopback port; its URL."""
    with live_server_process(data_dir, command=command, **settings) as (base_url, _process):
        yield base_url


@contextmanager
def live_server_process(
    data_dir: Path, *, command: list[str] | None = None, **settings: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """live_server(), also yielding the server process (to measure it)."""
    env = server_env(data_dir, **settings)
    port = free_port()
    env.update(HOST="127.0.0.1", PORT=str(port))
    database_url = (
        env.get("DATABASE_URL") or Settings(_env_file=None, data_dir=data_dir).database_url
    )
    upgrade_to_head(database_url)
    argv = command or [sys.executable, "-m", "app.serve"]
    log_path = data_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [part.replace("{port}", str(port)) for part in argv],
            cwd=data_dir,  # no developer .env is read
            env={**env, "PYTHONPATH": str(REPO_ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(base_url, process, log_path)
            yield base_url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"the server did not answer in {START_TIMEOUT_S} s: {log_path.read_text()[-3000:]}"
    )
