"""When the sandbox cannot run anything (here: its image is missing), runs are 503 in the error
format and still recorded as failed jobs; queued jobs end failed with the reason; neither keeps
the user's share of runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from app.jobs.models import Job
from tests.auth.helpers import auth_headers, create_user_and_token
from tests.jobs.helpers import app_settings, running_app, wait_for_final

pytestmark = pytest.mark.docker


def test_a_broken_sandbox_is_a_503_and_a_failed_job(tmp_path: Path) -> None:
    settings = app_settings(
        tmp_path, sandbox_python_image="warmbox-missing-image:none", max_concurrent_runs_per_user=1
    )
    with running_app(settings) as client:
        user_id, token = create_user_and_token(client)
        headers = auth_headers(token)
        response = client.post("/api/v1/code/execute", json={"code": "print(1)"}, headers=headers)
        queued = client.post("/api/v1/jobs", json={"code": "print(1)"}, headers=headers)
        job = wait_for_final(client, queued.json()["job_id"], headers)
        again = client.post("/api/v1/code/execute", json={"code": "print(1)"}, headers=headers)
        held = client.app.state.run_shares.running(user_id)  # type: ignore[attr-defined]
        with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
            sync_job = session.scalars(select(Job).where(Job.mode == "sync")).first()

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "SANDBOX_ERROR"
    assert sync_job.status == "failed"
    assert sync_job.stderr == response.json()["error"]["message"]
    assert job["status"] == "failed"
    assert job["error"] == response.json()["error"]["message"]
    assert again.json()["error"]["code"] == "SANDBOX_ERROR"  # not QUOTA_EXCEEDED: share released
    assert held == 0
