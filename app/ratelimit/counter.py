"""Counting: slowapi's `Limiter` holds the storage (`memory://`, or `redis://` shared by replicas)
and the fixed-window strategy; this module adds a memory fallback for a storage that fails.

What of slowapi is not used, and why:
- `SlowAPIMiddleware` re-sends `http.response.start` for every body chunk of a streaming response
  (slowapi issues #249 and #260) and knows only decorated routes: `middleware.py` replaces it.
- `Limiter.limit` decorators and `_check_request_limit` call the storage synchronously on the
  event loop (a hung Redis would stall every request for its timeout), and their key functions
  cannot see the login body, where the username is. Counting here runs in a worker thread.
- slowapi's own in-memory fallback asks the dead storage again (`check()`) on the event loop and
  applies only separately declared fallback limits; this one keeps the same limits and retries
  the storage after `STORAGE_RETRY_AFTER_S`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import structlog
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter, RateLimiter
from slowapi import Limiter
from starlette.concurrency import run_in_threadpool

from app.core.config import Settings
from app.core.errors import RateLimitedError
from app.ratelimit.keys import CallerIdentity, parse_trusted_proxies, remote_caller_key

log = structlog.get_logger(__name__)

# After the shared storage fails, count in memory for this long before asking it again.
STORAGE_RETRY_AFTER_S = 5.0
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


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


class RateLimits:
    """The limits of one app: its settings, its slowapi Limiter, and a memory fallback."""

    def __init__(self, settings: Settings, identity: CallerIdentity) -> None:
        self.settings = settings
        self.identity = identity
        self.trusted_proxies = parse_trusted_proxies(settings.trusted_proxies)
        self.default_limit = parse(settings.rate_limit_default)
        self.execute_limit = parse(settings.rate_limit_execute)
        self.login_limit = parse(settings.rate_limit_login)
        self.login_username_limit = parse(settings.rate_limit_login_username)
        uri = settings.effective_rate_limit_storage_uri
        self._blocking = not uri.startswith("memory://")
        options: dict[str, Any] = (
            {"socket_connect_timeout": 1, "socket_timeout": 1} if "redis" in uri else {}
        )
        self.limiter = Limiter(
            key_func=remote_caller_key,
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

    def admin_exempt(self, *, is_admin: bool) -> bool:
        return is_admin and self.settings.rate_limit_exempt_admins

    async def hit(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, LimitState]:
        """Count one request against `item`; the state says what is left in the window."""
        if self._blocking:  # a network storage must not stall the event loop
            return await run_in_threadpool(self._hit, item, identifiers)
        return self._hit(item, identifiers)

    async def peek(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, LimitState]:
        """Whether one more request would pass `item`, without counting it."""
        if self._blocking:
            return await run_in_threadpool(self._hit, item, identifiers, False)
        return self._hit(item, identifiers, False)

    def _hit(
        self, item: RateLimitItem, identifiers: tuple[str, ...], count: bool = True
    ) -> tuple[bool, LimitState]:
        keys = (self.settings.app_name, *identifiers)
        if time.monotonic() < self._storage_retry_at:
            # Storage known down: count here without paying its timeout on every request.
            allowed, stats = self._count(self._fallback, item, keys, count)
        else:
            try:
                allowed, stats = self._count(self.limiter.limiter, item, keys, count)
                self._mark_storage(ok=True)
            except Exception as exc:
                # Storage down: keep limiting per replica; neither fail open nor fail every request.
                self._mark_storage(ok=False, error=type(exc).__name__)
                self._storage_retry_at = time.monotonic() + STORAGE_RETRY_AFTER_S
                allowed, stats = self._count(self._fallback, item, keys, count)
        state = LimitState(item.amount, max(0, stats.remaining), stats.reset_time, str(item))
        return allowed, state

    @staticmethod
    def _count(
        strategy: RateLimiter, item: RateLimitItem, keys: tuple[str, ...], count: bool
    ) -> Any:
        allowed = strategy.hit(item, *keys) if count else strategy.test(item, *keys)
        return allowed, strategy.get_window_stats(item, *keys)

    def _mark_storage(self, *, ok: bool, error: str = "") -> None:
        if ok and not self._storage_ok:
            log.info("rate_limit_storage_recovered")
        elif not ok and self._storage_ok:
            log.warning("rate_limit_storage_unavailable", error=error, fallback="memory")
        self._storage_ok = ok
