"""A real app (real Docker pool, real SQLite file) for the code, jobs, metrics and API tests.

Starting a pool costs about half a second, so tests share one app per module where they can.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.auth.models import Role
from app.core.config import Settings
from app.core.migrations import upgrade_to_head
from app.main import create_app
from tests.auth.helpers import auth_headers, cheap_hashes, create_user_and_token

FINAL = {"succeeded", "failed", "timed_out", "cancelled"}


def app_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "data_dir": data_dir,
        "log_format": "console",
        "rate_limit_enabled": False,
        "sandbox_enabled": True,
        "pool_initial_size": 1,
        "pool_min_size": 1,
        "pool_max_size": 2,
        "pool_max_total": 2,
        "pool_acquire_timeout_s": 10.0,
        "pool_health_check_interval_s": 3600.0,
        "pool_idle_reclaim_interval_s": 3600.0,
        "shutdown_grace_s": 2.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextmanager
def running_app(settings: Settings) -> Iterator[TestClient]:
    """Migrate, build the app and run its lifespan (pool, job queue, workers) around a client."""
    upgrade_to_head(settings.database_url)
    with cheap_hashes(), TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def headers_for(client: TestClient, role: Role = Role.USER) -> dict[str, str]:
    _user_id, token = create_user_and_token(client, role)
    return auth_headers(token)


def wait_for_final(
    client: TestClient, job_id: str, headers: dict[str, str], timeout_s: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        if body.get("status") in FINAL or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def wait_for_status(
    client: TestClient, job_id: str, headers: dict[str, str], status: str, timeout_s: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        if body.get("status") == status or time.monotonic() > deadline:
            return body
        time.sleep(0.02)
