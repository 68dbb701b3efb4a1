"""The caller's profile, and account management for admins."""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.auth.dependencies import CurrentUser, require_permission
from app.auth.models import User
from app.auth.permissions import Permission
from app.core.deps import SessionDep, SettingsDep
from app.users import service
from app.users.schemas import UserCreate, UserPage, UserRead, UserUpdate

router = APIRouter(prefix="/users", tags=["users"])

UserManager = Annotated[User, Depends(require_permission(Permission.USERS_MANAGE))]
_ADMIN_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "no valid access token (`AUTHENTICATION_ERROR`)"},
    403: {"description": "the caller is not an admin (`AUTHORIZATION_ERROR`)"},
}


@router.get("/me", response_model=UserRead, summary="The signed-in user")
def read_me(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)


@router.get("", response_model=UserPage, summary="List users (admin)", responses=_ADMIN_ERRORS)
def list_users(
    _admin: UserManager,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> UserPage:
    users, total = service.list_users(session, limit=limit, offset=offset)
    items = [UserRead.model_validate(user) for user in users]
    return UserPage(items=items, total=total, limit=limit, offset=offset)


@router.post(
    "",
    response_model=UserRead,
    status_code=HTTPStatus.CREATED,
    summary="Create a user of any role (admin)",
    responses=_ADMIN_ERRORS,
)
def create_user(
    body: UserCreate, _admin: UserManager, session: SessionDep, settings: SettingsDep
) -> UserRead:
    user = service.create_user_as_admin(
        session,
        settings=settings,
        username=body.username,
        password=body.password,
        email=body.email,
        role=body.role,
    )
    return UserRead.model_validate(user)


@router.get(
    "/{user_id}", response_model=UserRead, summary="One user (admin)", responses=_ADMIN_ERRORS
)
def read_user(user_id: uuid.UUID, _admin: UserManager, session: SessionDep) -> UserRead:
    return UserRead.model_validate(service.get_user(session, user_id=str(user_id)))


@router.patch(
    "/{user_id}",
    response_model=UserRead,
    summary="Change a user's role or active flag (admin)",
    responses=_ADMIN_ERRORS,
)
def update_user(
    user_id: uuid.UUID, body: UserUpdate, admin: UserManager, session: SessionDep
) -> UserRead:
    user = service.update_user(
        session, actor=admin, user_id=str(user_id), role=body.role, is_active=body.is_active
    )
    return UserRead.model_validate(user)


@router.delete(
    "/{user_id}",
    response_model=UserRead,
    summary="Deactivate a user (admin); the account is kept",
    responses=_ADMIN_ERRORS,
)
def deactivate_user(user_id: uuid.UUID, admin: UserManager, session: SessionDep) -> UserRead:
    user = service.deactivate_user(session, actor=admin, user_id=str(user_id))
    return UserRead.model_validate(user)
