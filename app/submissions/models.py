"""A submission, its test cases and its metadata; the database is their only truth.

Metadata lives in a side table of (key, value) rows indexed by key and value, so a filter such as
`metadata.lesson_id=7` is one indexed lookup on SQLite and PostgreSQL alike (no JSON operators
that only one of them has).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.auth.models import new_id
from app.core.db import Base, UTCDateTime, Utf8Bytes, utcnow


class SubmissionStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self not in (SubmissionStatus.QUEUED, SubmissionStatus.RUNNING)


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    WRONG_ANSWER = "wrong_answer"
    TIME_LIMIT_EXCEEDED = "time_limit_exceeded"
    MEMORY_LIMIT_EXCEEDED = "memory_limit_exceeded"
    RUNTIME_ERROR = "runtime_error"
    COMPILATION_ERROR = "compilation_error"
    OUTPUT_LIMIT_EXCEEDED = "output_limit_exceeded"
    INTERNAL_ERROR = "internal_error"


class CompareMode(StrEnum):
    EXACT = "exact"
    TRIM = "trim"
    TOKENS = "tokens"
    FLOAT = "float"


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_submissions_user_idempotency_key"),
        Index("ix_submissions_user_created", "user_id", "created_at"),
        Index("ix_submissions_status_created", "status", "created_at"),
        Index("ix_submissions_language_created", "language", "created_at"),
        Index("ix_submissions_verdict_created", "verdict", "created_at"),
        Index("ix_submissions_created", "created_at"),
        Index("ix_submissions_lease", "status", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    language: Mapped[str] = mapped_column(String(32))
    code: Mapped[str] = mapped_column(Utf8Bytes())
    files: Mapped[str | None] = mapped_column(Utf8Bytes(), default=None)  # as a job keeps them
    compare: Mapped[str] = mapped_column(String(8), default=CompareMode.TRIM.value)
    abs_tol: Mapped[float] = mapped_column(Float, default=0.0)
    rel_tol: Mapped[float] = mapped_column(Float, default=0.0)
    memory_mb: Mapped[int] = mapped_column(Integer)
    callback_url: Mapped[str | None] = mapped_column(String(2048), default=None)

    status: Mapped[str] = mapped_column(String(16), default=SubmissionStatus.QUEUED.value)
    verdict: Mapped[str | None] = mapped_column(String(32), default=None)
    passed: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Utf8Bytes(), default=None)  # why it failed
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)

    compile_output: Mapped[str | None] = mapped_column(Utf8Bytes(), default=None)
    compile_exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    compile_time_s: Mapped[float | None] = mapped_column(Float, default=None)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The node grading it (or holding it queued) and until when (app/core/leases.py).
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class SubmissionCase(Base):
    """One test case: what it gives the program, what it expects, and once run what happened."""

    __tablename__ = "submission_cases"

    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0-based, in request order
    stdin: Mapped[str] = mapped_column(Utf8Bytes())
    expected_output: Mapped[str] = mapped_column(Utf8Bytes())
    args: Mapped[str | None] = mapped_column(Utf8Bytes(), default=None)
    timeout_s: Mapped[float] = mapped_column(Float)

    verdict: Mapped[str | None] = mapped_column(String(32), default=None)
    time_ms: Mapped[float | None] = mapped_column(Float, default=None)
    memory_kb: Mapped[int | None] = mapped_column(Integer, default=None)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    stdout: Mapped[str | None] = mapped_column(Utf8Bytes(), default=None)
    stderr: Mapped[str | None] = mapped_column(Utf8Bytes(), default=None)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)


class SubmissionMetadata(Base):
    """One `metadata` entry of a submission, a row so that filters on it use an index."""

    __tablename__ = "submission_metadata"
    __table_args__ = (Index("ix_submission_metadata_key_value", "key", "value", "submission_id"),)

    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
