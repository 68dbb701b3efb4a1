"""Every test here hashes passwords with cheap argon2 parameters (see fast_password_hashing)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.auth.helpers import fast_password_hashing

__all__ = ["fast_password_hashing"]


@pytest.fixture(autouse=True)
def _cheap_password_hashes(fast_password_hashing: None) -> None:
    return None


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """A fresh, empty database on the server scripts/services.sh starts, dropped afterwards."""
    server_url = os.environ.get("WARMBOX_TEST_POSTGRES_URL", "")
    if not server_url:
        reason = "WARMBOX_TEST_POSTGRES_URL is not set; scripts/test.sh starts PostgreSQL"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"warmbox_auth_{secrets.token_hex(6)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
