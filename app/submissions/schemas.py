"""What the submissions endpoints answer, and how stored rows become each answer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, Field

from app.core.errors import AppError
from app.jobs.extras import load_files
from app.submissions.models import (
    CompareMode,
    Submission,
    SubmissionCase,
    SubmissionStatus,
    Verdict,
)
from app.webhooks.schemas import DeliveryView


class CompileReport(BaseModel):
    output: str
    exit_code: int
    time: float | None = Field(description="seconds the compile step took")


class CaseResult(BaseModel):
    """One test case; `verdict` is null until the case has run (or if it never ran)."""

    number: int = Field(description="0-based, in the order the cases were given")
    verdict: Verdict | None
    time_ms: float | None
    memory_kb: int | None
    exit_code: int | None
    stdout: str | None = Field(description="cut at SUBMISSION_STORED_OUTPUT_BYTES")
    stderr: str | None
    truncated: bool = Field(
        description="the output was cut: by the run's output limit or for storage"
    )
    timeout: float

    @classmethod
    def from_row(cls, row: SubmissionCase) -> Self:
        return cls(
            number=row.number,
            verdict=row.verdict,
            time_ms=row.time_ms,
            memory_kb=row.memory_kb,
            exit_code=row.exit_code,
            stdout=row.stdout,
            stderr=row.stderr,
            truncated=row.truncated,
            timeout=row.timeout_s,
        )


class SubmissionSummary(BaseModel):
    submission_id: str
    user_id: str
    language: str
    status: SubmissionStatus
    verdict: Verdict | None = Field(description="once finished: the first case not accepted")
    passed: int
    total: int
    compare: CompareMode
    metadata: dict[str, str]
    callback_url: str | None
    cancel_requested: bool
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = Field(description="why a failed submission failed")

    @classmethod
    def from_row(cls, submission: Submission, metadata: dict[str, str]) -> Self:
        return cls(**_summary_fields(submission, metadata))


def _summary_fields(submission: Submission, metadata: dict[str, str]) -> dict[str, Any]:
    return {
        "submission_id": submission.id,
        "user_id": submission.user_id,
        "language": submission.language,
        "status": submission.status,
        "verdict": submission.verdict,
        "passed": submission.passed,
        "total": submission.total,
        "compare": submission.compare,
        "metadata": metadata,
        "callback_url": submission.callback_url,
        "cancel_requested": submission.cancel_requested,
        "submitted_at": submission.created_at,
        "started_at": submission.started_at,
        "finished_at": submission.finished_at,
        "error": submission.error,
    }


class SubmissionRead(SubmissionSummary):
    """One submission with its program, compile step and every case's result."""

    code: str
    files: list[str] = Field(description="the names of the extra files")
    abs_tol: float
    rel_tol: float
    memory_mb: int
    compile: CompileReport | None = Field(description="null for interpreters and before compiling")
    test_results: list[CaseResult]
    deliveries: list[DeliveryView] = Field(
        default_factory=list,
        description="webhook deliveries of the finished submission to callback_url and their state",
    )

    @classmethod
    def from_rows(
        cls,
        submission: Submission,
        cases: list[SubmissionCase],
        metadata: dict[str, str],
        deliveries: Sequence[DeliveryView] = (),
    ) -> Self:
        compiled = None
        if submission.compile_exit_code is not None:
            compiled = CompileReport(
                output=submission.compile_output or "",
                exit_code=submission.compile_exit_code,
                time=submission.compile_time_s,
            )
        return cls(
            **_summary_fields(submission, metadata),
            code=submission.code,
            files=[extra.name for extra in load_files(submission.files)],
            abs_tol=submission.abs_tol,
            rel_tol=submission.rel_tol,
            memory_mb=submission.memory_mb,
            compile=compiled,
            test_results=[CaseResult.from_row(row) for row in cases],
            deliveries=list(deliveries),
        )


class SubmissionAccepted(BaseModel):
    submission_id: str
    status: SubmissionStatus
    submitted_at: datetime
    location: str
    total: int = Field(description="test cases to grade")
    queue_depth: int


class SubmissionPage(BaseModel):
    items: list[SubmissionSummary]
    total: int
    limit: int
    offset: int


class BatchBody(BaseModel):
    """Up to 20 submissions. Each item is checked on its own: a bad item is refused in the
    answer, it never refuses the others."""

    submissions: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=20,
        json_schema_extra={"items": {"$ref": "#/components/schemas/SubmissionBody"}},
        description="each item is a SubmissionBody (checked one by one)",
    )


class BatchError(BaseModel):
    code: str
    message: str
    details: Any = None

    @classmethod
    def from_error(cls, error: AppError) -> Self:
        return cls(code=error.code.value, message=error.message, details=error.details)


class BatchItemResult(BaseModel):
    """Exactly one of `submission_id` (accepted, queued and committed) or `error` (refused,
    nothing stored) is set."""

    index: int = Field(description="the item's position in the request")
    outcome: Literal["accepted", "refused"]
    submission_id: str | None = None
    location: str | None = None
    error: BatchError | None = Field(default=None, description="as the single POST would answer")


class BatchResult(BaseModel):
    accepted: int
    refused: int
    items: list[BatchItemResult] = Field(description="one per request item, in request order")
