"""The rules of runs and jobs: what may run, how a result becomes a job row, who may see what."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.auth.models import User, new_id
from app.auth.permissions import Permission, has_permission
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import (
    AppError,
    AuthorizationError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    ValidationAppError,
)
from app.jobs import policy, repository
from app.jobs.models import Job, JobStatus
from app.jobs.schemas import ExecutionResult, JobRead, JobSummary, RunBody
from app.sandbox.languages import LANGUAGES, get_language
from app.sandbox.types import RunRequest, RunResult

if TYPE_CHECKING:
    from app.jobs.queue import JobRunner
    from app.observability.metrics import Metrics
    from app.sandbox.manager import SandboxManager

SANDBOX_DISABLED = "code execution is disabled on this server (SANDBOX_ENABLED=false)"


@dataclass(frozen=True)
class RunSpec:
    """A run request checked against the configured limits, with every default filled in."""

    code: str
    language: str
    stdin: str | None
    timeout_s: float

    def request_hash(self) -> str:
        canonical = json.dumps(
            [self.code, self.language, self.stdin, self.timeout_s], ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def _size_of(field: str, value: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationAppError(
            f"{field} is not valid UTF-8 text", details={"field": field}
        ) from None


def _check_size(field: str, value: str, limit: int) -> None:
    if _size_of(field, value) > limit:
        raise PayloadTooLargeError(
            f"{field} is larger than {limit} bytes", details={"field": field, "max_bytes": limit}
        )


def resolve_run(*, settings: Settings, manager: SandboxManager | None, body: RunBody) -> RunSpec:
    """Check a run against the limits, the installed languages and the optional policy.

    Raises:
        ServiceUnavailableError: the sandbox is disabled on this server.
        PayloadTooLargeError / ValidationAppError: code, stdin or timeout over the limits.
        UnsupportedLanguageError: with details.supported.
        CodePolicyViolationError: only when CODE_POLICY_ENABLED.
    """
    if manager is None:
        raise ServiceUnavailableError(SANDBOX_DISABLED)
    _check_size("code", body.code, settings.max_code_bytes)
    if body.stdin is not None:
        _check_size("stdin", body.stdin, settings.max_stdin_bytes)
    timeout = settings.run_default_timeout_s if body.timeout is None else body.timeout
    if timeout > settings.run_max_timeout_s:
        raise ValidationAppError(
            f"timeout may be at most {settings.run_max_timeout_s:g} seconds",
            details={"field": "timeout", "max": settings.run_max_timeout_s},
        )
    installed = set(manager.pools) or set(LANGUAGES)
    get_language(body.language, installed)
    policy.check_code(settings, code=body.code, language=body.language)
    return RunSpec(body.code, body.language, body.stdin, float(timeout))


# ---------------------------------------------------------------------- results


def outcome_values(result: RunResult) -> dict[str, Any]:
    """The job columns for a run that happened."""
    if result.cancelled:
        status = JobStatus.CANCELLED
    elif result.timed_out:
        status = JobStatus.TIMED_OUT
    elif result.exit_code == 0:
        status = JobStatus.SUCCEEDED
    else:
        status = JobStatus.FAILED
    return {
        "status": status.value,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "exit_code": result.exit_code,
        "execution_time_s": result.duration_s,
        "timed_out": result.timed_out,
        "memory_exceeded": result.memory_exceeded,
        "output_truncated": result.output_truncated,
    }


def failure_values(reason: str) -> dict[str, Any]:
    """The job columns for a run that could not happen; the reason is the error text."""
    return {"status": JobStatus.FAILED.value, "stdout": "", "stderr": reason, "exit_code": None}


def run_request_for(settings: Settings, job: Job) -> RunRequest:
    """The sandbox request of a job; the job id is the run id, so cancel can find the run."""
    return RunRequest(
        code=job.code,
        language=job.language,
        stdin=job.stdin or "",
        timeout_s=job.timeout_s,
        output_limit_bytes=settings.run_output_limit_bytes,
        run_id=job.id,
    )


def _is_success(job: Job) -> bool:
    return job.status == JobStatus.SUCCEEDED.value and job.exit_code == 0 and not job.timed_out


def execution_result(job: Job) -> ExecutionResult:
    return ExecutionResult(
        job_id=job.id,
        success=_is_success(job),
        output=job.stdout or "",
        error=job.stderr or "",
        exit_code=job.exit_code,
        execution_time=job.execution_time_s,
        timed_out=job.timed_out,
        memory_exceeded=job.memory_exceeded,
        output_truncated=job.output_truncated,
    )


def _summary_fields(job: Job) -> dict[str, Any]:
    final = JobStatus(job.status).is_final
    queue_wait = (job.started_at - job.created_at).total_seconds() if job.started_at else None
    fields: dict[str, Any] = {
        "job_id": job.id,
        "user_id": job.user_id,
        "mode": job.mode,
        "language": job.language,
        "status": job.status,
        "cancel_requested": job.cancel_requested,
        "timeout": job.timeout_s,
        "submitted_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "queue_wait": max(0.0, queue_wait) if queue_wait is not None else None,
    }
    if final:
        fields |= {
            "success": _is_success(job),
            "exit_code": job.exit_code,
            "execution_time": job.execution_time_s,
            "timed_out": job.timed_out,
            "memory_exceeded": job.memory_exceeded,
            "output_truncated": job.output_truncated,
        }
    return fields


def job_summary(job: Job) -> JobSummary:
    return JobSummary(**_summary_fields(job))


def job_read(job: Job) -> JobRead:
    final = JobStatus(job.status).is_final
    return JobRead(
        **_summary_fields(job),
        code=job.code,
        stdin=job.stdin,
        output=(job.stdout or "") if final else None,
        error=(job.stderr or "") if final else None,
    )


# ---------------------------------------------------------------------- synchronous runs


def _new_job(spec: RunSpec, *, user_id: str, mode: str, **fields: Any) -> Job:
    """A job row for `spec`, not yet added to a session."""
    return Job(
        id=new_id(),
        user_id=user_id,
        mode=mode,
        language=spec.language,
        code=spec.code,
        stdin=spec.stdin,
        timeout_s=spec.timeout_s,
        created_at=utcnow(),
        **fields,
    )


def execute_sync(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    manager: SandboxManager,
    metrics: Metrics | None,
    user_id: str,
    spec: RunSpec,
) -> ExecutionResult:
    """Run now and store the run as a finished job in one commit (blocking: call in a thread).

    Raises:
        SandboxError / PoolExhaustedError: the run could not happen; the job is stored as failed.
    """
    job = _new_job(spec, user_id=user_id, mode="sync")
    job.started_at = job.created_at
    error: AppError | None = None
    try:
        values = outcome_values(manager.run(run_request_for(settings, job)))
    except AppError as exc:
        error, values = exc, failure_values(exc.message)
    for name, value in values.items():
        setattr(job, name, value)
    job.finished_at = utcnow()
    with session_factory() as session:
        repository.add(session, job)
        session.commit()
    if metrics is not None:
        metrics.observe_run(
            language=job.language,
            mode="sync",
            outcome=job.status,
            duration_s=job.execution_time_s,
        )
    if error is not None:
        raise error
    return execution_result(job)


# ---------------------------------------------------------------------- asynchronous jobs


def _replay(job: Job, spec: RunSpec) -> Job:
    if job.request_hash != spec.request_hash():
        raise ValidationAppError(
            "this Idempotency-Key was already used with a different request body",
            details={"job_id": job.id},
        )
    return job


def submit_job(
    session: Session,
    *,
    runner: JobRunner | None,
    user_id: str,
    spec: RunSpec,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    """Commit a queued job and hand it to the runner; returns the job and whether it is a replay.

    Raises:
        PoolExhaustedError: the queue is full; nothing is stored.
        ValidationAppError: the Idempotency-Key was used with another body.
    """
    if runner is None:
        raise ServiceUnavailableError(SANDBOX_DISABLED)
    if idempotency_key is not None:
        existing = repository.get_by_idempotency_key(session, user_id=user_id, key=idempotency_key)
        if existing is not None:
            return _replay(existing, spec), True
    with runner.reserve() as slot:
        job = _new_job(
            spec,
            user_id=user_id,
            mode="async",
            status=JobStatus.QUEUED.value,
            idempotency_key=idempotency_key,
            request_hash=spec.request_hash(),
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
            return _replay(existing, spec), True
        slot.job_id = job.id
    return job, False


def _can(user: User, own: Permission, every: Permission, job: Job) -> bool:
    return (job.user_id == user.id and has_permission(user.role, own)) or has_permission(
        user.role, every
    )


def get_job(session: Session, *, user: User, job_id: str) -> Job:
    """The job if the caller may see it; another user's job is 'not found', never 'forbidden'."""
    job = repository.get(session, job_id)
    if job is None or not _can(user, Permission.JOBS_READ_OWN, Permission.JOBS_READ_ALL, job):
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


def cancel_job(session: Session, *, runner: JobRunner | None, user: User, job_id: str) -> Job:
    """Cancel a queued job at once, or ask the runner to kill a running one.

    Raises:
        NotFoundError: no such job, or not the caller's.
        ConflictError: the job has already finished.
    """
    job = repository.get(session, job_id)
    if job is None or not _can(user, Permission.JOBS_CANCEL_OWN, Permission.JOBS_CANCEL_ALL, job):
        raise NotFoundError("no such job")
    if repository.cancel_queued(session, job_id):
        session.commit()
    elif repository.request_cancel_running(session, job_id):
        session.commit()
        if runner is not None:
            runner.cancel(job_id)
    else:
        session.rollback()
        session.refresh(job)
        raise ConflictError(
            f"the job has already finished ({job.status})", details={"status": job.status}
        )
    session.refresh(job)
    return job


def reload(session: Session, job_id: str) -> Job | None:
    session.expire_all()
    return repository.get(session, job_id)


def active_counts_by_language(session: Session) -> dict[str, dict[str, int]]:
    """Queued and running jobs per language, for the admin's view of the pool."""
    return repository.active_counts_by_language(session)
