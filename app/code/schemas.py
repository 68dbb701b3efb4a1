"""What `POST /code/execute` answers, and how the stored run becomes that answer."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field

from app.jobs.models import Job
from app.jobs.outcome import CompileOutcome, UsageOutcome
from app.jobs.results import is_success


class RunOutcome(BaseModel):
    """What a finished run produced; `success` is exit code 0 without a timeout (and, for a
    compiled language, a compile that succeeded)."""

    success: bool
    output: str
    error: str
    exit_code: int | None
    execution_time: float | None = Field(description="seconds")
    timed_out: bool
    memory_exceeded: bool
    output_truncated: bool
    compile: CompileOutcome | None = Field(description="null for interpreted languages")
    usage: UsageOutcome | None


class ExecutionResult(RunOutcome):
    job_id: str

    @classmethod
    def from_job(cls, job: Job) -> Self:
        return cls(
            job_id=job.id,
            success=is_success(job),
            output=job.stdout or "",
            error=job.stderr or "",
            exit_code=job.exit_code,
            execution_time=job.execution_time_s,
            timed_out=job.timed_out,
            memory_exceeded=job.memory_exceeded,
            output_truncated=job.output_truncated,
            compile=CompileOutcome.from_job(job),
            usage=UsageOutcome.from_job(job),
        )
