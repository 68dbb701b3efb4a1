"""GET /submissions/{id}/events read incrementally over real HTTP against the live app and the
real engine: each case arrives as it is graded, a reconnect resumes without loss, a ticket opens
one submission's events only, and another user's submission is not found."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.api.live import LiveServer
from tests.live.conftest import read_sse, token_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Each case sleeps, so the gap between two case events is visible to the reader.
SLOW_ECHO = "import time\nline = input()\ntime.sleep(0.6)\nprint(line)"
CASES = [
    {"stdin": "a\n", "expected_output": "a\n"},
    {"stdin": "b\n", "expected_output": "wrong\n"},
    {"stdin": "c\n", "expected_output": "c\n"},
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(server: LiveServer, token: str) -> str:
    body = {"language": "python", "code": SLOW_ECHO, "test_cases": CASES}
    response = httpx.post(
        f"{server.base_url}/api/v1/submissions", json=body, headers=bearer(token), timeout=10
    )
    assert response.status_code == 202, response.text
    return str(response.json()["submission_id"])


def events_url(server: LiveServer, submission_id: str) -> str:
    return f"{server.base_url}/api/v1/submissions/{submission_id}/events"


def follow(server: LiveServer, submission_id: str, **kwargs: Any) -> list[dict[str, Any]]:
    with httpx.stream("GET", events_url(server, submission_id), timeout=60, **kwargs) as response:
        assert response.status_code == 200, response.read()
        return [{**event, "at": time.monotonic()} for event in read_sse(response)]


def test_each_case_reaches_the_reader_as_it_is_graded(live_server: LiveServer) -> None:
    token = token_for(live_server)
    submission_id = submit(live_server, token)
    events = follow(live_server, submission_id, headers=bearer(token))
    cases = [event for event in events if event["event"] == "case"]
    assert [(c["data"]["number"], c["data"]["verdict"]) for c in cases] == [
        (0, "accepted"),
        (1, "wrong_answer"),
        (2, "accepted"),
    ]
    assert cases[0]["data"]["stdout"] == "a\n"
    assert cases[-1]["at"] - cases[0]["at"] >= 0.8, "the cases came only at the end"
    assert [e["event"] for e in events[-2:]] == ["status", "result"]
    result = events[-1]["data"]
    assert (result["submission_id"], result["status"], result["verdict"]) == (
        submission_id,
        "finished",
        "wrong_answer",
    )
    assert (result["passed"], result["total"]) == (2, 3)
    ids = [event["id"] for event in events if "id" in event]
    assert ids == sorted(set(ids))


def test_a_reconnect_with_last_event_id_gets_the_remaining_cases(live_server: LiveServer) -> None:
    token = token_for(live_server)
    submission_id = submit(live_server, token)
    seen: list[dict[str, Any]] = []
    with httpx.stream(
        "GET", events_url(live_server, submission_id), headers=bearer(token), timeout=60
    ) as response:
        for event in read_sse(response):
            seen.append(event)
            if event["event"] == "case":
                break  # the connection drops after the first case
    last_id = seen[-1]["id"]
    rest = follow(
        live_server, submission_id, headers={**bearer(token), "Last-Event-ID": str(last_id)}
    )
    assert rest[0]["id"] == last_id + 1
    numbers = [e["data"]["number"] for e in [*seen, *rest] if e["event"] == "case"]
    assert numbers == [0, 1, 2]
    assert rest[-1]["event"] == "result"


def test_a_ticket_opens_one_submissions_events_and_others_are_not_found(
    live_server: LiveServer,
) -> None:
    token, other = token_for(live_server), token_for(live_server)
    submission_id = submit(live_server, token)
    url = events_url(live_server, submission_id)
    ticket = httpx.post(f"{url}/ticket", headers=bearer(token), timeout=10).json()["ticket"]
    events = follow(live_server, submission_id, params={"ticket": ticket})
    assert events[-1]["data"]["verdict"] == "wrong_answer"

    stranger = httpx.get(url, headers=bearer(other), timeout=10)
    assert stranger.status_code == 404
    assert stranger.json()["error"]["code"] == "NOT_FOUND"
    assert httpx.post(f"{url}/ticket", headers=bearer(other), timeout=10).status_code == 404
    another = submit(live_server, token)  # a ticket names exactly one submission
    wrong = httpx.get(events_url(live_server, another), params={"ticket": ticket}, timeout=10)
    assert wrong.status_code == 401
    assert set(wrong.json()["error"]) == {"code", "message", "request_id", "details"}
    assert httpx.get(url, timeout=10).status_code == 401
