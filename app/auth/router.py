"""Sign-up, sign-in and token refresh."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.auth import service
from app.auth.schemas import LoginRequest, RefreshRequest, RegisterRequest, TokenPair, UserRead
from app.core.deps import SessionDep, SettingsDep
from app.core.errors import BadRequestError
from app.ratelimit.dependencies import login_attempt

router = APIRouter(prefix="/auth", tags=["auth"])

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# Only the JSON body is declared: an operation with two body types breaks generated clients
# (openapi-python-client emits an undefined `Unset` for it, upstream issue #1451). The OAuth2
# form that Swagger's Authorize dialog sends is declared by the security scheme's tokenUrl and
# accepted all the same.
_LOGIN_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": LoginRequest.model_json_schema()}},
    },
    "description": (
        "Exchange a username and password for a short-lived access token and a refresh token. "
        "The body is JSON, or the same fields as an OAuth2 password-grant form "
        "(`application/x-www-form-urlencoded`), which is what the docs' Authorize dialog sends."
    ),
}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "bad credentials or token (`AUTHENTICATION_ERROR`)"},
    429: {"description": "too many attempts (`RATE_LIMITED`), see `Retry-After`"},
}


async def _login_payload(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _FORM_TYPES:
        form = await request.form()
        if any(isinstance(value, UploadFile) for _, value in form.multi_items()):
            raise BadRequestError("file uploads are not accepted here")
        return dict(form.multi_items())
    body = await request.body()
    if not body:
        return {}
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequestError("malformed JSON body") from None
    if not isinstance(payload, dict):
        raise BadRequestError("the JSON body must be an object")
    return payload


async def _read_login_request(request: Request) -> LoginRequest:
    payload = await _login_payload(request)
    try:
        return LoginRequest.model_validate(payload)
    except ValidationError as exc:
        # The project's handler keeps location and message only: the password is never echoed.
        raise RequestValidationError(exc.errors()) from None


@router.post(
    "/login",
    response_model=TokenPair,
    summary="Sign in (OAuth2 password grant, form or JSON)",
    openapi_extra=_LOGIN_OPENAPI,
    responses=_AUTH_ERRORS,
)
async def login(request: Request, session: SessionDep, settings: SettingsDep) -> TokenPair:
    """Exchange a username and password for a short-lived access token and a refresh token."""
    credentials = await _read_login_request(request)
    async with login_attempt(request, username=credentials.username):
        return await run_in_threadpool(
            service.login,
            session,
            settings=settings,
            username=credentials.username,
            password=credentials.password,
        )


@router.post(
    "/register",
    response_model=UserRead,
    status_code=HTTPStatus.CREATED,
    summary="Create an account with the `user` role",
    responses={
        403: {"description": "registration is closed (`AUTHORIZATION_ERROR`)"},
        409: {"description": "the username is taken (`CONFLICT`)"},
    },
)
def register(body: RegisterRequest, session: SessionDep, settings: SettingsDep) -> UserRead:
    user = service.register_user(
        session,
        settings=settings,
        username=body.username,
        password=body.password,
        email=body.email,
    )
    return UserRead.model_validate(user)


@router.post(
    "/refresh",
    response_model=TokenPair,
    summary="Swap a refresh token for a new pair (the old one is revoked)",
    responses=_AUTH_ERRORS,
)
def refresh(body: RefreshRequest, session: SessionDep, settings: SettingsDep) -> TokenPair:
    return service.rotate_refresh_token(
        session, settings=settings, refresh_token=body.refresh_token
    )
