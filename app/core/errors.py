"""One error hierarchy with stable codes, and the handlers that give every failure one JSON shape.

Body: {"error": {"code", "message", "request_id", "details"}}. Expected failures carry their own
status; anything unexpected becomes INTERNAL_ERROR, with no trace, path or exception text sent
to the client.
"""

from __future__ import annotations

from enum import StrEnum
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)


class ErrorCode(StrEnum):
    VALIDATION_ERROR = "VALIDATION_ERROR"
    AUTHENTICATION_ERROR = "AUTHENTICATION_ERROR"
    AUTHORIZATION_ERROR = "AUTHORIZATION_ERROR"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    CONFLICT = "CONFLICT"
    RATE_LIMITED = "RATE_LIMITED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    UNSUPPORTED_LANGUAGE = "UNSUPPORTED_LANGUAGE"
    CODE_POLICY_VIOLATION = "CODE_POLICY_VIOLATION"
    SANDBOX_ERROR = "SANDBOX_ERROR"
    POOL_EXHAUSTED = "POOL_EXHAUSTED"
    EXECUTION_TIMEOUT = "EXECUTION_TIMEOUT"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class AppError(Exception):
    """Root of every error the service raises on purpose; carries its HTTP status and code."""

    status_code: int = HTTPStatus.INTERNAL_SERVER_ERROR
    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    default_message = "internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = details
        self.headers = headers or {}
        super().__init__(self.message)


class ValidationAppError(AppError):
    status_code = HTTPStatus.UNPROCESSABLE_ENTITY
    code = ErrorCode.VALIDATION_ERROR
    default_message = "the request is not valid"


class BadRequestError(AppError):
    status_code = HTTPStatus.BAD_REQUEST
    code = ErrorCode.VALIDATION_ERROR
    default_message = "bad request"


class AuthenticationError(AppError):
    status_code = HTTPStatus.UNAUTHORIZED
    code = ErrorCode.AUTHENTICATION_ERROR
    default_message = "authentication required"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class AuthorizationError(AppError):
    status_code = HTTPStatus.FORBIDDEN
    code = ErrorCode.AUTHORIZATION_ERROR
    default_message = "you are not allowed to do this"


class NotFoundError(AppError):
    status_code = HTTPStatus.NOT_FOUND
    code = ErrorCode.NOT_FOUND
    default_message = "not found"


class ConflictError(AppError):
    status_code = HTTPStatus.CONFLICT
    code = ErrorCode.CONFLICT
    default_message = "conflict with the current state"


class RateLimitedError(AppError):
    status_code = HTTPStatus.TOO_MANY_REQUESTS
    code = ErrorCode.RATE_LIMITED
    default_message = "too many requests"


class PayloadTooLargeError(AppError):
    status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = ErrorCode.PAYLOAD_TOO_LARGE
    default_message = "the request body is too large"


class UnsupportedLanguageError(AppError):
    status_code = HTTPStatus.BAD_REQUEST
    code = ErrorCode.UNSUPPORTED_LANGUAGE
    default_message = "this language is not supported"


class CodePolicyViolationError(AppError):
    status_code = HTTPStatus.BAD_REQUEST
    code = ErrorCode.CODE_POLICY_VIOLATION
    default_message = "the code breaks the configured code policy"


class SandboxError(AppError):
    """The sandbox could not run the code (container died, engine unreachable, image missing)."""

    status_code = HTTPStatus.SERVICE_UNAVAILABLE
    code = ErrorCode.SANDBOX_ERROR
    default_message = "the sandbox could not run the code"


class PoolExhaustedError(AppError):
    status_code = HTTPStatus.SERVICE_UNAVAILABLE
    code = ErrorCode.POOL_EXHAUSTED
    default_message = "every sandbox is busy; retry shortly"

    def __init__(self, message: str | None = None, *, retry_after_s: int = 1, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("Retry-After", str(max(1, retry_after_s)))


class ExecutionTimeoutError(AppError):
    status_code = HTTPStatus.GATEWAY_TIMEOUT
    code = ErrorCode.EXECUTION_TIMEOUT
    default_message = "the sandbox did not answer in time"


class ServiceUnavailableError(AppError):
    status_code = HTTPStatus.SERVICE_UNAVAILABLE
    code = ErrorCode.SERVICE_UNAVAILABLE
    default_message = "the service is not available right now"


_STATUS_CODES: dict[int, ErrorCode] = {
    400: ErrorCode.VALIDATION_ERROR,
    401: ErrorCode.AUTHENTICATION_ERROR,
    403: ErrorCode.AUTHORIZATION_ERROR,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.VALIDATION_ERROR,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_body(
    code: str, message: str, request_id: str | None, details: Any = None
) -> dict[str, Any]:
    return {
        "error": {"code": code, "message": message, "request_id": request_id, "details": details}
    }


def error_response(
    request: Request,
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(code, message, request_id_of(request), details)
    return JSONResponse(body, status_code=status_code, headers=headers)


def _clean_validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep location, message and type; drop echoed input, which may be huge or secret."""
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in errors
    ]


async def _app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(
        request, exc.status_code, exc.code, exc.message, exc.details, exc.headers or None
    )


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _clean_validation_errors(list(exc.errors()))
    if any(err["type"] == "json_invalid" for err in errors):
        return error_response(
            request, 400, ErrorCode.VALIDATION_ERROR, "malformed JSON body", errors
        )
    return error_response(
        request, 422, ErrorCode.VALIDATION_ERROR, "the request is not valid", errors
    )


async def _http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, ErrorCode.INTERNAL_ERROR)
    if exc.status_code < 500 and code is ErrorCode.INTERNAL_ERROR:
        code = ErrorCode.VALIDATION_ERROR
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return error_response(
        request, exc.status_code, code, message.lower(), headers=getattr(exc, "headers", None)
    )


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled_error", error_type=type(exc).__name__)
    return error_response(request, 500, ErrorCode.INTERNAL_ERROR, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
