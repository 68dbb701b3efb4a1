"""A restart fails the submissions a dead process was grading and grades the queued ones."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from app.auth.models import Role, User
from app.core.db import utcnow
from app.core.migrations import upgrade_to_head
from app.submissions.models import Submission, SubmissionCase, SubmissionStatus
from app.submissions.repository import EXPIRED_REASON, RESTART_REASON, finish_with_cases
from tests.jobs.helpers import app_settings, running_app
from tests.submissions.helpers import FINAL

pytestmark = pytest.mark.docker


def seed(database_url: str, statuses: list[SubmissionStatus]) -> list[str]:
    upgrade_to_head(database_url)
    engine = create_engine(database_url)
    now = utcnow()
    with Session(engine) as session:
        user = User(username="owner", username_key="owner", password_hash="x", role=Role.USER)
        session.add(user)
        session.flush()
        ids = []
        for number, status in enumerate(statuses):
            submission = Submission(
                user_id=user.id,
                language="python",
                code="print(input())",
                compare="trim",
                abs_tol=0.0,
                rel_tol=0.0,
                memory_mb=256,
                status=status.value,
                passed=0,
                total=1,
                created_at=now - timedelta(seconds=60 - number),
            )
            session.add(submission)
            session.flush()
            session.add(
                SubmissionCase(
                    submission_id=submission.id,
                    number=0,
                    stdin="hi\n",
                    expected_output="hi\n",
                    timeout_s=5.0,
                )
            )
            ids.append(submission.id)
        session.commit()
    engine.dispose()
    return ids


def test_restart_fails_running_submissions_and_grades_queued_ones(tmp_path: Path) -> None:
    settings = app_settings(tmp_path, sandbox_python_preload="")
    ids = seed(settings.database_url, [SubmissionStatus.RUNNING, SubmissionStatus.QUEUED])

    with running_app(settings) as client:
        factory = client.app.state.session_factory  # type: ignore[attr-defined]
        deadline = utcnow() + timedelta(seconds=60)
        while True:
            with factory() as session:
                rows = [session.get(Submission, submission_id) for submission_id in ids]
                states = [(row.status, row.verdict, row.error) for row in rows if row]
            if all(status in FINAL for status, _, _ in states) or utcnow() > deadline:
                break
            time.sleep(0.05)

    assert states[0] == ("failed", None, RESTART_REASON)
    assert states[1] == ("finished", "accepted", None)


def test_a_late_grading_does_not_add_cases_to_a_submission_another_node_failed(
    tmp_path: Path,
) -> None:
    """The node whose lease lapsed finishes grading after another node failed the submission:
    neither its verdict nor its cases are stored over the failure."""
    settings = app_settings(tmp_path)
    (submission_id,) = seed(settings.database_url, [SubmissionStatus.RUNNING])
    engine = create_engine(settings.database_url)
    with Session(engine) as session:
        session.get(Submission, submission_id).status = SubmissionStatus.FAILED.value  # type: ignore[union-attr]
        session.get(Submission, submission_id).error = EXPIRED_REASON  # type: ignore[union-attr]
        session.commit()
        late = {"status": SubmissionStatus.FINISHED.value, "verdict": "accepted", "passed": 1}
        case = {"number": 0, "verdict": "accepted", "stdout": "hi\n", "exit_code": 0}
        assert not finish_with_cases(session, submission_id, late, [case])
        session.commit()
        row = session.get(Submission, submission_id)
        assert row is not None
        assert (row.status, row.verdict, row.error) == ("failed", None, EXPIRED_REASON)
        stored = session.query(SubmissionCase).filter_by(submission_id=submission_id).one()
        assert (stored.verdict, stored.stdout) == (None, None)
    engine.dispose()
