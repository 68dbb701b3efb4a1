"""Per-user shares with the real engine: a user holding their share cannot keep another user's
runs (synchronous or queued) from starting; over-share is 429 QUOTA_EXCEEDED with Retry-After
and stores nothing; queued jobs take turns between users; every path releases the share."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from app.auth.models import Role
from app.jobs.models import Job
from tests.auth.helpers import auth_headers, create_user_and_token
from tests.jobs.helpers import app_settings, headers_for, running_app, wait_for_final

pytestmark = pytest.mark.docker

EXECUTE = "/api/v1/code/execute"
JOBS = "/api/v1/jobs"
RUN_S = 12  # one long run of the user who holds their share


def sleeper(seconds: float) -> dict[str, Any]:
    return {"code": f"import time; time.sleep({seconds})", "timeout": seconds + 5}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = app_settings(
        tmp_path_factory.mktemp("shares"),
        pool_initial_size=2,
        pool_max_size=2,
        job_workers=2,
        max_concurrent_runs_per_user=1,
        job_queue_max_per_user=3,
        run_max_timeout_s=30.0,
    )
    with running_app(settings) as test_client:
        yield test_client


def new_user(client: TestClient, role: Role = Role.USER) -> tuple[str, dict[str, str]]:
    user_id, token = create_user_and_token(client, role)
    return user_id, auth_headers(token)


def running_runs(client: TestClient, user_id: str) -> int:
    return client.app.state.run_shares.running(user_id)  # type: ignore[attr-defined,no-any-return]


def jobs_of(client: TestClient, user_id: str) -> int:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        stmt = select(func.count()).select_from(Job).where(Job.user_id == user_id)
        return session.scalar(stmt) or 0


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def in_background(call: Callable[[], Response]) -> tuple[threading.Thread, list[Response]]:
    answers: list[Response] = []
    thread = threading.Thread(target=lambda: answers.append(call()))
    thread.start()
    return thread, answers


def submit(client: TestClient, headers: dict[str, str], **body: Any) -> str:
    response = client.post(JOBS, json=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def test_a_user_holding_their_share_cannot_keep_another_users_runs_from_starting(
    client: TestClient,
) -> None:
    alice_id, alice = new_user(client)
    _bob_id, bob = new_user(client)
    holder, held = in_background(lambda: client.post(EXECUTE, json=sleeper(RUN_S), headers=alice))
    wait_until(lambda: running_runs(client, alice_id) == 1)
    alice_jobs = [submit(client, alice, code=f"print({n})") for n in range(3)]

    started = time.monotonic()
    bob_sync = client.post(EXECUTE, json={"code": "print('b')"}, headers=bob)
    bob_job = wait_for_final(client, submit(client, bob, code="print('b')"), bob, RUN_S)
    elapsed = time.monotonic() - started
    alice_waiting = [client.get(f"{JOBS}/{job}", headers=alice).json() for job in alice_jobs]
    alice_still_running = holder.is_alive()

    assert bob_sync.status_code == 200, bob_sync.text
    assert bob_sync.json()["output"] == "b\n"
    assert bob_job["status"] == "succeeded"
    assert elapsed < RUN_S
    assert alice_still_running
    assert [job["status"] for job in alice_waiting] == ["queued"] * 3  # behind her own run
    holder.join()
    assert held[0].status_code == 200
    finals = [wait_for_final(client, job, alice, 30) for job in alice_jobs]
    assert [job["output"] for job in finals] == ["0\n", "1\n", "2\n"]
    for earlier, later in itertools.pairwise(finals):
        assert later["started_at"] >= earlier["finished_at"]  # one at a time: her share is 1


def test_over_share_is_429_quota_exceeded_with_retry_after_and_stores_nothing(
    client: TestClient,
) -> None:
    alice_id, alice = new_user(client)
    holder, _held = in_background(lambda: client.post(EXECUTE, json=sleeper(6), headers=alice))
    wait_until(lambda: running_runs(client, alice_id) == 1)

    refused_run = client.post(EXECUTE, json={"code": "print(1)"}, headers=alice)
    queued = [submit(client, alice, code="print(1)") for _ in range(3)]
    refused_job = client.post(JOBS, json={"code": "print(1)"}, headers=alice)
    stored = jobs_of(client, alice_id)

    for refused in (refused_run, refused_job):
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "QUOTA_EXCEEDED"
        assert refused.json()["error"]["request_id"]
    # At the latest when the holding run ends: its timeout plus the pool's acquire timeout.
    assert 1 <= int(refused_run.headers["Retry-After"]) <= sleeper(6)["timeout"] + 10
    assert int(refused_job.headers["Retry-After"]) >= 1
    assert refused_run.json()["error"]["details"] == {"max_concurrent_runs_per_user": 1}
    assert refused_job.json()["error"]["details"] == {"queued": 3, "max_queued_per_user": 3}
    assert stored == 3  # the refused run and job left no row; the sleeper is stored when it ends
    holder.join()
    for job in queued:
        assert wait_for_final(client, job, alice, 30)["status"] == "succeeded"


def test_admins_share_the_containers_but_may_queue_beyond_the_per_user_bound(
    client: TestClient,
) -> None:
    admin_id, admin = new_user(client, Role.ADMIN)
    holder, _held = in_background(lambda: client.post(EXECUTE, json=sleeper(4), headers=admin))
    wait_until(lambda: running_runs(client, admin_id) == 1)

    second_run = client.post(EXECUTE, json={"code": "print(1)"}, headers=admin)
    queued = [submit(client, admin, code="print(1)") for _ in range(5)]

    assert second_run.status_code == 429
    assert second_run.json()["error"]["code"] == "QUOTA_EXCEEDED"
    holder.join()
    for job in queued:
        assert wait_for_final(client, job, admin, 30)["status"] == "succeeded"


def test_every_way_a_run_ends_releases_the_users_share(client: TestClient) -> None:
    user_id, user = new_user(client)
    for body in ({"code": "print(1)"}, {"code": "1/0"}, {"code": "while True: pass", "timeout": 1}):
        assert client.post(EXECUTE, json=body, headers=user).status_code == 200
        assert running_runs(client, user_id) == 0
    ended = [
        submit(client, user, code="print(1)"),
        submit(client, user, code="1/0"),
        submit(client, user, code="while True: pass", timeout=1),
    ]
    finals = [wait_for_final(client, job, user, 30)["status"] for job in ended]
    long_job = submit(client, user, **sleeper(20))
    queued_job = submit(client, user, code="print(2)")
    wait_until(lambda: running_runs(client, user_id) == 1)
    cancelled_queued = client.post(f"{JOBS}/{queued_job}/cancel", headers=user).json()
    cancelled_running = client.post(f"{JOBS}/{long_job}/cancel", headers=user).json()
    wait_until(lambda: running_runs(client, user_id) == 0)

    last = wait_for_final(client, submit(client, user, code="print(3)"), user, 30)

    assert finals == ["succeeded", "failed", "timed_out"]
    assert cancelled_queued["status"] == "cancelled"
    assert wait_for_final(client, long_job, user)["status"] == "cancelled"
    assert cancelled_running["cancel_requested"] is True
    assert last["output"] == "3\n"
    assert client.post(EXECUTE, json={"code": "print(4)"}, headers=user).status_code == 200
    assert running_runs(client, user_id) == 0


def test_queued_jobs_take_turns_between_users(tmp_path: Path) -> None:
    settings = app_settings(
        tmp_path,
        pool_max_size=1,
        job_workers=1,
        max_concurrent_runs_per_user=1,
        job_queue_max_per_user=0,
        run_max_timeout_s=30.0,
    )
    with running_app(settings) as client:
        carol, alice, bob = headers_for(client), headers_for(client), headers_for(client)
        blocker = submit(client, carol, **sleeper(20))
        wait_until(
            lambda: client.get(f"{JOBS}/{blocker}", headers=carol).json()["status"] == "running"
        )
        alice_jobs = [submit(client, alice, code=f"print({n})") for n in range(6)]
        bob_job = submit(client, bob, code="print('b')")
        client.post(f"{JOBS}/{blocker}/cancel", headers=carol)

        finals = {job: wait_for_final(client, job, alice, 30) for job in alice_jobs}
        finals[bob_job] = wait_for_final(client, bob_job, bob, 30)

    assert {job["status"] for job in finals.values()} == {"succeeded"}
    order = sorted(finals, key=lambda job: finals[job]["started_at"])
    assert order[:3] == [alice_jobs[0], bob_job, alice_jobs[1]]
