"""Every SQL statement about sessions. Ending is a conditional UPDATE (active -> ended), so the
reaper, a DELETE and a shutdown can never end the same session twice."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.sessions.models import CodeSession, SessionStatus


def add(db: Session, row: CodeSession) -> CodeSession:
    db.add(row)
    db.flush()
    return row


def remove(db: Session, session_id: str) -> None:
    """A session whose container could not be lent never existed for its caller."""
    db.execute(delete(CodeSession).where(CodeSession.id == session_id))


def get(db: Session, session_id: str) -> CodeSession | None:
    return db.get(CodeSession, session_id)


def active_elsewhere(db: Session, *, node_id: str, limit: int) -> Sequence[CodeSession]:
    """Active sessions other nodes hold (or that predate node ids), oldest first."""
    stmt = (
        select(CodeSession)
        .where(
            CodeSession.status == SessionStatus.ACTIVE.value,
            or_(CodeSession.node_id != node_id, CodeSession.node_id.is_(None)),
        )
        .order_by(CodeSession.created_at)
        .limit(limit)
    )
    return db.scalars(stmt).all()


def list_sessions(
    db: Session, *, user_id: str | None, status: str | None, limit: int, offset: int
) -> tuple[Sequence[CodeSession], int]:
    """A page of sessions, newest first, and how many match in all."""
    conditions: list[Any] = []
    if user_id is not None:
        conditions.append(CodeSession.user_id == user_id)
    if status is not None:
        conditions.append(CodeSession.status == status)
    total = db.scalar(select(func.count()).select_from(CodeSession).where(*conditions)) or 0
    stmt = (
        select(CodeSession)
        .where(*conditions)
        .order_by(CodeSession.created_at.desc(), CodeSession.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return db.scalars(stmt).all(), total


def end(db: Session, session_id: str, *, reason: str, cells: int, last_used_at: datetime) -> bool:
    """active -> ended; False when it had ended already."""
    stmt = (
        update(CodeSession)
        .where(CodeSession.id == session_id, CodeSession.status == SessionStatus.ACTIVE.value)
        .values(
            status=SessionStatus.ENDED.value,
            ended_at=utcnow(),
            end_reason=reason,
            cells=cells,
            last_used_at=last_used_at,
        )
    )
    return db.execute(stmt).rowcount == 1  # type: ignore[attr-defined]


def end_left_behind(db: Session, *, reason: str, node_id: str | None) -> list[tuple[str, str]]:
    """At start-up: the sessions a previous process of this node held are gone with their
    containers (`node_id` None: every active session, the single node's rule). Returns the
    ended sessions' (id, user id), for the session directory."""
    active = [CodeSession.status == SessionStatus.ACTIVE.value]
    if node_id is not None:
        active.append(CodeSession.node_id == node_id)
    rows = [
        (row.id, row.user_id)
        for row in db.execute(select(CodeSession.id, CodeSession.user_id).where(*active))
    ]
    if rows:
        db.execute(
            update(CodeSession)
            .where(CodeSession.id.in_([session_id for session_id, _ in rows]), *active)
            .values(status=SessionStatus.ENDED.value, ended_at=utcnow(), end_reason=reason)
        )
    return rows
