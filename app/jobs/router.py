"""Queued jobs: submit (202), read, list, cancel. Another user's job is always 'not found'."""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.auth.dependencies import execute_rate_limit, require_permission
from app.auth.models import User
from app.auth.permissions import Permission
from app.core.deps import SessionDep
from app.core.error_schemas import error_responses
from app.jobs import service
from app.jobs.callbacks import RESOURCE
from app.jobs.dependencies import JobQueueDep
from app.jobs.models import JobStatus
from app.jobs.schemas import JobAccepted, JobPage, JobRead, JobSummary
from app.jobs.spec import LANGUAGE_PATTERN, JobBody, resolve_job_options, resolve_run
from app.sandbox.dependencies import SandboxDep
from app.webhooks.dependencies import ResolverDep
from app.webhooks.service import deliveries_for

router = APIRouter(prefix="/jobs", tags=["jobs"])

Submitter = Annotated[User, Depends(require_permission(Permission.EXECUTE_CODE))]
Reader = Annotated[User, Depends(require_permission(Permission.JOBS_READ_OWN))]
Canceller = Annotated[User, Depends(require_permission(Permission.JOBS_CANCEL_OWN))]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="retrying with the same key returns the same job instead of a new one",
    ),
]


@router.post(
    "",
    response_model=JobAccepted,
    status_code=HTTPStatus.ACCEPTED,
    summary="Queue code to run; answers once the job is safely stored",
    dependencies=[Depends(execute_rate_limit)],
    responses=error_responses(400, 401, 403, 413, 415, 422, 429, 503),
)
def submit_job(
    body: JobBody,
    user: Submitter,
    request: Request,
    response: Response,
    session: SessionDep,
    sandbox: SandboxDep,
    queue: JobQueueDep,
    resolver: ResolverDep,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    settings = request.app.state.settings
    spec = resolve_run(settings=settings, manager=sandbox, body=body)
    options = resolve_job_options(settings, body, resolver=resolver)
    job, replayed = service.submit_job(
        session,
        queue=queue,
        user=user,
        spec=spec,
        idempotency_key=idempotency_key,
        options=options,
    )
    location = f"{request.url.path.rstrip('/')}/{job.id}"
    response.headers["Location"] = location
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    stats = queue.stats() if queue is not None else {"depth": 0, "expected_wait": 0.0}
    return JobAccepted(
        job_id=job.id,
        status=job.status,
        submitted_at=job.created_at,
        location=location,
        queue_depth=stats["depth"],
        expected_wait=stats["expected_wait"],
    )


@router.get(
    "",
    response_model=JobPage,
    summary="List jobs, newest first (admins: every user's, or one user's)",
    responses=error_responses(401, 403, 422),
)
def list_jobs(
    user: Reader,
    session: SessionDep,
    status: JobStatus | None = None,
    language: Annotated[
        str | None, Query(min_length=1, max_length=32, pattern=LANGUAGE_PATTERN)
    ] = None,
    user_id: Annotated[uuid.UUID | None, Query(description="admins only")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JobPage:
    jobs, total = service.list_jobs(
        session,
        user=user,
        user_filter=str(user_id) if user_id else None,
        status=status,
        language=language,
        limit=limit,
        offset=offset,
    )
    items = [JobSummary.from_job(job) for job in jobs]
    return JobPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{job_id}",
    response_model=JobRead,
    summary="One job: status, times, and once finished its result",
    responses=error_responses(401, 403, 404, 422),
)
def read_job(job_id: uuid.UUID, user: Reader, session: SessionDep) -> JobRead:
    job = service.get_job(session, user=user, job_id=str(job_id))
    return JobRead.from_job(job, deliveries_for(session, RESOURCE, job.id))


@router.post(
    "/{job_id}/cancel",
    response_model=JobRead,
    summary="Cancel a queued or running job",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def cancel_job(
    job_id: uuid.UUID, user: Canceller, session: SessionDep, queue: JobQueueDep
) -> JobRead:
    """A queued job is cancelled at once; a running one is killed and this waits (up to two
    seconds) to answer with its final state; a finished one is a 409."""
    job = await service.cancel_and_settle(session, queue=queue, user=user, job_id=str(job_id))
    deliveries = await run_in_threadpool(deliveries_for, session, RESOURCE, job.id)
    return JobRead.from_job(job, deliveries)
