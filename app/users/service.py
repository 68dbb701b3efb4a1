"""Account administration: admins manage roles and activation; one active admin always remains."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlalchemy.orm import Session

from app.auth import repository
from app.auth.models import Role, User
from app.auth.service import check_password_policy, create_user
from app.core.config import Settings
from app.core.errors import ConflictError, NotFoundError

log = structlog.get_logger(__name__)


def list_users(session: Session, *, limit: int, offset: int) -> tuple[Sequence[User], int]:
    """One page of accounts, oldest first, with the total for paging."""
    return repository.list_users(session, limit=limit, offset=offset), repository.count_users(
        session
    )


def get_user(session: Session, *, user_id: str) -> User:
    """The account with this id, or 404."""
    user = repository.get_user(session, user_id)
    if user is None:
        raise NotFoundError("no user with this id")
    return user


def create_user_as_admin(
    session: Session,
    *,
    settings: Settings,
    username: str,
    password: str,
    email: str | None,
    role: Role,
) -> User:
    """Admins create accounts of any role, even while open registration is off."""
    check_password_policy(username=username, password=password, settings=settings)
    return create_user(session, username=username, password=password, email=email, role=role)


def _would_remove_last_admin(session: Session, user: User, *, role: Role, active: bool) -> bool:
    stays_admin = role is Role.ADMIN and active
    is_active_admin = user.role == Role.ADMIN.value and user.is_active
    return is_active_admin and not stays_admin and repository.count_active_admins(session) <= 1


def update_user(
    session: Session,
    *,
    actor: User,
    user_id: str,
    role: Role | None = None,
    is_active: bool | None = None,
) -> User:
    """Change role or activation; either change ends the user's refresh tokens."""
    user = get_user(session, user_id=user_id)
    new_role = role if role is not None else Role(user.role)
    new_active = is_active if is_active is not None else user.is_active
    if _would_remove_last_admin(session, user, role=new_role, active=new_active):
        raise ConflictError("this would leave the service without an active admin")
    changed = new_role.value != user.role or new_active != user.is_active
    if changed:
        user.role, user.is_active = new_role.value, new_active
        repository.revoke_user_refresh_tokens(session, user.id)
        session.flush()
        log.info(
            "user_updated", actor_id=actor.id, target_id=user.id, role=user.role, active=new_active
        )
    return user


def deactivate_user(session: Session, *, actor: User, user_id: str) -> User:
    """Soft delete: the account stays (its jobs keep an owner) but can no longer sign in."""
    return update_user(session, actor=actor, user_id=user_id, is_active=False)
