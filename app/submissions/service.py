"""The rules of submissions: submit (idempotent, one by one or in a batch), who may read, list and
cancel what. Work reaches the workers by id through their queue; this module never imports them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth.models import User, new_id
from app.auth.permissions import Permission, has_permission, may_act_on
from app.core.db import utcnow
from app.core.errors import (
    AppError,
    AuthorizationError,
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
    ValidationAppError,
)
from app.jobs.extras import dump_args, dump_files
from app.jobs.queue import JobQueue, QueuedJob
from app.jobs.service import queue_share_exempt
from app.jobs.spec import SANDBOX_DISABLED
from app.submissions import callbacks, repository
from app.submissions.models import Submission, SubmissionCase, SubmissionStatus
from app.submissions.spec import SubmissionSpec

CANCEL_SETTLE_S = 2.0


def _rows(spec: SubmissionSpec, *, user_id: str, key: str | None) -> tuple[Submission, list]:
    submission = Submission(
        id=new_id(),
        user_id=user_id,
        language=spec.run.language,
        code=spec.run.code,
        files=dump_files(spec.run.files),
        compare=spec.compare.value,
        abs_tol=spec.abs_tol,
        rel_tol=spec.rel_tol,
        memory_mb=spec.memory_mb,
        callback_url=spec.callback_url,
        status=SubmissionStatus.QUEUED.value,
        passed=0,
        total=len(spec.cases),
        idempotency_key=key,
        request_hash=spec.request_hash(),
        created_at=utcnow(),
    )
    cases = [
        SubmissionCase(
            submission_id=submission.id,
            number=number,
            stdin=case.stdin,
            expected_output=case.expected_output,
            args=dump_args(case.args),
            timeout_s=case.timeout_s,
        )
        for number, case in enumerate(spec.cases)
    ]
    return submission, cases


def _replay(submission: Submission, spec: SubmissionSpec) -> Submission:
    if submission.request_hash != spec.request_hash():
        raise ValidationAppError(
            "this Idempotency-Key was already used with a different request body",
            details={"submission_id": submission.id},
        )
    return submission


def submit(
    session: Session,
    *,
    queue: JobQueue | None,
    user: User,
    spec: SubmissionSpec,
    idempotency_key: str | None = None,
) -> tuple[Submission, bool]:
    """Commit a queued submission with its cases and metadata, then queue it; returns it and
    whether it is a replay of the same Idempotency-Key.

    Raises:
        ServiceUnavailableError: no sandbox on this server, or shutting down.
        QuotaExceededError: SUBMISSION_QUEUE_MAX_PER_USER already queued; nothing stored.
        PoolExhaustedError: the submission queue is full; nothing stored.
        ValidationAppError: the Idempotency-Key was used with another body.
    """
    if queue is None:
        raise ServiceUnavailableError(SANDBOX_DISABLED)
    if idempotency_key is not None:
        existing = repository.get_by_idempotency_key(session, user_id=user.id, key=idempotency_key)
        if existing is not None:
            return _replay(existing, spec), True
    with queue.reserve(user.id, share_exempt=queue_share_exempt(user)) as place:
        submission, cases = _rows(spec, user_id=user.id, key=idempotency_key)
        try:
            repository.add(session, submission, cases, spec.metadata)
            session.commit()
        except IntegrityError:
            session.rollback()  # a retry raced the original; the unique (user, key) let one in
            existing = None
            if idempotency_key is not None:
                existing = repository.get_by_idempotency_key(
                    session, user_id=user.id, key=idempotency_key
                )
            if existing is None:
                raise
            return _replay(existing, spec), True
        budget = sum(case.timeout_s for case in spec.cases)
        place.job = QueuedJob(submission.id, user.id, budget)
    return submission, False


@dataclass(frozen=True)
class BatchItem:
    """One item of a batch: accepted with its submission, or refused with its own error."""

    index: int
    submission: Submission | None = None
    error: AppError | None = None


def submit_batch(
    session: Session,
    *,
    queue: JobQueue | None,
    user: User,
    specs: list[SubmissionSpec | AppError],
) -> list[BatchItem]:
    """Each item on its own: an item whose checks failed (an AppError in `specs`) or that the
    queue refuses is refused with that error; every other one is committed and queued. Nothing
    is accepted without being listed as accepted."""
    if queue is None:
        raise ServiceUnavailableError(SANDBOX_DISABLED)
    items = []
    for index, spec in enumerate(specs):
        if isinstance(spec, AppError):
            items.append(BatchItem(index, error=spec))
            continue
        try:
            submission, _ = submit(session, queue=queue, user=user, spec=spec)
        except AppError as exc:
            session.rollback()
            items.append(BatchItem(index, error=exc))
        else:
            items.append(BatchItem(index, submission=submission))
    return items


def get_submission(session: Session, *, user: User, submission_id: str) -> Submission:
    """The submission if the caller may see it; another user's is 'not found'."""
    submission = repository.get(session, submission_id)
    if submission is None or not may_act_on(
        user.role,
        user.id,
        submission.user_id,
        own=Permission.JOBS_READ_OWN,
        every=Permission.JOBS_READ_ALL,
    ):
        raise NotFoundError("no such submission")
    return submission


