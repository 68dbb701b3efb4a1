"""Small pure-ASGI middleware: request context and access log, body size limit, content type.

They run outside FastAPI's routing, so they answer with the project's error body themselves,
as a Starlette response called as an ASGI app.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import sentry_sdk
import structlog
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import ErrorCode, error_body

API_VERSION = "v1"
SUPPORTED_API_VERSIONS = ("v1",)
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BODY_METHODS = {b"POST", b"PUT", b"PATCH"}
_ACCEPTED_CONTENT_TYPES = (
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
)

# Uploads of a session's files (issue 13) take the raw bytes, whatever their type.
_RAW_BODY_PATH = re.compile(r"^/api/v1/sessions/[^/]+/files/.")

access_log = structlog.get_logger("warmbox.access")


def _header(scope: Scope, name: str) -> str | None:
    return Headers(scope=scope).get(name)


def error_response(
    scope: Scope,
    status: int,
    code: ErrorCode,
    message: str,
    *,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The project's error body as a Starlette response, for pure-ASGI code outside FastAPI's
    handlers: answer with `await error_response(...)(scope, receive, send)`."""
    request_id = scope.get("state", {}).get("request_id")
    body = error_body(code, message, request_id, details)
    return JSONResponse(body, status_code=int(status), headers=headers)


class RequestContextMiddleware:
    """Give every request an id, stamp the API version, and log one line when it ends."""

    def __init__(self, app: ASGIApp, slow_request_ms: float) -> None:
        self.app = app
        self.slow_request_ms = slow_request_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, "x-request-id")
        request_id = (
            incoming if incoming and _SANE_REQUEST_ID.match(incoming) else str(uuid.uuid4())
        )
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status_holder: dict[str, int] = {"status": 500}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = 1
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"x-api-version", API_VERSION.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            # Handled here, inside the request context, so even a crash answers with the request
            # id and the project's body; Starlette's outer handler would drop both.
            status_holder["status"] = 500
            access_log.exception("unhandled_error", error_type=type(exc).__name__)
            sentry_sdk.capture_exception(exc)
            if not status_holder.get("started"):
                response = error_response(scope, 500, ErrorCode.INTERNAL_ERROR, "internal error")
                await response(scope, receive, send_with_headers)
        finally:
            self._log(scope, status_holder["status"], (time.perf_counter() - started) * 1000)
            structlog.contextvars.unbind_contextvars("request_id")

    def _log(self, scope: Scope, status: int, duration_ms: float) -> None:
        fields: dict[str, Any] = {
            "method": scope.get("method"),
            "path": scope.get("path"),
            "status": status,
            "duration_ms": round(duration_ms, 2),
        }
        user_id = scope.get("state", {}).get("user_id")
        if user_id:
            fields["user_id"] = user_id
        if duration_ms >= self.slow_request_ms:
            access_log.warning("slow_request", **fields)
        else:
            access_log.info("request", **fields)


class BodySizeLimitMiddleware:
    """Refuse bodies over the limit with 413 before they are parsed: by Content-Length when it is
    declared, and by counting while streaming when it is not (or when it lies)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, "content-length")
        if declared is not None:
            if not declared.isdigit():
                response = error_response(
                    scope, 400, ErrorCode.VALIDATION_ERROR, "bad content-length"
                )
                await response(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        received = 0
        too_large = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # The app sees the client go away; whatever it answers is replaced below.
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def refusing_send(message: Message) -> None:
            nonlocal refused
            if not too_large:
                await send(message)
            elif not refused:
                refused = True
                await self._refuse(scope, receive, send)

        try:
            await self.app(scope, counting_receive, refusing_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not refused:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than {self.max_bytes} bytes"
        response = error_response(scope, 413, ErrorCode.PAYLOAD_TOO_LARGE, message)
        await response(scope, receive, send)


class ContentTypeMiddleware:
    """A body in a format no endpoint reads gets 415, not a confusing validation error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method", "").encode() in _BODY_METHODS:
            content_type = (_header(scope, "content-type") or "").split(";")[0].strip().lower()
            length = _header(scope, "content-length")
            has_body = length not in (None, "0") or _header(scope, "transfer-encoding")
            raw = _RAW_BODY_PATH.match(scope.get("path", ""))  # session files: any bytes
            if has_body and content_type not in _ACCEPTED_CONTENT_TYPES and not raw:
                message = "send the body as application/json"
                response = error_response(scope, 415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, message)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
