"""Graded submissions: submit (202), submit a batch, read, list (with metadata filters), cancel.
Another user's submission is always 'not found'."""

from __future__ import annotations

import re
import uuid
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.auth.dependencies import execute_rate_limit, require_permission
from app.auth.models import User
from app.auth.permissions import Permission
from app.core.deps import SessionDep
from app.core.error_schemas import error_responses
from app.core.errors import AppError, ValidationAppError
from app.jobs.spec import LANGUAGE_PATTERN
from app.sandbox.dependencies import SandboxDep
from app.submissions import service
from app.submissions.callbacks import RESOURCE
from app.submissions.dependencies import SubmissionQueueDep
from app.submissions.models import SubmissionStatus, Verdict
from app.submissions.schemas import (
    BatchBody,
    BatchError,
    BatchItemResult,
    BatchResult,
    SubmissionAccepted,
    SubmissionPage,
    SubmissionRead,
    SubmissionSummary,
)
from app.submissions.spec import (
    METADATA_KEY_PATTERN,
    METADATA_MAX_ENTRIES,
    METADATA_MAX_VALUE_CHARS,
    SubmissionBody,
    SubmissionSpec,
    resolve_submission,
)
from app.webhooks.service import deliveries_for

if TYPE_CHECKING:
    from app.sandbox.manager import SandboxManager

router = APIRouter(prefix="/submissions", tags=["submissions"])

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
        description="retrying with the same key returns the same submission instead of a new one",
    ),
]
METADATA_PREFIX = "metadata."


@router.post(
    "",
    response_model=SubmissionAccepted,
    status_code=HTTPStatus.ACCEPTED,
    summary="Queue a program to be graded against test cases; answers once it is stored",
    dependencies=[Depends(execute_rate_limit)],
    responses=error_responses(400, 401, 403, 413, 415, 422, 429, 503),
)
def submit_submission(
    body: SubmissionBody,
    user: Submitter,
    request: Request,
    response: Response,
    session: SessionDep,
    sandbox: SandboxDep,
    queue: SubmissionQueueDep,
    idempotency_key: IdempotencyKey = None,
) -> SubmissionAccepted:
    """Each case runs as a fresh process on a fresh scratch; a compiled language compiles once.
    Poll `Location` (or list with filters) for the verdict."""
    spec = resolve_submission(settings=request.app.state.settings, manager=sandbox, body=body)
    submission, replayed = service.submit(
        session, queue=queue, user=user, spec=spec, idempotency_key=idempotency_key
    )
    location = f"{request.url.path.rstrip('/')}/{submission.id}"
    response.headers["Location"] = location
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return SubmissionAccepted(
        submission_id=submission.id,
        status=submission.status,
        submitted_at=submission.created_at,
        location=location,
        total=submission.total,
        queue_depth=queue.stats()["depth"] if queue is not None else 0,
    )


def _resolve_item(
    request: Request, sandbox: SandboxManager | None, item: dict[str, Any]
) -> SubmissionSpec:
    try:
        body = SubmissionBody.model_validate(item)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise ValidationAppError("the submission is not valid", details=errors) from None
    return resolve_submission(settings=request.app.state.settings, manager=sandbox, body=body)


@router.post(
    "/batch",
    response_model=BatchResult,
    status_code=HTTPStatus.OK,
    summary="Queue up to 20 submissions; each item is accepted or refused on its own",
    dependencies=[Depends(execute_rate_limit)],
    responses=error_responses(401, 403, 413, 415, 422, 429, 503),
)
def batch_submissions(
    body: BatchBody,
    user: Submitter,
    request: Request,
    session: SessionDep,
    sandbox: SandboxDep,
    queue: SubmissionQueueDep,
) -> BatchResult:
    """200 with one entry per item, in order: `outcome: "accepted"` with `submission_id` and
    `location` (committed and queued), or `outcome: "refused"` with `error` `{code, message,
    details}` exactly as `POST /submissions` would have refused it (nothing stored for it).
    The counts `accepted` + `refused` always equal the number of items: nothing is accepted
    without being listed. Only a malformed envelope (no `submissions` list, more than 20 items)
    refuses the whole request with a 4xx, and then nothing is stored."""
    specs: list[SubmissionSpec | AppError] = []
    for item in body.submissions:
        try:
            specs.append(_resolve_item(request, sandbox, item))
        except AppError as exc:
            specs.append(exc)
    items = service.submit_batch(session, queue=queue, user=user, specs=specs)
    path = request.url.path.rsplit("/", 1)[0]
    results = [
        BatchItemResult(
            index=item.index,
            outcome="accepted",
            submission_id=item.submission.id,
            location=f"{path}/{item.submission.id}",
        )
        if item.submission is not None
        else BatchItemResult(
            index=item.index,
            outcome="refused",
            error=BatchError.from_error(item.error) if item.error else None,
        )
        for item in items
    ]
    accepted = sum(result.outcome == "accepted" for result in results)
    return BatchResult(accepted=accepted, refused=len(results) - accepted, items=results)


