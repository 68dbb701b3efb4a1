"""The default per-caller limit on every request and WebSocket handshake, and the X-RateLimit-*
headers on every answer.

Pure ASGI (not BaseHTTPMiddleware, not slowapi's middleware) so streaming responses pass through
untouched; a refusal is a Starlette response called as an ASGI app.
"""

from __future__ import annotations

import structlog
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import RateLimitedError
from app.core.middleware import error_response
from app.ratelimit.counter import LimitState, RateLimits
from app.ratelimit.keys import identify

log = structlog.get_logger(__name__)

EXEMPT_PATHS = frozenset({"/health", "/health/ready", "/metrics"})
_STATE_KEY = "rate_limit"


def record_limit_state(scope: Scope, state: LimitState) -> None:
    """Remember the tightest limit of this request; the middleware reports it in the headers."""
    states = scope.setdefault("state", {})
    current: LimitState | None = states.get(_STATE_KEY)
    if current is None or state.remaining < current.remaining:
        states[_STATE_KEY] = state


def refusal_response(scope: Scope, refusal: RateLimitedError) -> JSONResponse:
    return error_response(
        scope,
        refusal.status_code,
        refusal.code,
        refusal.message,
        details=refusal.details,
        headers=refusal.headers,
    )


async def refuse_websocket(
    scope: Scope, receive: Receive, send: Send, refusal: RateLimitedError
) -> None:
    """A refused WebSocket handshake: an HTTP 429 with the error body and Retry-After where the
    server offers the denial-response extension (uvicorn does), else close code 4429."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await refusal_response(scope, refusal)(scope, receive, send)
        return
    await send({"type": "websocket.close", "code": 4000 + int(refusal.status_code)})


class RateLimitMiddleware:
    """The default per-caller limit on every request except health and metrics."""

    def __init__(self, app: ASGIApp, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope["path"].rstrip("/") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        refusal = await self._check(scope)
        if refusal is not None and kind == "websocket":
            await refuse_websocket(scope, receive, send, refusal)
            return
        if refusal is not None:
            await refusal_response(scope, refusal)(scope, receive, send)
            return
        if kind == "websocket":  # a handshake counts like a request; its frames are the app's
            await self.app(scope, receive, send)
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

    async def _check(self, scope: Scope) -> RateLimitedError | None:
        limits = self.limits
        caller = identify(scope, identity=limits.identity, trusted=limits.trusted_proxies)
        if limits.admin_exempt(is_admin=caller.claims_admin) and await limits.identity.is_admin_now(
            caller, scope
        ):
            return None
        allowed, state = await limits.hit(limits.default_limit, "default", caller.key)
        record_limit_state(scope, state)
        if allowed:
            return None
        log.info("rate_limited", limit="default", key_kind=caller.key.split(":")[0])
        return state.refusal("too many requests; slow down")
