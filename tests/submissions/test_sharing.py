"""Grading leaves SUBMISSION_SYNC_RESERVE containers to synchronous runs. Real pool, real DB."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from app.sandbox.types import RunRequest
from tests.submissions.helpers import hello_body, submit, wait_for_final

pytestmark = pytest.mark.docker

SLEEP_S = 4.0


def test_a_case_waits_while_the_pool_has_only_the_reserve_to_spare(
    client: TestClient, user: dict[str, str]
) -> None:
    """Two long synchronous runs hold two of the three python containers: the one left is the
    synchronous reserve, so a submission's case must wait for one of them to end."""
    manager = client.app.state.sandbox  # type: ignore[attr-defined]
    pool = manager.pools["python"]
    sleepers = [
        threading.Thread(
            target=manager.run,
            args=(RunRequest(code=f"import time; time.sleep({SLEEP_S})", timeout_s=10),),
        )
        for _ in range(2)
    ]
    started = time.monotonic()  # before the sleepers: no case can end before SLEEP_S from here
    for sleeper in sleepers:
        sleeper.start()
    deadline = time.monotonic() + 20
    while pool.stats()["in_use"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)

    submission_id = submit(client, user, hello_body())
    time.sleep(1.5)
    waiting = client.get(f"/api/v1/submissions/{submission_id}", headers=user).json()

    assert waiting["status"] in ("queued", "running")
    final = wait_for_final(client, submission_id, user)
    assert final["verdict"] == "accepted"
    assert time.monotonic() - started >= SLEEP_S  # it ran only once a sleeper had ended
    for sleeper in sleepers:
        sleeper.join()
