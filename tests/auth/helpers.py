"""Helpers any test may reuse to get an authenticated caller quickly.

    user_id, token = create_user_and_token(client, Role.USER)
    client.get("/api/v1/users/me", headers=auth_headers(token))

Users are written straight to the app's database and tokens signed with the app's settings, so a
helper call costs no HTTP request and never touches the login rate limit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from app.auth import security
from app.auth.models import Role, User
from app.auth.security import TokenType, create_token
from app.auth.service import create_user as create_user_in_session

DEFAULT_PASSWORD = "correct-horse-battery-staple"
_numbers = itertools.count(1)


def auth_headers(token: str) -> dict[str, str]:
    """The Authorization header for a Bearer access token."""
    return {"Authorization": f"Bearer {token}"}


def create_user(
    client: TestClient,
    role: Role = Role.USER,
    *,
    username: str | None = None,
    password: str = DEFAULT_PASSWORD,
    email: str | None = None,
) -> User:
    """Insert an active user into the database of the app behind `client` (inside its lifespan)."""
    username = username or f"{role.value}{next(_numbers)}"
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        user = create_user_in_session(
            session, username=username, password=password, role=role, email=email
        )
        session.commit()
        return user


def access_token_for(client: TestClient, user: User) -> str:
    """A valid access token for `user`, signed with the app's own settings."""
    settings = client.app.state.settings  # type: ignore[attr-defined]
    issued = create_token(
        settings=settings, subject=user.id, role=user.role, token_type=TokenType.ACCESS
    )
    return issued.token


def create_user_and_token(
    client: TestClient, role: Role = Role.USER, *, username: str | None = None
) -> tuple[str, str]:
    """A new active user of `role` and an access token for it: `(user_id, access_token)`."""
    user = create_user(client, role, username=username)
    return user.id, access_token_for(client, user)


def login(
    client: TestClient, username: str, password: str = DEFAULT_PASSWORD, **kwargs: Any
) -> dict[str, Any]:
    """Sign in through the real endpoint (JSON); returns the token pair, fails the test on error."""
    response = client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}, **kwargs
    )
    assert response.status_code == 200, response.text
    return response.json()


@contextmanager
def cheap_hashes() -> Iterator[None]:
    """Cheap argon2 parameters while the block runs (production keeps RFC 9106 defaults)."""
    original = security.password_hasher
    security.password_hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    try:
        yield
    finally:
        security.password_hasher = original


@pytest.fixture
def fast_password_hashing() -> Iterator[None]:
    """cheap_hashes() for the duration of a test."""
    with cheap_hashes():
        yield
