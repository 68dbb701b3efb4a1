"""The versioned API's outer shape: headers, version listing, docs, CORS, Sentry switch."""

from __future__ import annotations

import uuid

from app.core.sentry import init_sentry


class TestHeaders:
    def test_every_response_carries_version_and_request_id(self, client):
        response = client.get("/health")
        assert response.headers["x-api-version"] == "v1"
        uuid.UUID(response.headers["x-request-id"])

    def test_a_sane_incoming_request_id_is_echoed(self, client):
        response = client.get("/health", headers={"X-Request-ID": "frontend-42.a_b:c"})
        assert response.headers["x-request-id"] == "frontend-42.a_b:c"

    def test_an_insane_request_id_is_replaced(self, client):
        hostile = "x" * 300
        response = client.get("/health", headers={"X-Request-ID": hostile})
        assert response.headers["x-request-id"] != hostile
        uuid.UUID(response.headers["x-request-id"])

    def test_error_responses_carry_them_too(self, client):
        response = client.get("/api/v1/missing")
        assert response.headers["x-api-version"] == "v1"
        assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


class TestVersionsAndDocs:
    def test_version_listing(self, client):
        assert client.get("/api/version").json() == {"current": "v1", "supported": ["v1"]}

    def test_openapi_and_docs_live_under_v1(self, client):
        schema = client.get("/api/v1/openapi.json").json()
        assert schema["info"]["title"] == "warmbox"
        assert all(
            path.startswith(("/api/v1/", "/health", "/api/version", "/metrics"))
            for path in schema["paths"]
        )
        assert client.get("/api/v1/docs").status_code == 200


class TestCors:
    def test_configured_origin_is_allowed(self, make_settings, make_client):
        with make_client(make_settings(cors_origins="https://learn.example")) as client:
            response = client.options(
                "/api/version",
                headers={"Origin": "https://learn.example", "Access-Control-Request-Method": "GET"},
            )
        assert response.headers["access-control-allow-origin"] == "https://learn.example"

    def test_other_origins_get_no_allowance(self, make_settings, make_client):
        with make_client(make_settings(cors_origins="https://learn.example")) as client:
            response = client.get("/api/version", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in response.headers


class TestSentry:
    def test_sentry_stays_off_without_a_dsn(self, make_settings):
        assert init_sentry(make_settings(sentry_dsn="")) is False
