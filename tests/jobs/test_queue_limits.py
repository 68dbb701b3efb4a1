"""One worker, one queue slot: a queued job can be cancelled; a full queue refuses, never drops."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.auth.models import Role
from app.jobs.models import Job
from tests.jobs.helpers import app_settings, headers_for, running_app, wait_for_status

pytestmark = pytest.mark.docker

JOBS = "/api/v1/jobs"
SLEEPER = {"code": "import time; time.sleep(30)", "timeout": 30}


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str
) -> Iterator[TestClient]:
    settings = app_settings(
        tmp_path_factory.mktemp("queue"),
        database_url=module_database_url,
        pool_max_size=1,
        job_workers=1,
        job_queue_max=1,
        run_max_timeout_s=30.0,
        shutdown_grace_s=0.5,
    )
    with running_app(settings) as test_client:
        yield test_client


def test_a_queued_job_is_cancelled_and_a_full_queue_refuses(client: TestClient) -> None:
    user = headers_for(client)
    blocker = client.post(JOBS, json=SLEEPER, headers=user).json()["job_id"]
    wait_for_status(client, blocker, user, "running")
    queued = client.post(JOBS, json={"code": "print(1)"}, headers=user)
    assert queued.json()["status"] == "queued"

    refused = client.post(JOBS, json={"code": "print(2)"}, headers=user)

    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "POOL_EXHAUSTED"
    assert int(refused.headers["Retry-After"]) >= 1
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        assert session.scalar(select(func.count()).select_from(Job)) == 2  # nothing half-stored

    queued_id = queued.json()["job_id"]
    cancelled = client.post(f"{JOBS}/{queued_id}/cancel", headers=user)
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["started_at"] is None

    assert client.post(f"{JOBS}/{blocker}/cancel", headers=user).json()["status"] == "cancelled"


def test_admins_see_the_queue_in_pool_stats(client: TestClient) -> None:
    admin = headers_for(client, Role.ADMIN)

    stats = client.get("/api/v1/sandbox/pool/stats", headers=admin).json()

    assert stats["queue"]["capacity"] == 1
    assert stats["queue"]["workers"] == 1
    assert stats["queue"]["users_waiting"] == 0
    assert "expected_wait" in stats["queue"]
    assert stats["pools"]["python"]["max_size"] == 1
