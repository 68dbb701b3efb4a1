"""Rate limits: a default limit per caller on every request, one on code execution, one on login.

A caller is its user id when it sends a valid access token, else its client IP (X-Forwarded-For is
believed only when the peer is a trusted proxy). Every number comes from the app's own settings.

slowapi's `Limiter` owns the storage (`memory://`, or `redis://` shared by replicas) and the
counting strategy. Its own middleware is not used: it re-sends `http.response.start` for every
body chunk of a streaming response (slowapi issues #249 and #260) and only knows decorated routes,
so the small pure-ASGI middleware below does the default limit and writes the headers itself.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter, RateLimiter
from slowapi import Limiter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.dependencies import get_current_user
from app.auth.models import Role, User
from app.auth.security import TokenType, decode_token
from app.core.config import Settings
from app.core.errors import AppError, RateLimitedError
from app.core.middleware import send_error

log = structlog.get_logger(__name__)

# After the shared storage fails, count in memory for this long before asking it again.
STORAGE_RETRY_AFTER_S = 5.0
EXEMPT_PATHS = frozenset({"/health", "/health/ready", "/metrics"})
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
_STATE_KEY = "rate_limit"
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class LimitState:
    """Where one caller stands against one limit: what the X-RateLimit-* headers report."""

    limit: int
    remaining: int
    reset_time: float  # epoch seconds at which the current window ends
    description: str

    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_time - time.time()))

    def headers(self) -> dict[str, str]:
        values = (self.limit, self.remaining, math.ceil(self.reset_time))
        return {name: str(value) for name, value in zip(RATE_LIMIT_HEADERS, values, strict=True)}

    def refusal(self, message: str) -> RateLimitedError:
        return RateLimitedError(
            message,
            details={"limit": self.description, "retry_after_s": self.retry_after()},
            headers={**self.headers(), "Retry-After": str(self.retry_after())},
        )


@dataclass(frozen=True)
class Caller:
    key: str
    is_admin: bool


def parse_trusted_proxies(entries: list[str]) -> list[IpNetwork]:
    """TRUSTED_PROXIES as networks: single addresses or CIDR ranges; anything else is refused."""
    try:
        return [ipaddress.ip_network(entry, strict=False) for entry in entries]
    except ValueError as exc:
        raise ValueError(f"TRUSTED_PROXIES holds an invalid address or network: {exc}") from None


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def client_ip(scope: Scope, trusted: list[IpNetwork]) -> str:
    """The peer address, or the nearest untrusted X-Forwarded-For hop when the peer is a proxy."""
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    peer_ip = _parse_ip(peer)
    if not trusted or peer_ip is None or not any(peer_ip in net for net in trusted):
        return peer
    forwarded = [
        value.decode("latin-1")
        for key, value in scope.get("headers", ())
        if key == b"x-forwarded-for"
    ]
    hops = [hop.strip() for header in forwarded for hop in header.split(",") if hop.strip()]
    address = peer
    # Walk from the nearest hop outwards; only a trusted proxy's claim about the next hop counts.
    for hop in reversed(hops):
        hop_ip = _parse_ip(hop)
        if hop_ip is None:
            break
        address = str(hop_ip)
        if not any(hop_ip in net for net in trusted):
            break
    return address


class RateLimits:
    """The limits of one app: its settings, its slowapi Limiter, and a memory fallback."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.trusted_proxies = parse_trusted_proxies(settings.trusted_proxies)
        self.default_limit = parse(settings.rate_limit_default)
        self.execute_limit = parse(settings.rate_limit_execute)
        self.login_limit = parse(settings.rate_limit_login)
        uri = settings.rate_limit_storage_uri
        self._blocking = not uri.startswith("memory://")
        options: dict[str, Any] = (
            {"socket_connect_timeout": 1, "socket_timeout": 1} if "redis" in uri else {}
        )
        self.limiter = Limiter(
            key_func=self._slowapi_key,
            default_limits=[settings.rate_limit_default],
            storage_uri=uri,
            storage_options=options,
            strategy="fixed-window",
            headers_enabled=True,
            key_prefix=settings.app_name,
        )
        self._fallback: RateLimiter = FixedWindowRateLimiter(MemoryStorage())
        self._storage_ok = True
        self._storage_retry_at = 0.0

    def _slowapi_key(self, request: Request) -> str:
        return self.caller(request.scope).key

    def caller(self, scope: Scope) -> Caller:
        """The user behind a valid access token (signature only, no database), else the IP."""
        token = _bearer_token(scope)
        if token:
            try:
                claims = decode_token(token, settings=self.settings, expected_type=TokenType.ACCESS)
            except AppError:
                pass
            else:
                return Caller(key=f"user:{claims.sub}", is_admin=claims.role == Role.ADMIN.value)
        return Caller(key=f"ip:{client_ip(scope, self.trusted_proxies)}", is_admin=False)

    def admin_exempt(self, *, is_admin: bool) -> bool:
        return is_admin and self.settings.rate_limit_exempt_admins

    async def hit(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, LimitState]:
        """Count one request against `item`; the state says what is left in the window."""
        if self._blocking:  # a network storage must not stall the event loop
            return await run_in_threadpool(self._hit, item, identifiers)
        return self._hit(item, identifiers)

    def _hit(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> tuple[bool, LimitState]:
        keys = (self.settings.app_name, *identifiers)
        if time.monotonic() < self._storage_retry_at:
            # Storage known down: count here without paying its timeout on every request.
            allowed, stats = self._count(self._fallback, item, keys)
        else:
            try:
                allowed, stats = self._count(self.limiter.limiter, item, keys)
                self._mark_storage(ok=True)
            except Exception as exc:
                # Storage down: keep limiting per replica; neither fail open nor fail every request.
                self._mark_storage(ok=False, error=type(exc).__name__)
                self._storage_retry_at = time.monotonic() + STORAGE_RETRY_AFTER_S
                allowed, stats = self._count(self._fallback, item, keys)
        state = LimitState(item.amount, max(0, stats.remaining), stats.reset_time, str(item))
        return allowed, state

    @staticmethod
    def _count(strategy: RateLimiter, item: RateLimitItem, keys: tuple[str, ...]) -> Any:
        allowed = strategy.hit(item, *keys)
        return allowed, strategy.get_window_stats(item, *keys)

    def _mark_storage(self, *, ok: bool, error: str = "") -> None:
        if ok and not self._storage_ok:
            log.info("rate_limit_storage_recovered")
        elif not ok and self._storage_ok:
            log.warning("rate_limit_storage_unavailable", error=error, fallback="memory")
        self._storage_ok = ok


def _bearer_token(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def record_limit_state(scope: Scope, state: LimitState) -> None:
    """Remember the tightest limit of this request; the middleware reports it in the headers."""
    states = scope.setdefault("state", {})
    current: LimitState | None = states.get(_STATE_KEY)
    if current is None or state.remaining < current.remaining:
        states[_STATE_KEY] = state


class RateLimitMiddleware:
    """The default per-caller limit on every request except health and metrics."""

    def __init__(self, app: ASGIApp, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        caller = self.limits.caller(scope)
        if not self.limits.admin_exempt(is_admin=caller.is_admin):
            allowed, state = await self.limits.hit(self.limits.default_limit, "default", caller.key)
            record_limit_state(scope, state)
            if not allowed:
                log.info("rate_limited", limit="default", key_kind=caller.key.split(":")[0])
                refusal = state.refusal("too many requests; slow down")
                await send_error(
                    scope,
                    send,
                    refusal.status_code,
                    refusal.code,
                    refusal.message,
                    details=refusal.details,
                    headers=refusal.headers,
                )
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                state = scope.get("state", {}).get(_STATE_KEY)
                if state is not None:
                    headers = MutableHeaders(scope=message)
                    for name, value in state.headers().items():
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_rate_limiting(app: FastAPI, settings: Settings) -> None:
    """Attach this app's limits and the default-limit middleware; nothing at all when disabled."""
    if not settings.rate_limit_enabled:
        app.state.rate_limits = None
        return
    limits = RateLimits(settings)
    app.state.rate_limits = limits
    app.state.limiter = limits.limiter  # where slowapi looks for it
    app.add_middleware(RateLimitMiddleware, limits=limits)


def _limits_of(request: Request) -> RateLimits | None:
    return getattr(request.app.state, "rate_limits", None)


async def execute_rate_limit(
    request: Request, user: Annotated[User, Depends(get_current_user)]
) -> None:
    """RATE_LIMIT_EXECUTE per user on code execution and job submission; admins may be exempt."""
    limits = _limits_of(request)
    if limits is None or limits.admin_exempt(is_admin=user.role == Role.ADMIN.value):
        return
    allowed, state = await limits.hit(limits.execute_limit, "execute", f"user:{user.id}")
    record_limit_state(request.scope, state)
    if not allowed:
        log.info("rate_limited", limit="execute")
        raise state.refusal("too many code executions; wait for the window to reset")


async def enforce_login_rate_limit(request: Request, *, username: str) -> None:
    """RATE_LIMIT_LOGIN per client IP and username, counted before any password is checked."""
    limits = _limits_of(request)
    if limits is None:
        return
    ip = client_ip(request.scope, limits.trusted_proxies)
    # Hashed: whatever was typed as a username (sometimes a password) never sits in the storage.
    name = hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]
    allowed, state = await limits.hit(limits.login_limit, "login", f"ip:{ip}", f"name:{name}")
    record_limit_state(request.scope, state)
    if not allowed:
        log.info("rate_limited", limit="login")
        raise state.refusal("too many login attempts; wait before trying again")
