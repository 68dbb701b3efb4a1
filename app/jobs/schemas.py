"""What the code and jobs endpoints accept and answer; the shapes are the public contract."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.jobs.models import JobStatus

# Hard ceilings for the schema; the configured limits (MAX_CODE_BYTES, RUN_MAX_TIMEOUT_S, ...)
# are checked by the service, because they are known only once the settings are read.
SCHEMA_MAX_CODE_CHARS = 1024 * 1024
SCHEMA_MAX_TIMEOUT_S = 3600.0


class RunBody(BaseModel):
    """One run: the code, its language, what it reads on stdin and how long it may take."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=SCHEMA_MAX_CODE_CHARS, examples=["print('hello')"])
    language: str = Field(
        default="python", min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_+.-]*$"
    )
    stdin: str | None = Field(default=None, max_length=SCHEMA_MAX_CODE_CHARS)
    timeout: float | None = Field(
        default=None,
        ge=1,
        le=SCHEMA_MAX_TIMEOUT_S,
        description="seconds; defaults to RUN_DEFAULT_TIMEOUT_S, at most RUN_MAX_TIMEOUT_S",
    )


class RunOutcome(BaseModel):
    """What a finished run produced; `success` is exit code 0 without a timeout."""

    success: bool
    output: str
    error: str
    exit_code: int | None
    execution_time: float | None = Field(description="seconds")
    timed_out: bool
    memory_exceeded: bool
    output_truncated: bool


class ExecutionResult(RunOutcome):
    job_id: str


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
    success: bool | None = None
    exit_code: int | None = None
    execution_time: float | None = None
    timed_out: bool | None = None
    memory_exceeded: bool | None = None
    output_truncated: bool | None = None


class JobRead(JobSummary):
    """One job; the result fields are filled once it has finished."""

    code: str
    stdin: str | None
    output: str | None = None
    error: str | None = None


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


class LanguageInfo(BaseModel):
    name: str
    display_name: str
    version: str | None
    available: bool


class LanguageList(BaseModel):
    languages: list[LanguageInfo]


class QueueStats(BaseModel):
    depth: int
    capacity: int
    workers: int
    running: int
    accepting: bool
    expected_wait: float = Field(description="seconds a job submitted now would wait")


class PoolStatsReport(BaseModel):
    sandbox_enabled: bool
    pools: dict[str, dict[str, Any]]
    queue: QueueStats
    jobs_by_language: dict[str, dict[str, int]] = Field(
        description="queued and running jobs per language, from the database"
    )


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None
    details: Any = None


class ErrorResponse(BaseModel):
    """The one error shape of the service."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` declaring the error body for each status, so clients and schema
    checkers know every refusal has the same shape."""
    descriptions = {
        400: "bad request, unsupported language or code policy violation",
        401: "no valid access token (`AUTHENTICATION_ERROR`)",
        403: "the caller's role does not allow this (`AUTHORIZATION_ERROR`)",
        404: "no such job, or not yours (`NOT_FOUND`)",
        409: "the job has already finished (`CONFLICT`)",
        413: "the code or stdin is larger than allowed (`PAYLOAD_TOO_LARGE`)",
        415: "the body is not JSON (`UNSUPPORTED_MEDIA_TYPE`)",
        422: "the request is not valid (`VALIDATION_ERROR`)",
        429: "too many requests (`RATE_LIMITED`), see `Retry-After`",
        503: "no sandbox or queue room right now (`POOL_EXHAUSTED`, `SANDBOX_ERROR`)",
    }
    return {
        status: {"model": ErrorResponse, "description": descriptions[status]} for status in statuses
    }
