"""Every SQL statement about users and refresh tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.auth.models import RefreshToken, Role, User
from app.core.db import utcnow


def username_key(username: str) -> str:
    """The case-insensitive identity of a username: "Alice" and "alice" are one account."""
    return username.strip().casefold()


def get_user(session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


def get_user_by_username(session: Session, username: str) -> User | None:
    key = username_key(username)
    if "\x00" in key:
        # No username has one (the pattern refuses it), and PostgreSQL refuses it in a query.
        return None
    return session.scalar(select(User).where(User.username_key == key))


def add_user(session: Session, user: User) -> User:
    session.add(user)
    session.flush()
    return user


def list_users(session: Session, *, limit: int, offset: int) -> Sequence[User]:
    statement = select(User).order_by(User.created_at, User.id).limit(limit).offset(offset)
    return session.scalars(statement).all()


def count_users(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0


def count_active_admins(session: Session) -> int:
    statement = (
        select(func.count())
        .select_from(User)
        .where(User.role == Role.ADMIN.value, User.is_active.is_(True))
    )
    return session.scalar(statement) or 0


def add_refresh_token(
    session: Session, *, jti: str, user_id: str, family_id: str, expires_at: datetime
) -> RefreshToken:
    row = RefreshToken(jti=jti, user_id=user_id, family_id=family_id, expires_at=expires_at)
    session.add(row)
    session.flush()
    return row


def get_refresh_token(session: Session, jti: str) -> RefreshToken | None:
    return session.get(RefreshToken, jti)


def consume_refresh_token(session: Session, *, jti: str, replaced_by: str) -> bool:
    """Revoke one live token atomically; False when it was already revoked (a reuse or a race)."""
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.jti == jti, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow(), replaced_by=replaced_by)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def revoke_refresh_family(session: Session, family_id: str) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def revoke_user_refresh_tokens(session: Session, user_id: str) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
