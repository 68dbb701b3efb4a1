"""A job is one run of code for one user, synchronous or queued; the database is its only truth."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.auth.models import new_id
from app.core.db import Base, UTCDateTime, Utf8Bytes, utcnow


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_jobs_user_idempotency_key"),
        Index("ix_jobs_user_created", "user_id", "created_at"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_lease", "status", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(8), default="async")  # "sync" or "async"
    language: Mapped[str] = mapped_column(String(32))
    code: Mapped[str] = mapped_column(Utf8Bytes())
    stdin: Mapped[str | None] = mapped_column(Utf8Bytes(), default=None)
    timeout_s: Mapped[float] = mapped_column(Float)
    # JSON: a list of strings, and a list of {name, content (base64)}; None when there are none
    args: Mapped[str | None] = mapped_column(Utf8Bytes(), default=None)
    files: Mapped[str | None] = mapped_column(Utf8Bytes(), default=None)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Where the finished job is delivered (a webhook), and the caller's own labels for it.
    callback_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, default=None)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    stdout: Mapped[str | None] = mapped_column(Utf8Bytes(), default=None)
    stderr: Mapped[str | None] = mapped_column(Utf8Bytes(), default=None)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    execution_time_s: Mapped[float | None] = mapped_column(Float, default=None)
    timed_out: Mapped[bool] = mapped_column(Boolean, default=False)
    memory_exceeded: Mapped[bool] = mapped_column(Boolean, default=False)
    output_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    # the compile step of a compiled language (all None for an interpreter)
    compile_output: Mapped[str | None] = mapped_column(Utf8Bytes(), default=None)
    compile_exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    compile_time_s: Mapped[float | None] = mapped_column(Float, default=None)
    compile_cached: Mapped[bool | None] = mapped_column(Boolean, default=None)
    # what the run's process tree used (None when the sandbox did not report it)
    cpu_time_ms: Mapped[float | None] = mapped_column(Float, default=None)
    wall_time_ms: Mapped[float | None] = mapped_column(Float, default=None)
    peak_memory_kb: Mapped[int | None] = mapped_column(Integer, default=None)
    # The node that holds the job (queued and claimed, or running) and until when: see
    # app/core/leases.py. NULL once the job is stored final, or while nobody has claimed it.
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
