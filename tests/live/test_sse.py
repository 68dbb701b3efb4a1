"""GET /jobs/{id}/events read as a browser's EventSource would: incrementally, over real HTTP,
against the live app and the real engine; resumed with Last-Event-ID; opened with a ticket."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from app.auth.models import Role
from app.live import tickets
from tests.api.live import LiveServer
from tests.live.conftest import read_sse, token_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SLOW_TWO_LINES = "import time\nprint('one')\ntime.sleep(2.0)\nprint('two')"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(server: LiveServer, token: str, code: str) -> str:
    response = httpx.post(
        f"{server.base_url}/api/v1/jobs", json={"code": code}, headers=bearer(token), timeout=10
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def events_url(server: LiveServer, job_id: str) -> str:
    return f"{server.base_url}/api/v1/jobs/{job_id}/events"


def follow(server: LiveServer, job_id: str, **kwargs: Any) -> list[dict[str, Any]]:
    with httpx.stream("GET", events_url(server, job_id), timeout=30, **kwargs) as response:
        assert response.status_code == 200, response.read()
        return [{**event, "at": time.monotonic()} for event in read_sse(response)]


def test_output_reaches_the_reader_while_the_job_runs(live_server: LiveServer) -> None:
    token = token_for(live_server)
    job_id = submit(live_server, token, SLOW_TWO_LINES)
    events = follow(live_server, job_id, headers=bearer(token))
    kinds = [event["event"] for event in events]
    assert kinds[0] == "status"
    assert kinds[-2:] == ["status", "result"]
    stdout = [event for event in events if event["event"] == "stdout"]
    assert "".join(event["data"] for event in stdout) == "one\ntwo\n"
    first_line = next(event for event in stdout if "one" in event["data"])
    # The reader connects a moment after the job starts; the second line is 2 s after the first.
    assert events[-1]["at"] - first_line["at"] >= 1.0, "the first line came only at the end"
    result = events[-1]["data"]
    assert (result["job_id"], result["status"], result["output"]) == (
        job_id,
        "succeeded",
        "one\ntwo\n",
    )
    ids = [event["id"] for event in events if "id" in event]
    assert ids == sorted(set(ids))


def test_a_reconnect_with_last_event_id_gets_the_rest_without_loss(live_server: LiveServer) -> None:
    token = token_for(live_server)
    code = "import time\nfor i in range(6):\n    print(i)\n    time.sleep(0.3)"
    job_id = submit(live_server, token, code)
    seen: list[dict[str, Any]] = []
    with httpx.stream(
        "GET", events_url(live_server, job_id), headers=bearer(token), timeout=30
    ) as r:
        for event in read_sse(r):
            seen.append(event)
            if event["event"] == "stdout":
                break  # the connection drops in the middle of the run
    last_id = seen[-1]["id"]
    rest = follow(live_server, job_id, headers={**bearer(token), "Last-Event-ID": str(last_id)})
    assert rest[0]["id"] == last_id + 1
    stdout = "".join(e["data"] for e in [*seen, *rest] if e["event"] == "stdout")
    assert stdout == "".join(f"{i}\n" for i in range(6))
    assert rest[-1]["event"] == "result"
    assert rest[-1]["data"]["output"] == stdout


def test_after_the_log_dropped_a_job_a_reconnect_gets_its_ending_from_the_database(
    live_server: LiveServer,
) -> None:
    token = token_for(live_server)
    job_id = submit(live_server, token, "print('stored')")
    first = follow(live_server, job_id, headers=bearer(token))
    live_server.app.state.event_log.drop("job", job_id)  # as retention would, later
    again = follow(live_server, job_id, headers={**bearer(token), "Last-Event-ID": "2"})
    assert [(e["event"], e["id"]) for e in again] == [("status", 3), ("result", 4)]
    assert again[0]["data"] == {"status": "succeeded"}
    assert again[1]["data"]["output"] == first[-1]["data"]["output"] == "stored\n"


def test_a_ticket_opens_one_jobs_events_without_a_token_in_the_url(
    live_server: LiveServer,
) -> None:
    token = token_for(live_server)
    job_id = submit(live_server, token, "print('ticketed')")
    response = httpx.post(f"{events_url(live_server, job_id)}/ticket", headers=bearer(token))
    assert response.status_code == 200, response.text
    ticket = response.json()["ticket"]
    assert token not in ticket
    events = follow(live_server, job_id, params={"ticket": ticket})
    assert events[-1]["data"]["output"] == "ticketed\n"


def _refused(server: LiveServer, job_id: str, **kwargs: Any) -> httpx.Response:
    response = httpx.get(events_url(server, job_id), timeout=10, **kwargs)
    assert response.headers["content-type"].startswith("application/json")
    assert set(response.json()["error"]) == {"code", "message", "request_id", "details"}
    return response


def test_tickets_are_bound_to_their_job_and_expire(live_server: LiveServer) -> None:
    token = token_for(live_server)
    job_a = submit(live_server, token, "print('a')")
    job_b = submit(live_server, token, "print('b')")
    settings = live_server.app.state.settings
    ticket_a = httpx.post(f"{events_url(live_server, job_a)}/ticket", headers=bearer(token)).json()
    assert _refused(live_server, job_b, params={"ticket": ticket_a["ticket"]}).status_code == 401
    user_id = tickets.verify(settings, ticket_a["ticket"], resource=f"job:{job_a}")
    expired, _ = tickets.issue(
        settings.model_copy(update={"events_ticket_ttl_s": -1}),
        user_id=user_id,
        resource=f"job:{job_a}",
    )
    assert _refused(live_server, job_a, params={"ticket": expired}).status_code == 401
    body, _, signature = ticket_a["ticket"].partition(".")
    forged = f"{body}.{signature[:-2]}AA"
    assert _refused(live_server, job_a, params={"ticket": forged}).status_code == 401
    assert _refused(live_server, job_a, params={"ticket": token}).status_code == 401


def test_an_access_token_is_refused_as_a_ticket_and_a_ticket_as_a_token(
    live_server: LiveServer,
) -> None:
    token = token_for(live_server)
    job_id = submit(live_server, token, "print('x')")
    ticket = httpx.post(f"{events_url(live_server, job_id)}/ticket", headers=bearer(token)).json()
    me = httpx.get(f"{live_server.base_url}/api/v1/users/me", headers=bearer(ticket["ticket"]))
    assert me.status_code == 401


def test_another_users_job_is_not_found(live_server: LiveServer) -> None:
    owner, other = token_for(live_server), token_for(live_server)
    job_id = submit(live_server, owner, "print('mine')")
    assert _refused(live_server, job_id, headers=bearer(other)).status_code == 404
    ticket = httpx.post(f"{events_url(live_server, job_id)}/ticket", headers=bearer(other))
    assert ticket.status_code == 404


def test_unauthenticated_guest_and_malformed_requests_are_refused(live_server: LiveServer) -> None:
    token = token_for(live_server)
    job_id = submit(live_server, token, "print('x')")
    assert _refused(live_server, job_id).status_code == 401
    guest = token_for(live_server, Role.GUEST)
    assert _refused(live_server, job_id, headers=bearer(guest)).status_code == 403
    bad_id = {**bearer(token), "Last-Event-ID": "abc"}
    assert _refused(live_server, job_id, headers=bad_id).status_code == 422
    assert _refused(live_server, "not-a-uuid", headers=bearer(token)).status_code == 422
    huge = {"ticket": "x" * 5000}
    assert _refused(live_server, job_id, params=huge).status_code == 422
