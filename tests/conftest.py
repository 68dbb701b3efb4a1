"""Shared fixtures: settings on a real SQLite file per test, a migrated database, an app client."""

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

SettingsFactory = Callable[..., Settings]
ClientFactory = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Settings isolated from the developer's `.env`, with a fresh SQLite file in tmp_path.

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
