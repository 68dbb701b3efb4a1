"""Request and response bodies of the auth endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.auth.models import Role

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Long enough for any passphrase, short enough that hashing it is not a denial of service.
PASSWORD_MAX_LENGTH = 1024

Username = Annotated[
    str,
    StringConstraints(min_length=3, max_length=64, pattern=USERNAME_PATTERN),
    Field(description="3-64 characters: letters, digits, `_`, `.`, `-`; case-insensitive"),
]
Password = Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX_LENGTH)]
Email = Annotated[
    str,
    StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
    Field(description="optional contact address"),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(StrictModel):
    """The OAuth2 password grant, as a form (the docs' Authorize button) or as JSON."""

    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Password
    grant_type: Literal["password"] | None = None
    scope: Annotated[str, Field(max_length=1024)] = ""
    client_id: Annotated[str | None, Field(max_length=256)] = None
    client_secret: Annotated[str | None, Field(max_length=256)] = None


class RegisterRequest(StrictModel):
    username: Username
    password: Password
    email: Email | None = None


class RefreshRequest(StrictModel):
    refresh_token: Annotated[str, Field(min_length=1, max_length=4096)]


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth2 token type)
    expires_in: int = Field(description="seconds until the access token expires")
    refresh_expires_in: int = Field(description="seconds until the refresh token expires")


class UserRead(BaseModel):
    """An account as the API shows it (never the hash). Auth owns the account, so the schema
    lives here; `app.users` reuses it for its own endpoints."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    username: str
    email: str | None
    role: Role
    is_active: bool
    created_at: datetime
    updated_at: datetime
