"""Throwaway PostgreSQL databases for the tests that run on both databases.

Render runs the service on PostgreSQL while a developer's machine runs SQLite, so the API-level
packages run once per database. A fresh PostgreSQL database per test would cost an Alembic
upgrade each; instead one database is migrated per session and every test gets a copy of it
(`CREATE DATABASE ... TEMPLATE`, a file copy on the server, tens of milliseconds), dropped after.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from app.core.migrations import upgrade_to_head

POSTGRES_URL_ENV = "WARMBOX_TEST_POSTGRES_URL"
REDIS_URL_ENV = "WARMBOX_TEST_REDIS_URL"
BACKENDS = ("sqlite", "postgresql")
# Test packages whose every test runs once per backend (what later issues add belongs here too).
BOTH_DATABASES = ("auth", "users", "code", "jobs", "webhooks", "submissions", "sessions")

_TESTS_ROOT = Path(__file__).parent


def runs_on_both_databases(path: Path) -> bool:
    """Whether the test module at `path` belongs to a package listed in BOTH_DATABASES."""
    try:
        package = path.relative_to(_TESTS_ROOT).parts[0]
    except ValueError:
        return False
    return package in BOTH_DATABASES


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def postgres_server_url() -> str:
    """The server URL from scripts/services.sh; skips the test without one (fails it in CI)."""
    url = os.environ.get(POSTGRES_URL_ENV, "")
    if not url:
        reason = f"{POSTGRES_URL_ENV} is not set; scripts/test.sh starts PostgreSQL and sets it"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return url


def redis_server_url() -> str:
    """The Redis URL from scripts/services.sh; skips the test without one (fails it in CI)."""
    url = os.environ.get(REDIS_URL_ENV, "")
    if not url:
        reason = f"{REDIS_URL_ENV} is not set; scripts/test.sh starts Redis and sets it"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return url


class PostgresServer:
    """Creates and drops databases on the test server through one maintenance connection."""

    def __init__(self, server_url: str) -> None:
        self._url = make_url(server_url)
        self._admin: Engine = create_engine(
            server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool
        )

    def create(self, prefix: str, *, template_url: str | None = None) -> str:
        """A new database (a copy of the one at `template_url` when given); returns its URL."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        statement = f'CREATE DATABASE "{name}"'
        if template_url is not None:
            statement += f' TEMPLATE "{make_url(template_url).database}"'
        with self._admin.connect() as connection:
            connection.execute(text(statement))
        return self.url_of(name)

    def migrated_template(self) -> str:
        """A database at Alembic head to copy from; the caller drops it with `drop`."""
        url = self.create("warmbox_template")
        upgrade_to_head(url)  # disposes its engine: a template must have no open connection
        return url

    def url_of(self, name: str) -> str:
        return self._url.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        """Drop the database of `url`, ending any connection a test left open."""
        name = make_url(url).database
        with self._admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        self._admin.dispose()
