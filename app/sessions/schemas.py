"""What the sessions endpoints take and answer."""

from __future__ import annotations

from datetime import datetime
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from app.code.schemas import RunOutcome
from app.jobs.outcome import UsageOutcome
from app.jobs.spec import LANGUAGE_PATTERN, SCHEMA_MAX_CODE_CHARS, SCHEMA_MAX_TIMEOUT_S
from app.sandbox.session import CellResult
from app.sessions.live import LiveSession
from app.sessions.models import CodeSession, SessionStatus

# Hard ceilings for the schema; SESSION_IDLE_TIMEOUT_S and SESSION_MAX_LIFETIME_S are the
# configured ones, checked by the service.
SCHEMA_MAX_LIFETIME_S = 7 * 24 * 3600.0


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    language: str = Field(default="python", min_length=1, max_length=32, pattern=LANGUAGE_PATTERN)
    idle_timeout_s: float | None = Field(
        default=None,
        ge=1,
        le=SCHEMA_MAX_LIFETIME_S,
        description="end the session after this long without a cell or file operation; "
        "defaults to and at most SESSION_IDLE_TIMEOUT_S",
    )
    max_lifetime_s: float | None = Field(
        default=None,
        ge=1,
        le=SCHEMA_MAX_LIFETIME_S,
        description="end the session this long after it was created; defaults to and at most "
        "SESSION_MAX_LIFETIME_S",
    )


class CellBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=SCHEMA_MAX_CODE_CHARS, examples=["x = 41\nx + 1"])
    stdin: str | None = Field(default=None, max_length=SCHEMA_MAX_CODE_CHARS)
    timeout: float | None = Field(
        default=None,
        ge=0.1,
        le=SCHEMA_MAX_TIMEOUT_S,
        description="seconds; defaults to RUN_DEFAULT_TIMEOUT_S, at most RUN_MAX_TIMEOUT_S",
    )


class SessionRead(BaseModel):
    session_id: str
    user_id: str
    language: str
    status: str = Field(description="active or ended")
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime = Field(description="when max_lifetime_s ends it, busy or not")
    idle_expires_at: datetime | None = Field(description="when it ends if left idle")
    idle_timeout_s: float
    max_lifetime_s: float
    cells: int
    busy: bool = Field(description="a cell or file operation is in progress")
    ended_at: datetime | None
    end_reason: str | None = Field(
        description="closed, idle_timeout, max_lifetime, service_restart, sandbox_failed or "
        "node_lost (the node that held it died)"
    )

    @classmethod
    def from_live(cls, live: LiveSession) -> Self:
        return cls(
            session_id=live.session_id,
            user_id=live.user_id,
            language=live.language,
            status=SessionStatus.ACTIVE.value,
            created_at=live.created_at,
            last_used_at=live.last_used_at,
            expires_at=live.expires_at,
            idle_expires_at=live.idle_expires_at,
            idle_timeout_s=live.idle_timeout_s,
            max_lifetime_s=live.max_lifetime_s,
            cells=live.cells,
            busy=live.busy,
            ended_at=None,
            end_reason=None,
        )

    @classmethod
    def from_row(cls, row: CodeSession) -> Self:
        return cls(
            session_id=row.id,
            user_id=row.user_id,
            language=row.language,
            status=row.status,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=row.expires_at,
            idle_expires_at=None,
            idle_timeout_s=row.idle_timeout_s,
            max_lifetime_s=row.max_lifetime_s,
            cells=row.cells,
            busy=False,
            ended_at=row.ended_at,
            end_reason=row.end_reason,
        )


class SessionPage(BaseModel):
    items: list[SessionRead]
    total: int
    limit: int
    offset: int


class ArtifactRead(BaseModel):
    type: str = Field(description="image/png")
    data: str = Field(description="base64")
    width: int
    height: int
    size_bytes: int


class CellResponse(RunOutcome):
    session_id: str
    cell: int = Field(description="this cell's number in the session, from 1")
    artifacts: list[ArtifactRead] = Field(
        description="every matplotlib figure the cell left open, as PNG (then closed)"
    )
    artifacts_dropped: int = Field(description="figures over the per-cell count or size limit")
    interrupted: bool = Field(description="the cell timed out and was interrupted; state kept")
    restarted: bool = Field(
        description="the interpreter had to be restarted: every variable and import of the "
        "session is lost (its files are kept)"
    )

    @classmethod
    def from_cell(cls, session_id: str, number: int, cell: CellResult) -> Self:
        run = cell.run
        usage = run.usage
        return cls(
            session_id=session_id,
            cell=number,
            success=run.success,
            output=run.stdout,
            error=run.stderr,
            exit_code=run.exit_code,
            execution_time=run.duration_s,
            timed_out=run.timed_out,
            memory_exceeded=run.memory_exceeded,
            output_truncated=run.output_truncated,
            compile=None,
            usage=UsageOutcome(
                cpu_time_ms=usage.cpu_time_ms,
                wall_time_ms=usage.wall_time_ms,
                peak_memory_kb=usage.peak_memory_kb,
            )
            if usage
            else None,
            artifacts=[
                ArtifactRead(
                    type=item.mime_type,
                    data=item.data_base64,
                    width=item.width,
                    height=item.height,
                    size_bytes=item.size_bytes,
                )
                for item in cell.artifacts
            ],
            artifacts_dropped=cell.artifacts_dropped,
            interrupted=cell.interrupted,
            restarted=cell.restarted,
        )


class SessionFileRead(BaseModel):
    path: str
    size_bytes: int


class SessionFileList(BaseModel):
    files: list[SessionFileRead]
