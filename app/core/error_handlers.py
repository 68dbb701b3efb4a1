"""FastAPI handlers that give every failure the project's one error body.

FastAPI's validation errors, 404/405 and unhandled exceptions all come out as
{"error": {"code", "message", "request_id", "details"}}, with no trace or path for the client.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import sqlalchemy.exc
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import AppError, ErrorCode, error_body

log = structlog.get_logger(__name__)


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


def error_response(
    request: Request,
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(code, message, request_id_of(request), details)
    return JSONResponse(body, status_code=int(status_code), headers=headers)


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


async def _database_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    """No free connection in time, or the database does not answer: the service is busy, not
    broken, and the client may retry."""
    log.warning("database_unavailable", error_type=type(exc).__name__)
    return error_response(
        request,
        503,
        ErrorCode.SERVICE_UNAVAILABLE,
        "the database is busy or unreachable; retry shortly",
        headers={"Retry-After": "1"},
    )


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled_error", error_type=type(exc).__name__)
    return error_response(request, 500, ErrorCode.INTERNAL_ERROR, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(sqlalchemy.exc.TimeoutError, _database_unavailable_handler)
    app.add_exception_handler(sqlalchemy.exc.OperationalError, _database_unavailable_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