def _metadata_filters(request: Request) -> dict[str, str]:
    """`metadata.<key>=<value>` query parameters (not declarable one by one in OpenAPI)."""
    filters = {}
    for name, value in request.query_params.multi_items():
        if not name.startswith(METADATA_PREFIX):
            continue
        key = name.removeprefix(METADATA_PREFIX)
        if not re.fullmatch(METADATA_KEY_PATTERN, key) or len(value) > METADATA_MAX_VALUE_CHARS:
            raise ValidationAppError(
                "a metadata filter is metadata.<key>=<value>, key 1-64 of [A-Za-z0-9_-], "
                f"value up to {METADATA_MAX_VALUE_CHARS} characters",
                details={"field": name[:80]},
            )
        if key in filters:
            raise ValidationAppError("a metadata filter is given twice", details={"field": name})
        filters[key] = value
    if len(filters) > METADATA_MAX_ENTRIES:
        raise ValidationAppError(
            f"at most {METADATA_MAX_ENTRIES} metadata filters", details={"field": "metadata"}
        )
    return filters


@router.get(
    "",
    response_model=SubmissionPage,
    summary="List submissions, newest first; filter by status, language, verdict and metadata",
    responses=error_responses(401, 403, 422),
)
def list_submissions(
    request: Request,
    user: Reader,
    session: SessionDep,
    status: SubmissionStatus | None = None,
    language: Annotated[
        str | None, Query(min_length=1, max_length=32, pattern=LANGUAGE_PATTERN)
    ] = None,
    verdict: Verdict | None = None,
    user_id: Annotated[uuid.UUID | None, Query(description="admins only")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SubmissionPage:
    """Metadata filters are extra query parameters `metadata.<key>=<value>` (e.g.
    `?metadata.lesson_id=7&metadata.exercise=fizzbuzz`), all of which must match; users see
    their own submissions, admins everyone's (or one user's with `user_id`)."""
    filters = {
        column: str(value)
        for column, value in (("status", status), ("language", language), ("verdict", verdict))
        if value is not None
    }
    found, total = service.list_submissions(
        session,
        user=user,
        user_filter=str(user_id) if user_id else None,
        filters=filters,
        metadata=_metadata_filters(request),
        limit=limit,
        offset=offset,
    )
    metadata = service.metadata_for(session, found)
    items = [SubmissionSummary.from_row(s, metadata[s.id]) for s in found]
    return SubmissionPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{submission_id}",
    response_model=SubmissionRead,
    summary="One submission: status, verdict, compile step and every case's result",
    responses=error_responses(401, 403, 404, 422),
)
def read_submission(submission_id: uuid.UUID, user: Reader, session: SessionDep) -> SubmissionRead:
    submission = service.get_submission(session, user=user, submission_id=str(submission_id))
    cases, metadata = service.details_of(session, submission)
    deliveries = deliveries_for(session, RESOURCE, submission.id)
    return SubmissionRead.from_rows(submission, cases, metadata, deliveries)


@router.post(
    "/{submission_id}/cancel",
    response_model=SubmissionRead,
    summary="Cancel a queued or running submission",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def cancel_submission(
    submission_id: uuid.UUID, user: Canceller, session: SessionDep, queue: SubmissionQueueDep
) -> SubmissionRead:
    """Queued: cancelled at once. Running: the running case is killed, no further case runs,
    and this waits up to two seconds to answer with the final state. Ended: 409."""
    submission = await service.cancel_and_settle(
        session, queue=queue, user=user, submission_id=str(submission_id)
    )
    cases, metadata = await run_in_threadpool(service.details_of, session, submission)
    deliveries = await run_in_threadpool(deliveries_for, session, RESOURCE, submission.id)
    return SubmissionRead.from_rows(submission, cases, metadata, deliveries)
