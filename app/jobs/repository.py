"""Every SQL statement about jobs. Status changes are conditional UPDATEs, so two actors (a worker
and a cancel request, or two workers) can never both move the same job."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.core import leases
from app.core.db import utcnow
from app.jobs.models import Job, JobStatus

RESTART_REASON = "the service stopped while the job was running"
EXPIRED_REASON = "the node running the job stopped answering (its lease expired)"
TABLE = Job.__table__
QUEUED = Job.status == JobStatus.QUEUED.value
STARTED = Job.status == JobStatus.RUNNING.value
CLAIM_ORDER = (Job.created_at.asc(), Job.id.asc())


def add(session: Session, job: Job) -> Job:
    session.add(job)
    session.flush()
    return job


def get(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def get_by_idempotency_key(session: Session, *, user_id: str, key: str) -> Job | None:
    stmt = select(Job).where(Job.user_id == user_id, Job.idempotency_key == key)
    return session.scalars(stmt).first()


def list_jobs(
    session: Session,
    *,
    user_id: str | None,
    status: str | None,
    language: str | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[Job], int]:
    """A page of jobs, newest first, and how many match in all."""
    conditions: list[Any] = []
    if user_id is not None:
        conditions.append(Job.user_id == user_id)
    if status is not None:
        conditions.append(Job.status == status)
    if language is not None:
        conditions.append(Job.language == language)
    total = session.scalar(select(func.count()).select_from(Job).where(*conditions)) or 0
    stmt = (
        select(Job)
        .where(*conditions)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return session.scalars(stmt).all(), total


def claim(session: Session, job_id: str, *, owner: str, lease_s: float) -> bool:
    """queued -> running, leased to `owner`; False when someone else moved the job first
    (cancelled, or claimed by another node: the lease must be free or already `owner`'s)."""
    now = utcnow()
    stmt = (
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == JobStatus.QUEUED.value,
            leases.free_or_held_by(TABLE, owner, now),
        )
        .values(status=JobStatus.RUNNING.value, started_at=now, **leases.held(owner, lease_s, now))
    )
    return session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]


def finish(session: Session, job_id: str, values: dict[str, Any]) -> bool:
    """running -> a final status with its result, its lease released; False when the job is no
    longer running (cancelled, or failed by a node that took it over)."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
        .values(finished_at=utcnow(), **values, **leases.RELEASED)
    )
    return session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]


def cancel_queued(session: Session, job_id: str) -> bool:
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.CANCELLED.value,
            cancel_requested=True,
            finished_at=utcnow(),
            stderr="cancelled before it started",
            **leases.RELEASED,
        )
    )
    return session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]


def request_cancel_running(session: Session, job_id: str) -> bool:
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
        .values(cancel_requested=True)
    )
    return session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]


def fail_running(session: Session, *, reason: str, job_ids: Sequence[str] | None = None) -> int:
    """Every running job (or the given ones) -> failed with `reason`; how many were moved."""
    stmt = update(Job).where(Job.status == JobStatus.RUNNING.value)
    if job_ids is not None:
        stmt = stmt.where(Job.id.in_(job_ids))
    stmt = stmt.values(
        status=JobStatus.FAILED.value, finished_at=utcnow(), stderr=reason, **leases.RELEASED
    )
    return session.execute(stmt).rowcount  # type: ignore[attr-defined, no-any-return]


def fail_started(session: Session, job_ids: Sequence[str], reason: str) -> list[str]:
    """The given running jobs -> failed with `reason`; the ids moved (a job that finished in
    the meantime keeps its result)."""
    if not job_ids:
        return []
    stmt = (
        update(Job)
        .where(Job.id.in_(list(job_ids)), Job.status == JobStatus.RUNNING.value)
        .values(
            status=JobStatus.FAILED.value, finished_at=utcnow(), stderr=reason, **leases.RELEASED
        )
        .returning(Job.id)
    )
    return list(session.scalars(stmt))


def with_callback(session: Session, job_ids: Sequence[str]) -> Sequence[Job]:
    """The given jobs that have a callback URL, read afresh (a finishing UPDATE bypasses the
    session's copies)."""
    if not job_ids:
        return []
    stmt = (
        select(Job)
        .where(Job.id.in_(job_ids), Job.callback_url.is_not(None))
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).all()


def queued_jobs(
    session: Session, job_ids: Sequence[str] | None = None
) -> list[tuple[str, str, float]]:
    """(id, user id, timeout) of every queued job (or of the given ones), oldest first."""
    stmt = (
        select(Job.id, Job.user_id, Job.timeout_s)
        .where(Job.status == JobStatus.QUEUED.value)
        .order_by(*CLAIM_ORDER)
    )
    if job_ids is not None:
        stmt = stmt.where(Job.id.in_(list(job_ids)))
    return [(job_id, user_id, timeout_s) for job_id, user_id, timeout_s in session.execute(stmt)]


def active_counts_by_language(session: Session) -> dict[str, dict[str, int]]:
    """Queued and running jobs per language."""
    stmt = (
        select(Job.language, Job.status, func.count())
        .where(Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
        .group_by(Job.language, Job.status)
    )
    counts: dict[str, dict[str, int]] = {}
    for language, status, count in session.execute(stmt).all():
        counts.setdefault(language, {"queued": 0, "running": 0})[status] = count
    return counts


def is_cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def started_at(session: Session, job_id: str) -> datetime | None:
    return session.scalar(select(Job.started_at).where(Job.id == job_id))