def list_submissions(
    session: Session,
    *,
    user: User,
    user_filter: str | None,
    filters: dict[str, str],
    metadata: dict[str, str],
    limit: int,
    offset: int,
) -> tuple[list[Submission], int]:
    """Newest first; a caller who may not read everyone's sees only their own."""
    if has_permission(user.role, Permission.JOBS_READ_ALL):
        owner = user_filter
    elif user_filter is None or user_filter == user.id:
        owner = user.id
    else:
        raise AuthorizationError("only admins may list other users' submissions")
    found, total = repository.list_submissions(
        session, user_id=owner, filters=filters, metadata=metadata, limit=limit, offset=offset
    )
    return list(found), total


def cancel_submission(
    session: Session, *, queue: JobQueue | None, user: User, submission_id: str
) -> Submission:
    """Cancel a queued submission at once, or ask its worker to stop a running one.

    Raises:
        NotFoundError: no such submission, or not the caller's.
        ConflictError: it has already finished.
    """
    submission = repository.get(session, submission_id)
    if submission is None or not may_act_on(
        user.role,
        user.id,
        submission.user_id,
        own=Permission.JOBS_CANCEL_OWN,
        every=Permission.JOBS_CANCEL_ALL,
    ):
        raise NotFoundError("no such submission")
    if repository.cancel_queued(session, submission_id):
        callbacks.notify_finished(session, [submission_id])
        session.commit()
        if queue is not None:
            queue.cancel(submission_id)
    elif repository.request_cancel_running(session, submission_id):
        session.commit()
        if queue is not None:
            queue.cancel(submission_id)
    else:
        session.rollback()
        session.refresh(submission)
        raise ConflictError(
            f"the submission has already ended ({submission.status})",
            details={"status": submission.status},
        )
    session.refresh(submission)
    return submission


async def cancel_and_settle(
    session: Session, *, queue: JobQueue | None, user: User, submission_id: str
) -> Submission:
    """cancel_submission, then wait up to CANCEL_SETTLE_S for a running one to end."""
    submission = await run_in_threadpool(
        cancel_submission, session, queue=queue, user=user, submission_id=submission_id
    )
    deadline = time.monotonic() + CANCEL_SETTLE_S
    while not SubmissionStatus(submission.status).is_final and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        submission = await run_in_threadpool(_reload, session, submission.id) or submission
    return submission


def _reload(session: Session, submission_id: str) -> Submission | None:
    session.expire_all()
    return repository.get(session, submission_id)


def details_of(session: Session, submission: Submission) -> tuple[list[SubmissionCase], dict]:
    """The cases and metadata of one submission, for its full answer."""
    cases = list(repository.cases_of(session, submission.id))
    return cases, repository.metadata_of(session, [submission.id])[submission.id]


def metadata_for(session: Session, submissions: list[Submission]) -> dict[str, dict[str, str]]:
    return repository.metadata_of(session, [s.id for s in submissions])
