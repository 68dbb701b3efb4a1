"""What the jobs endpoints answer, and how a stored job becomes each answer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, Field

from app.jobs.extras import load_args, load_files
from app.jobs.models import Job, JobStatus
from app.jobs.outcome import CompileOutcome, UsageOutcome
from app.jobs.results import is_success
from app.webhooks.schemas import DeliveryView


def _summary_fields(job: Job) -> dict[str, Any]:
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
        "metadata": dict(job.metadata_ or {}),
    }
    if JobStatus(job.status).is_final:
        fields |= {
            "success": is_success(job),
            "exit_code": job.exit_code,
            "execution_time": job.execution_time_s,
            "timed_out": job.timed_out,
            "memory_exceeded": job.memory_exceeded,
            "output_truncated": job.output_truncated,
            "compile": CompileOutcome.from_job(job),
            "usage": UsageOutcome.from_job(job),
        }
    return fields


class JobSummary(BaseModel):
    job_id: str
    user_id: str
    mode: str
    language: str
    status: JobStatus
    cancel_requested: bool
    timeout: float
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_wait: float | None = Field(description="seconds between submission and start")
    metadata: dict[str, str] = Field(description="the caller's own labels, as submitted")
    success: bool | None = None
    exit_code: int | None = None
    execution_time: float | None = None
    timed_out: bool | None = None
    memory_exceeded: bool | None = None
    output_truncated: bool | None = None
    compile: CompileOutcome | None = Field(default=None, description="null for interpreters")
    usage: UsageOutcome | None = None

    @classmethod
    def from_job(cls, job: Job) -> Self:
        return cls(**_summary_fields(job))


class JobRead(JobSummary):
    """One job; the result fields are filled once it has finished."""

    code: str
    stdin: str | None
    args: list[str]
    files: list[str] = Field(description="the names of the extra files")
    output: str | None = None
    error: str | None = None
    callback_url: str | None = None
    deliveries: list[DeliveryView] = Field(
        default_factory=list,
        description="webhook deliveries of the finished job to callback_url, with their state",
    )

    @classmethod
    def from_job(cls, job: Job, deliveries: Sequence[DeliveryView] = ()) -> Self:
        final = JobStatus(job.status).is_final
        return cls(
            **_summary_fields(job),
            callback_url=job.callback_url,
            deliveries=list(deliveries),
            code=job.code,
            stdin=job.stdin,
            args=list(load_args(job.args)),
            files=[extra.name for extra in load_files(job.files)],
            output=(job.stdout or "") if final else None,
            error=(job.stderr or "") if final else None,
        )


class JobAccepted(BaseModel):
    job_id: str
    status: JobStatus
    submitted_at: datetime
    location: str
    queue_depth: int
    expected_wait: float = Field(description="seconds, estimated from recent run times")


class JobPage(BaseModel):
    items: list[JobSummary]
    total: int
    limit: int
    offset: int
