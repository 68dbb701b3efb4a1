"""Admin pool stats and the languages listing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.auth.models import Role
from app.sandbox.languages import LANGUAGES
from tests.conftest import ClientFactory, SettingsFactory
from tests.jobs.helpers import app_settings, headers_for, running_app

pytestmark = pytest.mark.docker

STATS = "/api/v1/sandbox/pool/stats"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with running_app(app_settings(tmp_path_factory.mktemp("stats"))) as test_client:
        yield test_client


class TestPoolStats:
    def test_admins_get_pool_queue_and_language_figures(self, client: TestClient) -> None:
        admin = headers_for(client, Role.ADMIN)

        response = client.get(STATS, headers=admin)

        assert response.status_code == 200
        body = response.json()
        python = body["pools"]["python"]
        assert {"available", "in_use", "total", "executions", "resets"} <= set(python)
        assert body["queue"]["depth"] == 0
        assert body["queue"]["workers"] == 2
        assert body["sandbox_enabled"] is True
        assert body["jobs_by_language"] == {}
        assert body["budget"]["max_total"] == 2
        assert body["budget"]["in_use"] >= 1
        assert {"cold_starts", "evictions", "waiting", "build_cache"} <= set(body["budget"])
        assert {"cold_starts", "evictions", "budget_in_use"} <= set(python)

    @pytest.mark.parametrize("role", [Role.USER, Role.GUEST])
    def test_other_roles_are_refused(self, client: TestClient, role: Role) -> None:
        response = client.get(STATS, headers=headers_for(client, role))

        assert response.status_code == 403
        assert response.json()["error"]["code"] == "AUTHORIZATION_ERROR"

    def test_anonymous_is_401(self, client: TestClient) -> None:
        assert client.get(STATS).status_code == 401


class TestLanguages:
    def test_lists_installed_languages_with_versions(self, client: TestClient) -> None:
        response = client.get("/api/v1/languages", headers=headers_for(client, Role.GUEST))

        assert response.status_code == 200
        languages = {entry["name"]: entry for entry in response.json()["languages"]}
        assert sorted(languages) == sorted(LANGUAGES)
        python = languages["python"]
        assert python["available"] is True
        assert python["version"].startswith("3.")
        assert python["file_name"] == "main.py"
        assert python["compiled"] is False
        assert python["warm"] is True


def test_without_a_sandbox_runs_are_503_and_languages_unavailable(
    make_settings: SettingsFactory, make_client: ClientFactory
) -> None:
    with make_client(make_settings()) as client:
        headers = headers_for(client)
        execute = client.post("/api/v1/code/execute", json={"code": "1"}, headers=headers)
        submit = client.post("/api/v1/jobs", json={"code": "1"}, headers=headers)
        languages = client.get("/api/v1/languages", headers=headers).json()

    assert execute.status_code == 503
    assert execute.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert submit.status_code == 503
    assert languages["languages"][0]["available"] is False
