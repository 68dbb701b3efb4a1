"""Two real warmbox nodes (child processes of `python -m app.serve`) on one PostgreSQL database and
one Redis of their own, for the tests of what nodes share through Redis (tests/cluster/
test_shared_*.py).

The Redis is a `redis-server` this module starts on a free port (no persistence), so a test can
stop it and start it again on the same port, as an operator's restart or a failover does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.auth.live_server import REPO_ROOT, free_port, server_env
from tests.databases import PostgresServer, in_ci

SECRET_KEY = "cluster-test-secret-key-0123456789abcdef"
PASSWORD = "correct horse battery"
START_TIMEOUT_S = 180.0


class RedisServer:
    """A throwaway redis-server on 127.0.0.1 that can be stopped and started on the same port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if in_ci():
                pytest.fail("redis-server is not installed")
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@dataclass
class Node:
    name: str
    url: str
    client: httpx.Client = field(repr=False)

    def request(self, method: str, path: str, token: str | None = None, **kwargs: Any):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.request(method, path, headers=headers, **kwargs)


@dataclass
class Cluster:
    a: Node
    b: Node
    redis: RedisServer

    def user(self, via: Node | None = None) -> str:
        """A new user's access token (registered and signed in through node `via`)."""
        node = via or self.a
        username = f"u{uuid.uuid4().hex[:12]}"
        body = {"username": username, "password": PASSWORD}
        assert node.request("POST", "/api/v1/auth/register", json=body).status_code == 201
        answer = node.request("POST", "/api/v1/auth/login", json=body)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])


def node_settings(database_url: str, redis_url: str, **overrides: str) -> dict[str, str]:
    settings = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "APP_NAME": f"warmbox-test-{uuid.uuid4().hex[:8]}",  # the key namespace in Redis
        "SECRET_KEY": SECRET_KEY,  # a token from one node is valid on the other
        "SANDBOX_ENABLED": "true",
        "SANDBOX_IMAGE_TAG": os.environ.get("SANDBOX_IMAGE_TAG", "latest"),
        "POOL_INITIAL_SIZE": "1",
        "POOL_MIN_SIZE": "1",
        "POOL_MAX_TOTAL": "2",
        "POOL_MAX_SIZE": "2",
        "SANDBOX_PYTHON_PRELOAD": "",
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_LOGIN": "1000/minute",
        "RATE_LIMIT_EXECUTE": "1000/minute",
        "SHUTDOWN_GRACE_S": "2",
        "LOG_LEVEL": "WARNING",
    }
    settings.update(overrides)
    return settings


@contextmanager
def two_nodes(
    tmp_path: Path, postgres_server: PostgresServer, template_url: str, **overrides: str
) -> Iterator[Cluster]:
    """Nodes a and b on one fresh PostgreSQL database and one fresh Redis; stopped afterwards.
    Both start at once: on a loaded machine a node's start (its warm containers) takes a while."""
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    database_url = postgres_server.create("warmbox_cluster", template_url=template_url)
    settings = node_settings(database_url, redis_server.url, **overrides)
    try:
        with ExitStack() as stack:
            starts = [
                _start_node(tmp_path / name, stack, NODE_ID=name, **settings) for name in "ab"
            ]
            nodes = []
            for name, (url, process, log_path) in zip("ab", starts, strict=True):
                wait_until_up(url, process, log_path)
                nodes.append(
                    Node(name, url, stack.enter_context(httpx.Client(base_url=url, timeout=30)))
                )
            yield Cluster(nodes[0], nodes[1], redis_server)
    finally:
        redis_server.stop()
        postgres_server.drop(database_url)


def _start_node(
    data_dir: Path, stack: ExitStack, **settings: str
) -> tuple[str, subprocess.Popen[bytes], Path]:
    """`python -m app.serve` on a free port, stopped when `stack` closes; not waited for."""
    data_dir.mkdir()
    port = free_port()
    env = server_env(data_dir, HOST="127.0.0.1", PORT=str(port), **settings)
    log_path = data_dir / "server.log"
    log = stack.enter_context(log_path.open("wb"))
    process = subprocess.Popen(
        [sys.executable, "-m", "app.serve"],
        cwd=data_dir,  # no developer .env is read
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack.callback(_stop, process)
    return f"http://127.0.0.1:{port}", process, log_path


def wait_until_up(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until /health answers; importing the app alone takes tens of seconds on a loaded machine."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"node exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"node did not answer in {START_TIMEOUT_S} s: {log_path.read_text()[-3000:]}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def sse_events(node: Node, path: str, token: str, *, timeout_s: float = 30) -> list[dict]:
    """Read an SSE stream to its end: each event as {"id", "event", "data", "at"} (monotonic)."""
    events: list[dict] = []
    headers = {"Authorization": f"Bearer {token}"}
    with node.client.stream("GET", path, headers=headers, timeout=timeout_s) as answer:
        assert answer.status_code == 200, answer.read()
        current: dict[str, Any] = {}
        for line in answer.iter_lines():
            if not line:
                if "event" in current:
                    current["at"] = time.monotonic()
                    events.append(current)
                current = {}
            elif line.startswith(("id:", "event:", "data:")):
                name, _, value = line.partition(":")
                value = value.strip()
                current[name] = json.loads(value) if name == "data" else value
    return events
