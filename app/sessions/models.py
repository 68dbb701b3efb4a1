"""A session's row: who holds it, its limits, and how it ended. The live kernel is in the
sandbox; the row is what outlives it, so an ended session's id answers 410 after a restart."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.auth.models import new_id
from app.core.db import Base, UTCDateTime, utcnow


class SessionStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


class EndReason(StrEnum):
    CLOSED = "closed"
    IDLE = "idle_timeout"
    EXPIRED = "max_lifetime"
    RESTART = "service_restart"
    SANDBOX_FAILED = "sandbox_failed"
    NODE_LOST = "node_lost"  # the node that held it died (issue 14)


class CodeSession(Base):
    __tablename__ = "code_sessions"
    __table_args__ = (
        Index("ix_code_sessions_user_status", "user_id", "status"),
        Index("ix_code_sessions_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    language: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=SessionStatus.ACTIVE.value)
    idle_timeout_s: Mapped[float] = mapped_column(Float)
    max_lifetime_s: Mapped[float] = mapped_column(Float)
    cells: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    end_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    # The node whose pool lent the container (issue 14): a node that starts ends only its own.
    node_id: Mapped[str | None] = mapped_column(String(64), default=None)
