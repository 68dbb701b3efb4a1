"""The error body as an OpenAPI schema, so every route can declare the refusals it may answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_DESCRIPTIONS = {
    400: "bad request, unsupported language or code policy violation",
    401: "no valid access token (`AUTHENTICATION_ERROR`)",
    403: "the caller's role does not allow this (`AUTHORIZATION_ERROR`)",
    404: "no such resource, or not yours (`NOT_FOUND`)",
    409: "conflict with the resource's current state (`CONFLICT`, `SESSION_BUSY`)",
    410: "the session has ended; its state is gone (`SESSION_GONE`)",
    413: "the code or stdin is larger than allowed (`PAYLOAD_TOO_LARGE`)",
    415: "the body is not JSON (`UNSUPPORTED_MEDIA_TYPE`)",
    422: "the request is not valid (`VALIDATION_ERROR`)",
    429: "too many requests (`RATE_LIMITED`) or your share is in use (`QUOTA_EXCEEDED`), "
    "see `Retry-After`",
    503: "no sandbox or queue room right now (`POOL_EXHAUSTED`, `SANDBOX_ERROR`)",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None
    details: Any = None


class ErrorResponse(BaseModel):
    """The one error shape of the service."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` declaring the error body for each status, so clients and schema
    checkers know every refusal has the same shape."""
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]}
        for status in statuses
    }
