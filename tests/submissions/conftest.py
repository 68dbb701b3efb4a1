"""One real app (a pool of three containers, two submission workers) shared by a test module."""

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
        tmp_path_factory.mktemp("submissions"),
        database_url=module_database_url,
        pool_max_total=3,
        pool_max_size=3,
        pool_acquire_timeout_s=30.0,
        pool_start_timeout_s=60.0,
        sandbox_python_preload="",
        run_max_timeout_s=30.0,
        # A callback may reach the tests' loopback receiver, and nothing else private.
        webhook_allowed_hosts=["127.0.0.1/32"],
        webhook_retry_base_s=0.3,
        webhook_timeout_s=2.0,
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
