"""The rules of queued jobs: submit (idempotent, within the queue's room and the user's queue
share), who may read, list and cancel what. Work reaches the workers through the JobQueue; this
module never imports the workers."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth.models import Role, User
from app.auth.permissions import Permission, has_permission, may_act_on
from app.core.errors import (
    AuthorizationError,
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
    ValidationAppError,
)
from app.jobs import repository
from app.jobs.callbacks import notify_finished
from app.jobs.models import Job, JobStatus
from app.jobs.queue import JobQueue, QueuedJob
from app.jobs.results import new_job
from app.jobs.spec import SANDBOX_DISABLED, JobOptions, RunSpec

CANCEL_SETTLE_S = 2.0


def _replay(job: Job, request_hash: str) -> Job:
    if job.request_hash != request_hash:
        raise ValidationAppError(
            "this Idempotency-Key was already used with a different request body",
            details={"job_id": job.id},
        )
    return job


def submit_job(
    session: Session,
    *,
    queue: JobQueue | None,
    user: User,
    spec: RunSpec,
    idempotency_key: str | None,
    options: JobOptions | None = None,
) -> tuple[Job, bool]:
    """Commit a queued job and put it in the queue; returns the job and whether it is a replay.

    A replay is answered even when the user's queue share is full: it queues nothing new.

    Raises:
        QuotaExceededError: the user already has JOB_QUEUE_MAX_PER_USER jobs queued.
        PoolExhaustedError: the queue is full; nothing is stored.
        ValidationAppError: the Idempotency-Key was used with another body.
    """
    if queue is None:
        raise ServiceUnavailableError(SANDBOX_DISABLED)
    user_id = user.id
    options = options or JobOptions()
    request_hash = options.request_hash(spec)
    if idempotency_key is not None:
        existing = repository.get_by_idempotency_key(session, user_id=user_id, key=idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash), True
    with queue.reserve(user_id, share_exempt=queue_share_exempt(user)) as place:
        job = new_job(
            spec,
            user_id=user_id,
            mode="async",
            status=JobStatus.QUEUED.value,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            callback_url=options.callback_url,
            metadata_=options.metadata,
        )
        try:
            repository.add(session, job)
            session.commit()
        except IntegrityError:
            # A retry raced the original: the unique (user, key) lets exactly one of them in.
            session.rollback()
            assert idempotency_key is not None
            existing = repository.get_by_idempotency_key(
                session, user_id=user_id, key=idempotency_key
            )
            if existing is None:
                raise
            return _replay(existing, request_hash), True
        place.job = QueuedJob(job.id, user_id, job.timeout_s)
    return job, False


def queue_share_exempt(user: User) -> bool:
    """Admins may queue beyond JOB_QUEUE_MAX_PER_USER (a re-run of many jobs is an admin's
    task), but their jobs still take turns with everyone else's and count against their
    concurrent-run share: a container an admin's run holds is one nobody else can use."""
    return user.role == Role.ADMIN


def get_job(session: Session, *, user: User, job_id: str) -> Job:
    """The job if the caller may see it; another user's job is 'not found', never 'forbidden'."""
    job = repository.get(session, job_id)
    if job is None or not may_act_on(
        user.role,
        user.id,
        job.user_id,
        own=Permission.JOBS_READ_OWN,
        every=Permission.JOBS_READ_ALL,
    ):
        raise NotFoundError("no such job")
    return job


def list_jobs(
    session: Session,
    *,
    user: User,
    user_filter: str | None,
    status: JobStatus | None,
    language: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Job], int]:
    """Newest first; a caller who may not read every job sees only their own."""
    if has_permission(user.role, Permission.JOBS_READ_ALL):
        owner = user_filter
    elif user_filter is None or user_filter == user.id:
        owner = user.id
    else:
        raise AuthorizationError("only admins may list other users' jobs")
    jobs, total = repository.list_jobs(
        session,
        user_id=owner,
        status=status.value if status else None,
        language=language,
        limit=limit,
        offset=offset,
    )
    return list(jobs), total


def cancel_job(session: Session, *, queue: JobQueue | None, user: User, job_id: str) -> Job:
    """Cancel a queued job at once, or ask the workers (through the queue) to stop a running one.

    Raises:
        NotFoundError: no such job, or not the caller's.
        ConflictError: the job has already finished.
    """
    job = repository.get(session, job_id)
    if job is None or not may_act_on(
        user.role,
        user.id,
        job.user_id,
        own=Permission.JOBS_CANCEL_OWN,
        every=Permission.JOBS_CANCEL_ALL,
    ):
        raise NotFoundError("no such job")
    cancelled = repository.cancel_queued(session, job_id)
    if cancelled:
        notify_finished(session, [job_id])
    if cancelled or repository.request_cancel_running(session, job_id):
        session.commit()
        if queue is not None:
            queue.cancel(job_id)
    else:
        session.rollback()
        session.refresh(job)
        raise ConflictError(
            f"the job has already finished ({job.status})", details={"status": job.status}
        )
    session.refresh(job)
    return job


async def cancel_and_settle(
    session: Session, *, queue: JobQueue | None, user: User, job_id: str
) -> Job:
    """cancel_job, then wait up to CANCEL_SETTLE_S for a running job to reach its final state,
    so the caller usually sees `cancelled` rather than a job still `running`."""
    job = await run_in_threadpool(cancel_job, session, queue=queue, user=user, job_id=job_id)
    deadline = time.monotonic() + CANCEL_SETTLE_S
    while not JobStatus(job.status).is_final and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        job = await run_in_threadpool(_reload, session, job.id) or job
    return job


def _reload(session: Session, job_id: str) -> Job | None:
    session.expire_all()
    return repository.get(session, job_id)


def active_counts_by_language(session: Session) -> dict[str, dict[str, int]]:
    """Queued and running jobs per language, for the admin's view of the pool."""
    return repository.active_counts_by_language(session)
