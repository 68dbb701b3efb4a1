"""Nothing acknowledged is lost: restarts fail what was running and run what was queued;
shutdown lets running jobs finish up to the grace period and records the rest."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from app.auth.models import Role, User
from app.core.config import Settings
from app.core.db import utcnow
from app.core.migrations import upgrade_to_head
from app.jobs.models import Job, JobStatus
from app.jobs.repository import RESTART_REASON
from app.jobs.worker import SHUTDOWN_REASON
from tests.auth.helpers import access_token_for, auth_headers
from tests.jobs.helpers import app_settings, headers_for, running_app, wait_for_status

pytestmark = pytest.mark.docker


def seed(
    settings: Settings, statuses: list[JobStatus], *, username: str = "owner", age_s: int = 60
) -> tuple[User, list[str]]:
    """A user and jobs left in the given states by a 'previous process', oldest first."""
    upgrade_to_head(settings.database_url)
    engine = create_engine(settings.database_url)
    now = utcnow()
    with Session(engine, expire_on_commit=False) as session:
        user = User(username=username, username_key=username, password_hash="x", role=Role.USER)
        session.add(user)
        session.flush()
        jobs = [
            Job(
                user_id=user.id,
                language="python",
                code=f"print({n})",
                timeout_s=5,
                status=status.value,
                created_at=now - timedelta(seconds=age_s - n),
                started_at=now if status is JobStatus.RUNNING else None,
            )
            for n, status in enumerate(statuses)
        ]
        session.add_all(jobs)
        session.commit()
        ids = [job.id for job in jobs]
    engine.dispose()
    return user, ids


def job_rows(settings: Settings, ids: list[str]) -> list[Job]:
    engine = create_engine(settings.database_url)
    with Session(engine) as session:
        rows = [session.get(Job, job_id) for job_id in ids]
        session.expunge_all()
    engine.dispose()
    return [row for row in rows if row is not None]


def test_restart_fails_running_jobs_and_runs_queued_ones_beyond_the_queue_size(
    tmp_path: Path,
) -> None:
    settings = app_settings(tmp_path, job_queue_max=1, job_workers=1, pool_max_size=1)
    user, ids = seed(
        settings, [JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.QUEUED]
    )

    with running_app(settings) as client:
        headers = auth_headers(access_token_for(client, user))
        running = client.get(f"/api/v1/jobs/{ids[0]}", headers=headers).json()
        finals = [wait_for_status(client, job_id, headers, "succeeded") for job_id in ids[1:]]

    assert running["status"] == "failed"
    assert running["error"] == RESTART_REASON
    assert [job["status"] for job in finals] == ["succeeded"] * 3
    assert [job["output"] for job in finals] == ["1\n", "2\n", "3\n"]
    # Oldest first: each started no earlier than the one queued before it.
    starts = [job["started_at"] for job in finals]
    assert starts == sorted(starts)


def test_shutdown_records_running_jobs_and_keeps_queued_ones_for_the_next_start(
    tmp_path: Path,
) -> None:
    settings = app_settings(
        tmp_path, job_workers=1, pool_max_size=1, shutdown_grace_s=0.5, run_max_timeout_s=30
    )
    sleeper = {"code": "import time; time.sleep(30)", "timeout": 30}
    with running_app(settings) as client:
        headers = headers_for(client)
        running = client.post("/api/v1/jobs", json=sleeper, headers=headers).json()["job_id"]
        wait_for_status(client, running, headers, "running")
        queued = client.post("/api/v1/jobs", json={"code": "print(7)"}, headers=headers)
        queued_id = queued.json()["job_id"]

    stopped, waiting = job_rows(settings, [running, queued_id])
    assert stopped.status == JobStatus.FAILED.value
    assert stopped.stderr == SHUTDOWN_REASON
    assert waiting.status == JobStatus.QUEUED.value

    with running_app(settings) as client:
        with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
            owner = session.get(User, waiting.user_id)
        headers = auth_headers(access_token_for(client, owner))
        final = wait_for_status(client, queued_id, headers, "succeeded")
    assert final["output"] == "7\n"


def test_jobs_recovered_at_start_up_take_turns_between_users(tmp_path: Path) -> None:
    settings = app_settings(
        tmp_path, job_workers=1, pool_max_size=1, max_concurrent_runs_per_user=1
    )
    alice, alice_jobs = seed(settings, [JobStatus.QUEUED] * 4, username="alice", age_s=60)
    bob, (bob_job,) = seed(settings, [JobStatus.QUEUED], username="bob", age_s=30)

    with running_app(settings) as client:
        alice_headers = auth_headers(access_token_for(client, alice))
        bob_headers = auth_headers(access_token_for(client, bob))
        finals = {
            job: wait_for_status(client, job, alice_headers, "succeeded") for job in alice_jobs
        }
        finals[bob_job] = wait_for_status(client, bob_job, bob_headers, "succeeded")

    order = sorted(finals, key=lambda job: finals[job]["started_at"])
    assert order[:3] == [alice_jobs[0], bob_job, alice_jobs[1]]  # bob waits one job, not four
    assert [finals[job]["output"] for job in alice_jobs] == ["0\n", "1\n", "2\n", "3\n"]
