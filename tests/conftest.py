"""Shared fixtures: settings on a real database per test, a migrated database, an app client.

The packages in `tests.databases.BOTH_DATABASES` run every test twice, `[sqlite]` and
`[postgresql]`. On PostgreSQL each test finds its own fresh, migrated database in `DATABASE_URL`
(so every `Settings` it builds uses it) and a module's shared app takes `module_database_url`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.migrations import upgrade_to_head
from app.main import create_app
from tests.databases import (
    BACKENDS,
    PostgresServer,
    postgres_server_url,
    redis_server_url,
    runs_on_both_databases,
)

SettingsFactory = Callable[..., Settings]
ClientFactory = Callable[..., AbstractContextManager[TestClient]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Module scope: pytest then runs a module's tests on SQLite, then all of them on PostgreSQL,
    # and a module's shared app is built once per database, not once per test.
    if "database_backend" in metafunc.fixturenames and runs_on_both_databases(
        metafunc.definition.path
    ):
        metafunc.parametrize("database_backend", BACKENDS, indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def database_backend(request: pytest.FixtureRequest) -> str:
    """`sqlite` or `postgresql`; only the packages that run on both ever get the second."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer(postgres_server_url())
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> Iterator[str]:
    """One database migrated to head per session; every PostgreSQL test gets a copy of it."""
    url = postgres_server.migrated_template()
    yield url
    postgres_server.drop(url)


def _fresh_postgres(request: pytest.FixtureRequest, prefix: str) -> tuple[PostgresServer, str]:
    # Looked up only on the PostgreSQL side, so a SQLite-only run never needs the server.
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template: str = request.getfixturevalue("postgres_template")
    return server, server.create(prefix, template_url=template)


@pytest.fixture(scope="module")
def module_database_url(database_backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database for an app shared by a module: a migrated PostgreSQL copy, or "" (SQLite in
    the settings' data_dir). Pass it as `database_url=`; depending on it also rebuilds the
    module's app when the backend changes."""
    if database_backend != "postgresql":
        yield ""
        return
    server, url = _fresh_postgres(request, "warmbox_module")
    yield url
    server.drop(url)


@pytest.fixture(autouse=True)
def _test_database(
    database_backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """DATABASE_URL for the test: a fresh PostgreSQL copy, or unset (SQLite in data_dir)."""
    if database_backend != "postgresql":
        monkeypatch.delenv("DATABASE_URL", raising=False)
        yield
        return
    server, url = _fresh_postgres(request, "warmbox_test")
    monkeypatch.setenv("DATABASE_URL", url)
    yield
    server.drop(url)


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Settings isolated from the developer's `.env`, on a fresh database: a SQLite file in
    tmp_path, or on the PostgreSQL side the test's own copy named in DATABASE_URL.

    The sandbox pool and rate limits are off unless a test turns them on, so a test of one
    behaviour does not pay for (or trip over) the others.
    """

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": "test",
            "data_dir": tmp_path,
            "sandbox_enabled": False,
            "rate_limit_enabled": False,
            "log_format": "console",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return factory


@pytest.fixture
def make_client() -> ClientFactory:
    """Migrate the settings' database, build the app, and run its lifespan around a TestClient."""

    @contextmanager
    def factory(settings: Settings, **client_kwargs: Any) -> Iterator[TestClient]:
        upgrade_to_head(settings.database_url)
        app = create_app(settings)
        with TestClient(app, raise_server_exceptions=False, **client_kwargs) as client:
            yield client

    return factory


@pytest.fixture
def client(make_settings: SettingsFactory, make_client: ClientFactory) -> Iterator[TestClient]:
    with make_client(make_settings()) as test_client:
        yield test_client


@pytest.fixture
def redis_url() -> str:
    """The test Redis (scripts/services.sh); each test namespaces its own keys."""
    return redis_server_url()
