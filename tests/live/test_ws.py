"""/api/v1/code/ws with a real WebSocket client (the `websockets` package) against the live app
and the real engine: an interactive input() program, kill, and hostile input."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from app.auth.models import Role
from tests.api.live import LiveServer
from tests.live.conftest import open_ws, receive, token_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

GREETER = "name = input('name? ')\nprint('hello', name)\nprint('bye', input())"


@contextmanager
def start(server: LiveServer, token: str, **run: Any) -> Iterator[Any]:
    with open_ws(server) as ws:
        ws.send(json.dumps({"type": "run", "token": token, **run}))
        yield ws


def until_end(ws: Any) -> tuple[list[dict[str, Any]], int | None]:
    """Every message up to and including the result or error, and the close code after it."""
    messages = []
    while True:
        message = receive(ws)
        messages.append(message)
        if message["type"] in ("result", "error"):
            break
    try:
        ws.recv(timeout=10)
    except ConnectionClosed as closed:
        return messages, closed.rcvd.code if closed.rcvd else None
    raise AssertionError("the server kept the socket open after the end")


def refusal(server: LiveServer, first: Any, *, binary: bool = False) -> tuple[dict, int | None]:
    with open_ws(server) as ws:
        ws.send(first if binary or isinstance(first, str) else json.dumps(first))
        messages, code = until_end(ws)
    error = messages[-1]
    assert error["type"] == "error"
    assert set(error["error"]) == {"code", "message", "request_id", "details"}
    return error["error"], code


def test_an_interactive_program_gets_its_input_as_it_asks(live_server: LiveServer) -> None:
    token = token_for(live_server)
    with start(live_server, token, code=GREETER) as ws:
        started = receive(ws)
        assert started["type"] == "started"
        assert receive(ws) == {"type": "stdout", "data": "name? "}
        ws.send(json.dumps({"type": "stdin", "data": "ada\n"}))
        assert receive(ws) == {"type": "stdout", "data": "hello ada\n"}
        ws.send(json.dumps({"type": "stdin", "data": "later\n", "eof": True}))
        messages, code = until_end(ws)
    result = messages[-1]
    assert result["type"] == "result"
    assert (result["success"], result["output"]) == (True, "name? hello ada\nbye later\n")
    assert result["job_id"] == started["job_id"]
    assert code == 1000
    job = httpx.get(
        f"{live_server.base_url}/api/v1/jobs/{started['job_id']}",
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    assert (job["mode"], job["status"], job["output"]) == ("live", "succeeded", result["output"])


def test_the_token_may_come_in_the_handshake_header(live_server: LiveServer) -> None:
    token = token_for(live_server)
    with open_ws(live_server, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        ws.send(json.dumps({"type": "run", "code": "print(6 * 7)"}))
        messages, code = until_end(ws)
    assert messages[-1]["output"] == "42\n"
    assert code == 1000


def test_kill_stops_a_running_program(live_server: LiveServer) -> None:
    token = token_for(live_server)
    code = "import time\nprint('up', flush=True)\nwhile True:\n    time.sleep(0.05)"
    with start(live_server, token, code=code, timeout=20) as ws:
        assert receive(ws)["type"] == "started"
        assert receive(ws) == {"type": "stdout", "data": "up\n"}
        killed_at = time.monotonic()
        ws.send(json.dumps({"type": "kill"}))
        messages, close = until_end(ws)
    assert time.monotonic() - killed_at < 5
    result = messages[-1]
    assert result["type"] == "result"
    assert not result["success"]
    assert close == 1000


def test_a_slow_reader_gets_at_most_the_output_limit(live_server: LiveServer) -> None:
    """The program floods; the client reads nothing for a while. What reaches it is the limit
    (8 KiB here) per stream and a truncated result, never the flood."""
    token = token_for(live_server)
    code = "import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 10_000 + '\\n')"
    with start(live_server, token, code=code) as ws:
        time.sleep(2.0)
        messages, _ = until_end(ws)
    streamed = "".join(m["data"] for m in messages if m["type"] == "stdout")
    assert len(streamed.encode()) <= 8192
    assert messages[-1]["output_truncated"]
    assert messages[-1]["output"] == streamed


def test_a_daemon_left_by_a_live_run_is_gone_before_the_next_run(live_server: LiveServer) -> None:
    token = token_for(live_server)
    probe = "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"

    def processes() -> int:
        with start(live_server, token, code=probe) as ws:
            messages, _ = until_end(ws)
        return len(json.loads(messages[-1]["output"]))

    fresh = processes()
    daemon = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(60)\n    os._exit(0)\nprint('left one')"
    )
    with start(live_server, token, code=daemon) as ws:
        messages, _ = until_end(ws)
    assert messages[-1]["output"] == "left one\n"
    for _ in range(3):  # whichever container the next runs land in
        assert processes() == fresh


class TestRefusals:
    def test_no_token(self, live_server: LiveServer) -> None:
        error, code = refusal(live_server, {"type": "run", "code": "print(1)"})
        assert (error["code"], code) == ("AUTHENTICATION_ERROR", 4401)

    def test_a_forged_token(self, live_server: LiveServer) -> None:
        error, code = refusal(live_server, {"type": "run", "token": "a.b.c", "code": "print(1)"})
        assert (error["code"], code) == ("AUTHENTICATION_ERROR", 4401)

    def test_a_guest_may_not_run(self, live_server: LiveServer) -> None:
        guest = token_for(live_server, Role.GUEST)
        error, code = refusal(live_server, {"type": "run", "token": guest, "code": "print(1)"})
        assert (error["code"], code) == ("AUTHORIZATION_ERROR", 4403)

    def test_not_json(self, live_server: LiveServer) -> None:
        error, code = refusal(live_server, "{not json")
        assert (error["code"], code) == ("VALIDATION_ERROR", 4422)

    def test_a_binary_message(self, live_server: LiveServer) -> None:
        error, code = refusal(live_server, b"\x00\x01", binary=True)
        assert (error["code"], code) == ("VALIDATION_ERROR", 4422)

    def test_the_first_message_must_be_the_run(self, live_server: LiveServer) -> None:
        error, code = refusal(live_server, {"type": "stdin", "data": "x"})
        assert (error["code"], code) == ("VALIDATION_ERROR", 4422)

    def test_an_invalid_run_names_the_field(self, live_server: LiveServer) -> None:
        token = token_for(live_server)
        error, code = refusal(live_server, {"type": "run", "token": token, "code": "", "x": 1})
        assert code == 4422
        assert {tuple(d["loc"]) for d in error["details"]} >= {("code",), ("x",)}

    def test_an_unknown_language(self, live_server: LiveServer) -> None:
        token = token_for(live_server)
        run = {"type": "run", "token": token, "code": "x", "language": "cobol"}
        error, code = refusal(live_server, run)
        assert (error["code"], code) == ("UNSUPPORTED_LANGUAGE", 4400)

    def test_an_oversized_message(self, live_server: LiveServer) -> None:
        token = token_for(live_server)
        run = {"type": "run", "token": token, "code": "#" * (70 * 1024)}
        error, code = refusal(live_server, run)
        assert (error["code"], code) == ("PAYLOAD_TOO_LARGE", 4413)

    def test_a_silent_client_is_closed(self, live_server: LiveServer) -> None:
        with open_ws(live_server) as ws:
            messages, code = until_end(ws)
        assert (messages[-1]["error"]["code"], code) == ("VALIDATION_ERROR", 4422)

    def test_too_much_stdin_ends_the_run(self, live_server: LiveServer) -> None:
        token = token_for(live_server)
        with start(live_server, token, code="import time\ntime.sleep(20)", timeout=25) as ws:
            assert receive(ws)["type"] == "started"
            ended_at = time.monotonic()
            for _ in range(3):
                ws.send(json.dumps({"type": "stdin", "data": "y" * 2000}))
            messages, code = until_end(ws)
        assert time.monotonic() - ended_at < 10
        assert (messages[-1]["error"]["code"], code) == ("PAYLOAD_TOO_LARGE", 4413)

    def test_an_unknown_message_during_the_run(self, live_server: LiveServer) -> None:
        token = token_for(live_server)
        with start(live_server, token, code="input()", timeout=10) as ws:
            assert receive(ws)["type"] == "started"
            ws.send(json.dumps({"type": "stdin", "data": 5}))
            messages, code = until_end(ws)
        assert (messages[-1]["error"]["code"], code) == ("VALIDATION_ERROR", 4422)

    def test_a_users_share_counts_live_runs(self, live_server: LiveServer) -> None:
        token = token_for(live_server)
        with ExitStack() as stack:
            waiting = [
                stack.enter_context(start(live_server, token, code="input()", timeout=20))
                for _ in range(2)
            ]
            for ws in waiting:
                assert receive(ws)["type"] == "started"
            error, code = refusal(live_server, {"type": "run", "token": token, "code": "1"})
            assert (error["code"], code) == ("QUOTA_EXCEEDED", 4429)
            for ws in waiting:
                ws.send(json.dumps({"type": "stdin", "data": "\n", "eof": True}))
                assert until_end(ws)[1] == 1000
