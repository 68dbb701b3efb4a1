"""/metrics: Prometheus text with HTTP, execution, pool and queue metrics; optional bearer token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.observability.metrics import _RouteTemplateMiddleware
from tests.conftest import ClientFactory, SettingsFactory
from tests.jobs.helpers import app_settings, headers_for, running_app

pytestmark = pytest.mark.docker


def samples(client: TestClient, **kwargs: object) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with running_app(app_settings(tmp_path_factory.mktemp("metrics"))) as test_client:
        yield test_client


class TestMetrics:
    def test_executions_are_counted_by_language_and_outcome(self, client: TestClient) -> None:
        user = headers_for(client)
        key = (
            "warmbox_executions_total",
            frozenset({"language": "python", "mode": "sync", "outcome": "succeeded"}.items()),
        )
        before = samples(client).get(key, 0.0)

        client.post("/api/v1/code/execute", json={"code": "print(1)"}, headers=user)
        client.post("/api/v1/code/execute", json={"code": "print(2)"}, headers=user)

        after = samples(client)
        assert after[key] == before + 2
        duration = ("warmbox_execution_duration_seconds_count", frozenset({("language", "python")}))
        assert after[duration] >= 2

    def test_pool_and_queue_gauges_are_exposed(self, client: TestClient) -> None:
        found = samples(client)
        python = frozenset({("language", "python")})

        assert found[("warmbox_pool_total", python)] >= 1
        assert ("warmbox_pool_available", python) in found
        assert ("warmbox_pool_in_use", python) in found
        assert ("warmbox_pool_resets_total", python) in found
        assert ("warmbox_pool_reset_failures_total", python) in found
        assert ("warmbox_pool_cold_starts_total", python) in found
        assert ("warmbox_pool_evictions_total", python) in found
        assert found[("warmbox_pool_budget_in_use", python)] >= 1
        wait = frozenset({("language", "python"), ("stat", "p95")})
        assert ("warmbox_pool_acquire_wait_seconds", wait) in found
        assert ("warmbox_job_queue_depth", frozenset()) in found
        assert ("warmbox_job_queue_users", frozenset()) in found

    def test_http_requests_are_counted_by_route_template(self, client: TestClient) -> None:
        user = headers_for(client)
        client.get("/api/v1/jobs/00000000-0000-0000-0000-000000000000", headers=user)

        names = {(name, dict(labels).get("handler")) for name, labels in samples(client)}

        assert ("warmbox_http_requests_total", "/api/v1/jobs/{job_id}") in names

    def test_route_templates_are_kept_per_method_and_path_and_stay_bounded(
        self, client: TestClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        user = headers_for(client)
        middleware = _route_template_middleware(client)
        monkeypatch.setattr(middleware, "HANDLER_CACHE_SIZE", 3)
        middleware._handlers.clear()

        def requests_by_handler() -> dict[tuple[str, str], float]:
            return {
                (dict(labels)["method"], dict(labels)["handler"]): value
                for (name, labels), value in samples(client).items()
                if name == "warmbox_http_requests_total"
            }

        before = requests_by_handler()
        path = "/api/v1/jobs/00000000-0000-0000-0000-000000000001"
        for _ in range(2):
            client.get(path, headers=user)  # 404: no such job, still the route's template
            client.delete(path, headers=user)  # 405: the path's route has no DELETE
        client.get("/api/v1/no-such-route", headers=user)  # untemplated: grouped as "none"
        after = requests_by_handler()

        template = "/api/v1/jobs/{job_id}"
        assert after[("GET", template)] == before.get(("GET", template), 0) + 2
        assert ("DELETE", template) not in after
        assert after[("DELETE", "none")] == before.get(("DELETE", "none"), 0) + 2
        assert after[("GET", "none")] == before.get(("GET", "none"), 0) + 1
        # The scrapes in between are requests too: never more than the bound is kept.
        assert 0 < len(middleware._handlers) <= 3


def _route_template_middleware(client: TestClient) -> _RouteTemplateMiddleware:
    """The app's instance of the instrumentator's middleware (built at the first request)."""
    app = client.app.middleware_stack  # type: ignore[attr-defined]
    while app is not None and not isinstance(app, _RouteTemplateMiddleware):
        app = getattr(app, "app", None)
    assert app is not None
    return app


def test_a_metrics_token_is_required_when_configured(
    make_settings: SettingsFactory, make_client: ClientFactory
) -> None:
    with make_client(make_settings(metrics_token="scrape-secret")) as client:
        anonymous = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})

    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "AUTHENTICATION_ERROR"
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert "warmbox_executions" in right.text


def test_metrics_can_be_switched_off(
    make_settings: SettingsFactory, make_client: ClientFactory, tmp_path: Path
) -> None:
    with make_client(make_settings(metrics_enabled=False)) as client:
        assert client.get("/metrics").status_code == 404
