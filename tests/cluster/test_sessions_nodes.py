"""Sessions across real node processes (issue 14): two uvicorn processes of the app (`python -m
app.serve`) on one PostgreSQL database (a fresh copy per module) and the test Redis, each with its
own pool on the machine's engine. A session made through one node is used through the other (the
REST request is forwarded to the owner over NODE_URL; the MCP tools call the owner's REST API),
SESSIONS_MAX_PER_USER counts every node's sessions, a killed owner's sessions answer 410 and stop
counting, the survivor's sweep ends their rows, and a restarted node leaves other nodes' sessions
alone."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.databases import PostgresServer
from tests.databases import redis_server_url as redis_url

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = "/api/v1/sessions"
DIRECTORY_TTL_S = 2.0
SECRET_KEY = secrets.token_urlsafe(32)  # every node signs and checks the same tokens


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Node:
    """One app process, as `python -m app.serve` runs it, on a port of its own."""

    def __init__(self, name: str, database_url: str, data_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / f"{name}.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url(),
            "NODE_ID": name,
            "NODE_URL": self.url,
            "SECRET_KEY": SECRET_KEY,
            "DATA_DIR": str(data_dir),
            "ENVIRONMENT": "development",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "console",
            "RATE_LIMIT_ENABLED": "false",
            "POOL_INITIAL_SIZE": "1",
            "POOL_MIN_SIZE": "1",
            "POOL_MAX_SIZE": "2",
            "POOL_MAX_TOTAL": "2",
            "SANDBOX_PYTHON_PRELOAD": "",
            "SESSIONS_MAX_PER_USER": "2",
            "MAX_CONCURRENT_RUNS_PER_USER": "4",
            "SESSION_DIRECTORY_TTL_S": str(DIRECTORY_TTL_S),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        command = [sys.executable, "-m", "app.serve", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=log,
                                            stderr=subprocess.STDOUT)  # fmt: skip
        return self

    def wait_ready(self, timeout_s: float = 150.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"node {self.name} not ready:\n{self.log.read_text()}")

    def kill(self) -> None:
        """kill -9: no shutdown, no clean-up, as a node dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {token}"})  # fmt: skip


@pytest.fixture(scope="module")
def database_url(postgres_server: PostgresServer, postgres_template: str) -> Iterator[str]:
    url = postgres_server.create("warmbox_cluster_sessions", template_url=postgres_template)
    yield url
    postgres_server.drop(url)


@pytest.fixture(scope="module")
def nodes(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    root = tmp_path_factory.mktemp("nodes")
    started = {name: Node(name, database_url, root / name).start() for name in ("a", "b")}
    try:
        for node in started.values():
            node.wait_ready()
        yield started
    finally:
        for node in started.values():
            node.stop()


def sign_up(node: Node) -> str:
    name = f"user{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    body = {"username": name, "password": password}
    assert httpx.post(f"{node.url}/api/v1/auth/register", json=body).status_code == 201
    login = httpx.post(f"{node.url}/api/v1/auth/login", json=body)
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])


def create(client: httpx.Client) -> str:
    response = client.post(SESSIONS, json={"language": "python"})
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


def cell(client: httpx.Client, session_id: str, code: str) -> httpx.Response:
    return client.post(f"{SESSIONS}/{session_id}/execute", json={"code": code})


def test_a_session_made_through_one_node_is_used_through_the_other(nodes) -> None:
    token = sign_up(nodes["a"])
    with nodes["a"].client(token) as a, nodes["b"].client(token) as b:
        session_id = create(a)
        assert cell(b, session_id, "x = 41").json()["success"] is True
        answer = cell(a, session_id, "print(x + 1)")
        assert answer.status_code == 200, answer.text
        assert answer.json()["output"] == "42\n"
        assert answer.json()["cell"] == 2  # both cells ran in the one kernel on node a
        upload = b.put(f"{SESSIONS}/{session_id}/files/data/in.csv", content=b"x\n1\n" * 1000)
        assert upload.status_code == 200, upload.text
        assert a.get(f"{SESSIONS}/{session_id}/files/data/in.csv").content == b"x\n1\n" * 1000
        listed = b.get(f"{SESSIONS}/{session_id}/files").json()["files"]
        assert listed == [{"path": "data/in.csv", "size_bytes": 4000}]
        read = b.get(f"{SESSIONS}/{session_id}")
        assert read.status_code == 200
        assert read.json()["cells"] == 2
        assert read.headers["x-request-id"]  # stamped once, by the node the caller reached
        assert b.delete(f"{SESSIONS}/{session_id}").status_code == 204
        gone = a.get(f"{SESSIONS}/{session_id}")
        assert gone.status_code == 410
        assert gone.json()["error"]["details"]["end_reason"] == "closed"


def test_another_users_session_is_not_found_through_either_node(nodes) -> None:
    owner, stranger = sign_up(nodes["a"]), sign_up(nodes["b"])
    with nodes["a"].client(owner) as a:
        session_id = create(a)
        try:
            for node in nodes.values():
                with node.client(stranger) as other:
                    response = cell(other, session_id, "print(1)")
                    assert response.status_code == 404, response.text
                    assert response.json()["error"]["code"] == "NOT_FOUND"
                    assert other.delete(f"{SESSIONS}/{session_id}").status_code == 404
            unsigned = httpx.get(f"{nodes['b'].url}{SESSIONS}/{session_id}")
            assert unsigned.status_code == 401
        finally:
            a.delete(f"{SESSIONS}/{session_id}")


