"""A live server (uvicorn on loopback, real pool, real SQLite) and real clients: httpx reading
Server-Sent Events as they come, and the `websockets` package for /code/ws."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from app.auth.models import Role
from tests.api.live import LiveServer, serve
from tests.auth.helpers import access_token_for, create_user
from tests.jobs.helpers import app_settings


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = app_settings(
        tmp_path_factory.mktemp("live"),
        live_first_message_timeout_s=2.0,
        max_stdin_bytes=4096,
        max_request_body_bytes=64 * 1024,
        run_output_limit_bytes=8192,
        sandbox_python_preload="",
    )
    with serve(settings) as server:
        yield server


def token_for(server: LiveServer, role: Role = Role.USER) -> str:
    user = create_user(cast(Any, server), role)
    return access_token_for(cast(Any, server), user)


def ws_url(server: LiveServer) -> str:
    return server.base_url.replace("http://", "ws://") + "/api/v1/code/ws"


def open_ws(server: LiveServer, **kwargs: Any) -> ClientConnection:
    return connect(ws_url(server), open_timeout=10, **kwargs)


def receive(ws: ClientConnection, timeout: float = 15.0) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def read_sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Events as they arrive: {"id", "event", "data"} (data parsed as JSON)."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "event" in event:
                yield event
            event = {}
        elif line.startswith("id: "):
            event["id"] = int(line[4:])
        elif line.startswith("event: "):
            event["event"] = line[7:]
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])
