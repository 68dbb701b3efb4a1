"""Every kind of bad request gets the project's one error body, with the right status, and no
stack trace or path ever reaches the client."""

from __future__ import annotations

import pytest
from fastapi import APIRouter

from app.core.errors import ConflictError

ERROR_KEYS = {"code", "message", "request_id", "details"}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == ERROR_KEYS
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return body["error"]


@pytest.fixture
def client(make_settings, make_client):
    """An app with two extra routes: one that raises an AppError, one that crashes."""
    from app import main

    original = main.build_v1_router

    def with_test_routes():
        router = original()
        extra = APIRouter()

        @extra.get("/boom")
        def boom() -> None:
            raise RuntimeError("secret internal detail at /srv/app/private.py")

        @extra.get("/conflict")
        def conflict() -> None:
            raise ConflictError("already there")

        @extra.post("/echo")
        def echo(payload: dict[str, int]) -> dict[str, int]:
            return payload

        router.include_router(extra, prefix="/test")
        return router

    main.build_v1_router = with_test_routes
    try:
        with make_client(make_settings(max_request_body_bytes=2048)) as test_client:
            yield test_client
    finally:
        main.build_v1_router = original


class TestErrorFormat:
    def test_unknown_route_is_not_found(self, client):
        assert_error(client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")

    def test_wrong_method_is_method_not_allowed(self, client):
        assert_error(client.delete("/health"), 405, "METHOD_NOT_ALLOWED")

    def test_malformed_json_is_a_400_validation_error(self, client):
        response = client.post(
            "/api/v1/test/echo", content=b'{"a": 1', headers={"content-type": "application/json"}
        )
        assert_error(response, 400, "VALIDATION_ERROR")

    def test_schema_violation_is_a_422_with_locations_and_no_echoed_input(self, client):
        response = client.post("/api/v1/test/echo", json={"a": "not-a-number-but-secret"})
        error = assert_error(response, 422, "VALIDATION_ERROR")
        assert error["details"][0]["loc"] == ["body", "a"]
        assert "not-a-number-but-secret" not in response.text

    def test_wrong_content_type_is_415(self, client):
        response = client.post(
            "/api/v1/test/echo", content=b"a=1", headers={"content-type": "text/plain"}
        )
        assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")

    def test_declared_oversized_body_is_refused_before_it_is_read(self, client):
        response = client.post("/api/v1/test/echo", json={"a": 1, "pad": "x" * 5000})
        assert_error(response, 413, "PAYLOAD_TOO_LARGE")

    def test_streamed_oversized_body_without_length_is_refused(self, client):
        def chunks():
            for _ in range(10):
                yield b"x" * 1024

        response = client.post(
            "/api/v1/test/echo", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_error(response, 413, "PAYLOAD_TOO_LARGE")

    def test_app_error_carries_its_own_status_and_code(self, client):
        error = assert_error(client.get("/api/v1/test/conflict"), 409, "CONFLICT")
        assert error["message"] == "already there"

    def test_unhandled_exception_is_500_without_internals(self, client):
        response = client.get("/api/v1/test/boom")
        error = assert_error(response, 500, "INTERNAL_ERROR")
        assert error["message"] == "internal error"
        for leak in ("secret internal detail", "/srv/app", "Traceback", "RuntimeError"):
            assert leak not in response.text