def test_sessions_max_per_user_counts_the_sessions_on_every_node(nodes) -> None:
    token = sign_up(nodes["a"])
    with nodes["a"].client(token) as a, nodes["b"].client(token) as b:
        first, second = create(a), create(b)
        for client in (a, b):
            refused = client.post(SESSIONS, json={})
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["details"] == {"sessions_max_per_user": 2}
        assert a.delete(f"{SESSIONS}/{second}").status_code == 204  # b's, closed through a
        third = create(b)
        for session_id in (first, third):
            assert a.delete(f"{SESSIONS}/{session_id}").status_code == 204


def test_a_forwarded_request_is_never_forwarded_again(nodes) -> None:
    """A forged (or looping) mark only makes the node answer from what it holds itself; it
    neither ends the session nor reaches it."""
    token = sign_up(nodes["a"])
    with nodes["a"].client(token) as a, nodes["b"].client(token) as b:
        session_id = create(a)
        marked = b.post(f"{SESSIONS}/{session_id}/execute", json={"code": "print(1)"},
                        headers={"X-Warmbox-Forwarded-By": "a"})  # fmt: skip
        assert marked.status_code == 410
        assert marked.json()["error"]["details"]["end_reason"] == "owner_unreachable"
        assert cell(b, session_id, "print(2)").json()["output"] == "2\n"  # still alive
        assert a.delete(f"{SESSIONS}/{session_id}").status_code == 204


def test_the_mcp_tools_reach_a_session_held_by_another_node(nodes) -> None:
    token = sign_up(nodes["a"])
    with nodes["a"].client(token) as a:
        session_id = create(a)

    async def steps(client: Client) -> list[Any]:
        calls = [
            ("upload_file", {"session_id": session_id, "path": "n.txt", "content": "20"}),
            ("execute_in_session",
             {"session_id": session_id, "code": "n = int(open('n.txt').read())\nprint(n + 1)"}),
            ("read_file", {"session_id": session_id, "path": "n.txt"}),
            ("close_session", {"session_id": session_id}),
        ]  # fmt: skip
        results = []
        for name, arguments in calls:
            result = await client.call_tool(name, arguments)
            assert not result.is_error, result.content
            value = result.structured_content
            results.append(value.get("result", value) if isinstance(value, dict) else value)
        return results

    async def main() -> list[Any]:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        url = f"{nodes['b'].url}/mcp"
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            return await steps(client)

    uploaded, ran, read, closed = anyio.run(main)
    assert uploaded["size_bytes"] == 2
    assert ran["output"] == "21\n"
    assert read["content"] == "20"
    assert closed["closed"] is True
    with nodes["a"].client(token) as a:
        assert a.get(f"{SESSIONS}/{session_id}").status_code == 410


def test_a_killed_owners_sessions_are_gone_and_its_restart_ends_only_its_own(nodes) -> None:
    """Last in the module: it kills node b (and starts it again)."""
    user, other = sign_up(nodes["a"]), sign_up(nodes["a"])
    victim = nodes["b"]
    with nodes["a"].client(user) as a, victim.client(user) as b, victim.client(other) as b2:
        on_a, on_b = create(a), create(b)
        untouched = create(b2)  # nobody asks for it: a's sweep ends its row
        assert cell(a, on_b, "y = 7").json()["success"] is True
        victim.kill()
        now_gone = a.post(f"{SESSIONS}/{on_b}/execute", json={"code": "print(y)"})
        assert now_gone.status_code == 410, now_gone.text  # at once: its node refuses
        # Its entry still names b (owner_unreachable) unless this machine took longer than the
        # TTL to answer, when the entry has lapsed already (node_lost): 410 either way.
        reason = now_gone.json()["error"]["details"]["end_reason"]
        assert reason in ("owner_unreachable", "node_lost")
        time.sleep(DIRECTORY_TTL_S + 0.5)  # its directory entries lapse
        lapsed = a.get(f"{SESSIONS}/{on_b}").json()["error"]["details"]
        assert lapsed["end_reason"] == "node_lost"
        extra = create(a)  # the dead node's session no longer counts (limit 2)
        assert a.delete(f"{SESSIONS}/{extra}").status_code == 204
        with nodes["a"].client(other) as a2:
            deadline = time.monotonic() + DIRECTORY_TTL_S * 4
            while listed(a2)[untouched][0] == "active" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert listed(a2)[untouched] == ("ended", "node_lost")

        victim.start()  # the same NODE_ID: it may end only its own sessions, never a's
        victim.wait_ready()
        assert cell(b, on_a, "print(3)").json()["output"] == "3\n"  # forwarded to a
        rows = listed(b)
        assert rows[on_a] == ("active", None)
        assert rows[on_b] == ("ended", "node_lost")
        assert b.delete(f"{SESSIONS}/{on_a}").status_code == 204


def listed(client: httpx.Client) -> dict[str, tuple[str, str | None]]:
    """The caller's sessions as the database holds them: (status, end_reason) by id."""
    items = client.get(SESSIONS, params={"limit": 100}).json()["items"]
    return {item["session_id"]: (item["status"], item["end_reason"]) for item in items}
