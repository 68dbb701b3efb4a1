"""Rate limits reach the WebSocket: its handshake counts against RATE_LIMIT_DEFAULT like any
request (before, WebSocket scopes bypassed the middleware), and each run against
RATE_LIMIT_EXECUTE like /code/execute."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus

from tests.api.live import LiveServer, serve
from tests.jobs.helpers import app_settings
from tests.live.conftest import open_ws, receive, token_for
from tests.live.test_ws import until_end

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = app_settings(
        tmp_path_factory.mktemp("limited"),
        rate_limit_enabled=True,
        rate_limit_default="3/minute",
        rate_limit_execute="1/minute",
        rate_limit_exempt_admins=False,
        sandbox_python_preload="",
    )
    with serve(settings) as server:
        yield server


def test_handshakes_count_against_the_default_limit(limited_server: LiveServer) -> None:
    for _ in range(3):
        with open_ws(limited_server) as ws:
            ws.send("{}")
            until_end(ws)
    with pytest.raises(InvalidStatus) as refused, open_ws(limited_server):
        pass
    response = refused.value.response
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert json.loads(response.body)["error"]["code"] == "RATE_LIMITED"


def test_each_run_counts_against_the_execute_limit(limited_server: LiveServer) -> None:
    token = token_for(limited_server)
    header = {"Authorization": f"Bearer {token}"}  # the default limit then counts per user
    with open_ws(limited_server, additional_headers=header) as ws:
        ws.send(json.dumps({"type": "run", "code": "print(1)"}))
        messages, code = until_end(ws)
    assert (messages[-1]["type"], code) == ("result", 1000)
    with open_ws(limited_server, additional_headers=header) as ws:
        ws.send(json.dumps({"type": "run", "code": "print(1)"}))
        message = receive(ws)
    assert message["type"] == "error"
    assert message["error"]["code"] == "RATE_LIMITED"
