"""Real warmbox node processes for the cluster tests: `python -m app.serve` on a free loopback
port with its own NODE_ID and data directory, the given database and lease settings, and a token
every node accepts (one SECRET_KEY)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from app.auth.models import Role, User
from app.auth.security import TokenType, create_token
from app.core.config import Settings
from app.sandbox.engine import LABEL_PID

ROOT = Path(__file__).resolve().parents[2]
SECRET = "cluster-test-secret-key-that-is-long-enough-0123456789"
START_TIMEOUT_S = 120.0  # three interpreters importing the app at once on 2 busy cores
LEASE_TTL_S = 6.0  # short for the tests; renewed every second


@dataclass
class Node:
    name: str
    url: str
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def node_environment(
    name: str, database_url: str, data_dir: Path, extra: dict[str, str] | None = None
) -> dict[str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    keep = {key: value for key, value in os.environ.items() if not key.startswith("WARMBOX_")}
    return (
        keep
        | {
            "DATABASE_URL": database_url,
            "SECRET_KEY": SECRET,
            "DATA_DIR": str(data_dir),
            "NODE_ID": name,
            "ENVIRONMENT": "development",
            "LOG_FORMAT": "console",
            "RATE_LIMIT_ENABLED": "false",
            "MCP_ENABLED": "false",
            "POOL_MIN_WARM": "bash=2",
            "POOL_MIN_SIZE": "0",
            "POOL_INITIAL_SIZE": "0",
            "POOL_MAX_TOTAL": "2",
            "POOL_MAX_SIZE": "2",
            "JOB_WORKERS": "2",
            "SUBMISSION_WORKERS": "1",
            "SUBMISSION_SYNC_RESERVE": "0",
            "MAX_CONCURRENT_RUNS_PER_USER": "0",
            "JOB_QUEUE_MAX": "1000",
            "JOB_QUEUE_MAX_PER_USER": "0",
            "SUBMISSION_QUEUE_MAX_PER_USER": "0",
            "LEASE_TTL_S": str(LEASE_TTL_S),
            "LEASE_RENEW_INTERVAL_S": "1",
            "WORK_POLL_INTERVAL_S": "0.25",
            "SHUTDOWN_GRACE_S": "1",
        }
        | (extra or {})
    )


def start_node(
    name: str, database_url: str, tmp_path: Path, extra: dict[str, str] | None = None
) -> Node:
    """Start (not wait for) a node; its output goes to tmp_path/NAME.log."""
    port = free_port()
    log = (tmp_path / f"{name}.log").open("ab")  # a restarted node appends
    process = subprocess.Popen(  # the interpreter itself, so SIGKILL hits the node, not a wrapper
        [sys.executable, "-m", "app.serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=node_environment(name, database_url, tmp_path / name, extra),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return Node(name, f"http://127.0.0.1:{port}", process)


def wait_ready(node: Node) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert node.process.poll() is None, f"{node.name} exited at start-up"
        try:
            if httpx.get(f"{node.url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{node.name} was not ready within {START_TIMEOUT_S} s")


def stop(node: Node) -> None:
    if node.process.poll() is None:
        node.process.send_signal(signal.SIGTERM)
        try:
            node.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
    # A node killed with SIGKILL leaves its sandboxes behind: remove exactly those.
    found = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={LABEL_PID}={node.process.pid}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if found:
        subprocess.run(["docker", "rm", "-f", *found], capture_output=True, check=False)


def token_for(database: str, tmp_path: Path) -> str:
    engine = create_engine(database)
    with Session(engine) as session:
        user = User(username="student", username_key="student", password_hash="x", role=Role.USER)
        session.add(user)
        session.commit()
        user_id = user.id
    engine.dispose()
    settings = Settings(_env_file=None, secret_key=SECRET, data_dir=tmp_path)  # type: ignore[call-arg]
    issued = create_token(
        settings=settings, subject=user_id, role=Role.USER, token_type=TokenType.ACCESS
    )
    return issued.token
