"""Submit, poll, list and cancel queued jobs; ownership and idempotency. Real pool, real DB."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.auth.models import Role
from app.jobs.models import Job
from app.sandbox.languages import LANGUAGES
from tests.jobs.helpers import headers_for, wait_for_final, wait_for_status

pytestmark = pytest.mark.docker

JOBS = "/api/v1/jobs"
SLEEPER = {"code": "import time; time.sleep(30)", "timeout": 30}


def submit(client: TestClient, headers: dict[str, str], **body: object) -> dict[str, object]:
    response = client.post(JOBS, json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


def count_jobs(client: TestClient, **filters: object) -> int:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        stmt = select(func.count()).select_from(Job).filter_by(**filters)
        return session.scalar(stmt) or 0


class TestSubmit:
    def test_answers_202_with_location_once_the_job_is_stored(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        response = client.post(JOBS, json={"code": "print('hi')"}, headers=user)

        assert response.status_code == 202
        body = response.json()
        assert body["status"] in {"queued", "running", "succeeded"}
        assert response.headers["Location"] == f"{JOBS}/{body['job_id']}"
        assert body["location"] == response.headers["Location"]
        assert count_jobs(client, id=body["job_id"]) == 1

    def test_a_submitted_job_runs_and_reports_its_result(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        job_id = submit(client, user, code="import sys; print(sys.stdin.read())", stdin="in")[
            "job_id"
        ]

        job = wait_for_final(client, job_id, user)

        assert job["status"] == "succeeded"
        assert job["output"] == "in\n"
        assert job["success"] is True
        assert job["exit_code"] == 0
        assert job["mode"] == "async"
        assert job["started_at"] is not None
        assert job["finished_at"] is not None
        assert job["queue_wait"] >= 0
        assert job["execution_time"] > 0

    def test_a_timeout_ends_timed_out(self, client: TestClient, user: dict[str, str]) -> None:
        job_id = submit(client, user, code="while True: pass", timeout=1)["job_id"]

        job = wait_for_final(client, job_id, user)

        assert job["status"] == "timed_out"
        assert job["timed_out"] is True
        assert job["success"] is False

    def test_a_failing_script_ends_failed_with_its_stderr(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        job_id = submit(client, user, code="1/0")["job_id"]

        job = wait_for_final(client, job_id, user)

        assert job["status"] == "failed"
        assert "ZeroDivisionError" in job["error"]

    def test_oversized_code_is_refused_and_not_stored(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        before = count_jobs(client)
        big = "#" * (client.app.state.settings.max_code_bytes + 1)  # type: ignore[attr-defined]

        response = client.post(JOBS, json={"code": big}, headers=user)

        assert response.status_code in (413,)
        assert count_jobs(client) == before

    def test_unsupported_language_is_400(self, client: TestClient, user: dict[str, str]) -> None:
        response = client.post(JOBS, json={"code": "1", "language": "brainfuck"}, headers=user)

        assert response.status_code == 400
        assert response.json()["error"]["details"]["supported"] == sorted(LANGUAGES)

    def test_guest_may_not_submit_or_list(self, client: TestClient) -> None:
        guest = headers_for(client, Role.GUEST)

        assert client.post(JOBS, json={"code": "1"}, headers=guest).status_code == 403
        assert client.get(JOBS, headers=guest).status_code == 403


class TestIdempotency:
    def test_a_retry_with_the_same_key_returns_the_same_job(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        headers = {**user, "Idempotency-Key": f"k-{uuid.uuid4()}"}

        first = client.post(JOBS, json={"code": "print(1)"}, headers=headers)
        second = client.post(JOBS, json={"code": "print(1)"}, headers=headers)

        assert first.json()["job_id"] == second.json()["job_id"]
        assert second.headers["Idempotent-Replayed"] == "true"

    def test_the_same_key_with_another_body_is_422(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        headers = {**user, "Idempotency-Key": f"k-{uuid.uuid4()}"}
        client.post(JOBS, json={"code": "print(1)"}, headers=headers)

        response = client.post(JOBS, json={"code": "print(2)"}, headers=headers)

        assert response.status_code == 422
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"

    def test_keys_are_scoped_to_the_caller(
        self, client: TestClient, user: dict[str, str], other_user: dict[str, str]
    ) -> None:
        key = f"k-{uuid.uuid4()}"

        mine = submit(client, {**user, "Idempotency-Key": key}, code="print(1)")
        theirs = submit(client, {**other_user, "Idempotency-Key": key}, code="print(1)")

        assert mine["job_id"] != theirs["job_id"]

    def test_racing_retries_create_one_job(self, client: TestClient, user: dict[str, str]) -> None:
        key = f"race-{uuid.uuid4()}"
        headers = {**user, "Idempotency-Key": key}
        barrier = threading.Barrier(4)
        answers: list[int] = []

        def post() -> None:
            barrier.wait()
            answers.append(
                client.post(JOBS, json={"code": "print(1)"}, headers=headers).status_code
            )

        threads = [threading.Thread(target=post) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert answers == [202] * 4
        assert count_jobs(client, idempotency_key=key) == 1


class TestReadAndList:
    def test_another_users_job_is_not_found(
        self, client: TestClient, user: dict[str, str], other_user: dict[str, str]
    ) -> None:
        job_id = submit(client, user, code="print(1)")["job_id"]

        assert client.get(f"{JOBS}/{job_id}", headers=other_user).status_code == 404
        response = client.post(f"{JOBS}/{job_id}/cancel", headers=other_user)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"

    def test_an_admin_sees_any_job(
        self, client: TestClient, user: dict[str, str], admin: dict[str, str]
    ) -> None:
        job_id = submit(client, user, code="print(1)")["job_id"]

        assert client.get(f"{JOBS}/{job_id}", headers=admin).status_code == 200

    def test_an_unknown_or_malformed_id(self, client: TestClient, user: dict[str, str]) -> None:
        assert client.get(f"{JOBS}/{uuid.uuid4()}", headers=user).status_code == 404
        assert client.get(f"{JOBS}/not-a-uuid", headers=user).status_code == 422

    def test_lists_only_my_jobs_newest_first_with_a_total(self, client: TestClient) -> None:
        me, someone = headers_for(client), headers_for(client)
        ids = [submit(client, me, code=f"print({n})")["job_id"] for n in range(3)]
        submit(client, someone, code="print(0)")

        page = client.get(JOBS, params={"limit": 2}, headers=me).json()

        assert page["total"] == 3
        assert [item["job_id"] for item in page["items"]] == ids[::-1][:2]
        rest = client.get(JOBS, params={"limit": 2, "offset": 2}, headers=me).json()
        assert [item["job_id"] for item in rest["items"]] == ids[:1]

    def test_filters_by_status_and_language(self, client: TestClient) -> None:
        me = headers_for(client)
        ok = submit(client, me, code="print(1)")["job_id"]
        bad = submit(client, me, code="1/0")["job_id"]
        wait_for_final(client, ok, me)
        wait_for_final(client, bad, me)

        failed = client.get(JOBS, params={"status": "failed"}, headers=me).json()
        python = client.get(JOBS, params={"language": "python"}, headers=me).json()
        other = client.get(JOBS, params={"language": "ruby"}, headers=me).json()

        assert [item["job_id"] for item in failed["items"]] == [bad]
        assert python["total"] == 2
        assert other["total"] == 0

    def test_admins_filter_by_user_and_users_may_not(
        self, client: TestClient, admin: dict[str, str]
    ) -> None:
        me = headers_for(client)
        job_id = submit(client, me, code="print(1)")["job_id"]
        owner = client.get(f"{JOBS}/{job_id}", headers=me).json()["user_id"]

        page = client.get(JOBS, params={"user_id": owner}, headers=admin).json()
        refused = client.get(JOBS, params={"user_id": str(uuid.uuid4())}, headers=me)

        assert [item["job_id"] for item in page["items"]] == [job_id]
        assert refused.status_code == 403


class TestCancel:
    def test_a_running_job_is_killed_within_a_second(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        job_id = submit(client, user, **SLEEPER)["job_id"]
        assert wait_for_status(client, job_id, user, "running")["status"] == "running"
        time.sleep(0.2)  # let the script start sleeping in its container
        started = time.monotonic()

        response = client.post(f"{JOBS}/{job_id}/cancel", headers=user)

        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
        assert time.monotonic() - started < 1.5
        assert response.json()["cancel_requested"] is True

    def test_a_finished_job_is_409(self, client: TestClient, user: dict[str, str]) -> None:
        job_id = submit(client, user, code="print(1)")["job_id"]
        wait_for_final(client, job_id, user)

        response = client.post(f"{JOBS}/{job_id}/cancel", headers=user)

        assert response.status_code == 409
        assert response.json()["error"]["code"] == "CONFLICT"
