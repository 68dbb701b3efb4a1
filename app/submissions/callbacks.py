"""A finished submission goes to its callback URL: the delivery is enqueued in the same
transaction that records the final state, wherever that happens (the grader's result, a cancel
while queued, a worker's failure, a restart that fails a running submission), as for jobs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from app.submissions import repository
from app.submissions.models import Submission, SubmissionStatus
from app.submissions.schemas import SubmissionRead
from app.webhooks.service import enqueue_delivery

RESOURCE = "submission"


def submission_payload(session: Session, submission: Submission) -> dict[str, Any]:
    """The webhook's `data`: the submission as `GET /api/v1/submissions/{id}` shows it, without
    its deliveries."""
    cases = list(repository.cases_of(session, submission.id))
    metadata = repository.metadata_of(session, [submission.id])[submission.id]
    read = SubmissionRead.from_rows(submission, cases, metadata)
    return read.model_dump(mode="json", exclude={"deliveries"})


def notify_finished(session: Session, submission_ids: Iterable[str]) -> int:
    """Enqueue the delivery of every finished submission among `submission_ids` that has a
    callback URL; call it after the UPDATE that finished them, before the commit."""
    session.flush()
    enqueued = 0
    for submission_id in submission_ids:
        submission = repository.get(session, submission_id)
        if submission is None or not submission.callback_url:
            continue
        session.refresh(submission)  # the UPDATE bypassed the identity map
        if not SubmissionStatus(submission.status).is_final:
            continue
        enqueue_delivery(
            session,
            resource=RESOURCE,
            resource_id=submission.id,
            url=submission.callback_url,
            payload=submission_payload(session, submission),
        )
        enqueued += 1
    return enqueued
