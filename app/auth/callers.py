"""Who a request's bearer token belongs to, for the rate limits (`app.ratelimit`).

The limits count a signed-in caller per user and may exempt admins; they ask this module so that
the rate-limit package needs to know nothing about tokens, users or roles (the dependency runs
one way: auth -> ratelimit).
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from app.auth import repository
from app.auth.dependencies import TOKEN_URL
from app.auth.models import Role
from app.auth.security import TokenType, decode_token
from app.core.config import Settings
from app.core.errors import AppError
from app.ratelimit.keys import Caller


class TokenCallers:
    """`app.ratelimit.keys.CallerIdentity` for this app's JWT access tokens and user table."""

    # Sign-in endpoints count by address only: a token sent along must not move the caller.
    address_only_prefix = TOKEN_URL.rsplit("/", 1)[0] + "/"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def caller(self, token: str) -> Caller | None:
        """The user behind a valid access token (signature only, no database), else None."""
        try:
            claims = decode_token(token, settings=self.settings, expected_type=TokenType.ACCESS)
        except AppError:
            return None
        return Caller(
            key=f"user:{claims.sub}",
            claims_admin=claims.role == Role.ADMIN.value,
            user_id=claims.sub,
        )

    async def is_admin_now(self, caller: Caller, scope: Scope) -> bool:
        """True only when the database says the caller is an active admin now.

        Asked only for tokens that claim admin, so ordinary callers cost no database round trip;
        a demoted or deactivated admin loses the exemption with their next request.
        """
        if not caller.claims_admin or caller.user_id is None:
            return False
        session_factory = scope["app"].state.session_factory
        return await run_in_threadpool(_is_active_admin, session_factory, caller.user_id)


def _is_active_admin(session_factory: sessionmaker[Session], user_id: str) -> bool:
    with session_factory() as session:
        user = repository.get_user(session, user_id)
        return user is not None and user.is_active and user.role == Role.ADMIN.value
