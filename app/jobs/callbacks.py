"""A finished job goes to its callback URL: the delivery is enqueued in the same transaction
that records the final state, wherever that happens (a worker's result, a cancel while queued,
a restart or shutdown that fails a running job)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from app.jobs import repository
from app.jobs.models import Job, JobStatus
from app.jobs.schemas import JobRead
from app.webhooks.service import enqueue_delivery

RESOURCE = "job"


def job_payload(job: Job) -> dict[str, Any]:
    """The webhook's `data`: the job as `GET /api/v1/jobs/{id}` shows it, without deliveries."""
    return JobRead.from_job(job).model_dump(mode="json", exclude={"deliveries"})


def notify_finished(session: Session, job_ids: Iterable[str]) -> int:
    """Enqueue the delivery of every finished job among `job_ids` that has a callback URL;
    call it after the UPDATE that finished them, before the commit. How many were enqueued."""
    enqueued = 0
    for job in repository.with_callback(session, list(job_ids)):
        if not JobStatus(job.status).is_final:
            continue
        enqueue_delivery(
            session,
            resource=RESOURCE,
            resource_id=job.id,
            url=job.callback_url or "",
            payload=job_payload(job),
        )
        enqueued += 1
    return enqueued
