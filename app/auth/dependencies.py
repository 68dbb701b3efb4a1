"""Who is calling and what they may do: the dependencies every protected route uses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.auth import repository
from app.auth.models import Role, User
from app.auth.permissions import Permission, has_permission
from app.auth.security import TokenType, decode_token
from app.core.deps import SettingsDep
from app.core.errors import AuthenticationError, AuthorizationError
from app.ratelimit.dependencies import limit_execution

TOKEN_URL = "/api/v1/auth/login"  # noqa: S105 (a path, not a secret)

# auto_error=False: a missing token becomes our own 401 body, not FastAPI's default one.
oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl=TOKEN_URL,
    auto_error=False,
    description="Sign in with a username and password; the access token is sent as a Bearer token.",
)


async def get_current_user(
    request: Request,
    settings: SettingsDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> User:
    """The active user behind the Bearer access token, or AuthenticationError (401)."""
    if not token:
        raise AuthenticationError("not authenticated: send 'Authorization: Bearer <access token>'")
    claims = decode_token(token, settings=settings, expected_type=TokenType.ACCESS)
    factory = request.app.state.session_factory
    user = await run_in_threadpool(_load_user, factory, claims.sub)
    if user is None or not user.is_active:
        raise AuthenticationError("this account does not exist or is not active")
    # Bound here, in the request's own task, so the access log and every later log line see it.
    request.scope.setdefault("state", {})["user_id"] = user.id
    structlog.contextvars.bind_contextvars(user_id=user.id)
    return user


def _load_user(session_factory: sessionmaker[Session], user_id: str) -> User | None:
    """Read the user in a session of its own, opened and closed in one worker-thread hop: the
    connection goes back to the pool at once instead of staying checked out for the whole request
    (a run can last seconds, and the job it stores needs a connection of its own), and a route
    that needs no session of its own (a run) opens none. The user comes back detached, its
    columns loaded; a route that changes a user loads it in its own session."""
    with session_factory() as session:
        return repository.get_user(session, user_id)


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_permission(*permissions: Permission) -> Callable[[User], Awaitable[User]]:
    """A dependency that yields the current user when their role grants every given permission."""

    async def check_permissions(user: CurrentUser) -> User:
        missing = [str(p) for p in permissions if not has_permission(user.role, p)]
        if missing:
            raise AuthorizationError(
                "your role does not allow this", details={"missing_permissions": missing}
            )
        return user

    return check_permissions


async def execute_rate_limit(request: Request, user: CurrentUser) -> None:
    """RATE_LIMIT_EXECUTE for code execution and job submission, per user; the admin exemption
    follows the role stored in the database (`user` was just loaded from it)."""
    await limit_execution(request, user_id=user.id, is_admin=user.role == Role.ADMIN.value)
