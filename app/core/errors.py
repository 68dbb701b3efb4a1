"""One error hierarchy with stable codes; app/core/error_handlers.py turns them into one JSON shape.

Body: {"error": {"code", "message", "request_id", "details"}}. Expected failures carry their own
status; anything unexpected becomes INTERNAL_ERROR, with no trace, path or exception text sent
to the client.
"""

from __future__ import annotations

from enum import StrEnum
from http import HTTPStatus
from typing import Any


class ErrorCode(StrEnum):
    VALIDATION_ERROR = "VALIDATION_ERROR"
    AUTHENTICATION_ERROR = "AUTHENTICATION_ERROR"
    AUTHORIZATION_ERROR = "AUTHORIZATION_ERROR"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    CONFLICT = "CONFLICT"
    RATE_LIMITED = "RATE_LIMITED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    UNSUPPORTED_LANGUAGE = "UNSUPPORTED_LANGUAGE"
    CODE_POLICY_VIOLATION = "CODE_POLICY_VIOLATION"
    SANDBOX_ERROR = "SANDBOX_ERROR"
    POOL_EXHAUSTED = "POOL_EXHAUSTED"
    EXECUTION_TIMEOUT = "EXECUTION_TIMEOUT"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    SESSION_GONE = "SESSION_GONE"
    SESSION_BUSY = "SESSION_BUSY"


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


class QuotaExceededError(AppError):
    """The caller already holds their share of the sandboxes or of the job queue; unlike a rate
    limit, this counts work in progress, and frees up as the caller's own runs finish."""

    status_code = HTTPStatus.TOO_MANY_REQUESTS
    code = ErrorCode.QUOTA_EXCEEDED
    default_message = "you already hold your share; retry when one of your runs has finished"

    def __init__(self, message: str | None = None, *, retry_after_s: int = 1, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("Retry-After", str(max(1, retry_after_s)))


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


class SessionGoneError(AppError):
    """The session ended (closed, idle, expired, or the service restarted): its state is gone."""

    status_code = HTTPStatus.GONE
    code = ErrorCode.SESSION_GONE
    default_message = "this session has ended"


class SessionBusyError(AppError):
    """A cell is running in the session; cells never interleave, so the next one is refused."""

    status_code = HTTPStatus.CONFLICT
    code = ErrorCode.SESSION_BUSY
    default_message = "a cell is running in this session; send the next one when it has finished"


def error_body(
    code: str, message: str, request_id: str | None, details: Any = None
) -> dict[str, Any]:
    return {
        "error": {"code": code, "message": message, "request_id": request_id, "details": details}
    }
