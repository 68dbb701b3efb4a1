"""Bodies of the user endpoints; none of them ever carries a password hash."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, model_validator

from app.auth.models import Role
from app.auth.schemas import Email, Password, StrictModel, Username, UserRead

__all__ = ["UserCreate", "UserPage", "UserRead", "UserUpdate"]


class UserPage(BaseModel):
    items: list[UserRead]
    total: int
    limit: int
    offset: int


class UserCreate(StrictModel):
    username: Username
    password: Password
    email: Email | None = None
    role: Role = Role.USER


class UserUpdate(StrictModel):
    role: Role | None = None
    is_active: bool | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> Self:
        if self.role is None and self.is_active is None:
            raise ValueError("give at least one of: role, is_active")
        return self
