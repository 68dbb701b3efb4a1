"""The limits that routes ask for (execute, login), and how an app gets its limits.

Nothing here knows users: the caller of a request is resolved by the identity the app installs
(`app.auth.callers`), and the execute limit is counted for a user id the auth domain hands in
(`app.auth.dependencies.execute_rate_limit`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from starlette.requests import HTTPConnection

from app.core.config import Settings
from app.core.errors import AuthenticationError
from app.ratelimit.counter import RateLimits
from app.ratelimit.keys import CallerIdentity, client_ip, username_key
from app.ratelimit.middleware import RateLimitMiddleware, record_limit_state

log = structlog.get_logger(__name__)


def install_rate_limiting(app: FastAPI, settings: Settings, identity: CallerIdentity) -> None:
    """Attach this app's limits and the default-limit middleware; nothing at all when disabled."""
    if not settings.rate_limit_enabled:
        app.state.rate_limits = None
        return
    limits = RateLimits(settings, identity)
    app.state.rate_limits = limits
    app.state.limiter = limits.limiter  # where slowapi's decorators look for it
    app.add_middleware(RateLimitMiddleware, limits=limits)


def _limits_of(request: HTTPConnection) -> RateLimits | None:
    return getattr(request.app.state, "rate_limits", None)


async def limit_execution(request: HTTPConnection, *, user_id: str, is_admin: bool) -> None:
    """RATE_LIMIT_EXECUTE per user on code execution and job submission (a request, or a
    WebSocket run); admins may be exempt."""
    limits = _limits_of(request)
    if limits is None or limits.admin_exempt(is_admin=is_admin):
        return
    allowed, state = await limits.hit(limits.execute_limit, "execute", f"user:{user_id}")
    record_limit_state(request.scope, state)
    if not allowed:
        log.info("rate_limited", limit="execute")
        raise state.refusal("too many code executions; wait for the window to reset")


@asynccontextmanager
async def login_attempt(request: Request, *, username: str) -> AsyncIterator[None]:
    """Guard one sign-in, before any password is checked, with two limits.

    RATE_LIMIT_LOGIN counts every attempt per client address whatever the username (one address
    cannot try many accounts). RATE_LIMIT_LOGIN_USERNAME counts only FAILED attempts per username
    whatever the address (many addresses cannot share the guesses at one account), so the
    account's owner signing in does not use it up; once it is used up the username is refused
    until the window ends, whoever asks: the price of stopping a distributed guess. A token sent
    along changes nothing; admins are never exempt.

    Raises:
        RateLimitedError: either limit is exhausted (429 with Retry-After).
    """
    limits = _limits_of(request)
    if limits is None:
        yield
        return
    address = f"ip:{client_ip(request.scope, limits.trusted_proxies)}"
    name = f"name:{username_key(username)}"
    await _count_or_refuse(request, limits, "login-ip", address, count=True)
    await _count_or_refuse(request, limits, "login-name", name, count=False)
    try:
        yield
    except AuthenticationError:
        await limits.hit(limits.login_username_limit, "login-name", name)
        raise


async def _count_or_refuse(
    request: Request, limits: RateLimits, scope_name: str, key: str, *, count: bool
) -> None:
    item = limits.login_limit if scope_name == "login-ip" else limits.login_username_limit
    check = limits.hit if count else limits.peek
    allowed, state = await check(item, scope_name, key)
    record_limit_state(request.scope, state)
    if not allowed:
        log.info("rate_limited", limit=scope_name)
        raise state.refusal("too many login attempts; wait before trying again")
