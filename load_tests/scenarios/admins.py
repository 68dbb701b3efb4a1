"""Admins, a small share of the crowd, reading the pool's statistics now and then."""

from __future__ import annotations

from locust import HttpUser, between, constant, task

from load_tests.scenarios.common import (
    API,
    CONFIG,
    Readiness,
    bearer,
    fail_unexpected_status,
    json_or_none,
    login,
)


class AdminUser(HttpUser):
    weight = 1
    wait_time = between(2, 5)
    token: str | None = None

    def on_start(self) -> None:
        self.token = login(
            self.client,
            CONFIG.admin_username,
            CONFIG.admin_password,
            name="POST /auth/login [admin]",
        )
        if self.token is None:
            Readiness.failed_sign_ins += 1
        Readiness.mark()

    @task
    def pool_stats(self) -> None:
        with self.client.get(
            f"{API}/sandbox/pool/stats",
            headers=bearer(self.token or ""),
            name="GET /sandbox/pool/stats",
            catch_response=True,
        ) as response:
            body = json_or_none(response)
            if response.status_code != 200 or body is None:
                fail_unexpected_status(response)


class SmokeAdminUser(AdminUser):
    """Exactly one admin, reading often, so a short run sees a few answers."""

    fixed_count = 1
    wait_time = constant(0.5)
