"""One real app (pool of up to two containers, two job workers) shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.auth.models import Role
from tests.jobs.helpers import app_settings, headers_for, running_app


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str
) -> Iterator[TestClient]:
    settings = app_settings(
        tmp_path_factory.mktemp("jobs"), database_url=module_database_url, run_max_timeout_s=30.0
    )
    with running_app(settings) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def user(client: TestClient) -> dict[str, str]:
    return headers_for(client)


@pytest.fixture(scope="module")
def other_user(client: TestClient) -> dict[str, str]:
    return headers_for(client)


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return headers_for(client, Role.ADMIN)
