"""The OpenAPI document describes the auth flow so the docs' Authorize button works."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    return client.get("/api/v1/openapi.json").json()


class TestOpenApiAuthFlow:
    def test_declares_the_oauth2_password_flow_on_the_login_endpoint(
        self, openapi: dict[str, Any]
    ) -> None:
        schemes = openapi["components"]["securitySchemes"]

        (scheme,) = schemes.values()
        assert scheme["type"] == "oauth2"
        assert scheme["flows"]["password"]["tokenUrl"] == "/api/v1/auth/login"

    def test_login_declares_one_json_body_and_names_the_form(self, openapi: dict[str, Any]) -> None:
        # One body type: two break generated clients (openapi-python-client issue #1451).
        operation = openapi["paths"]["/api/v1/auth/login"]["post"]
        content = operation["requestBody"]["content"]

        assert set(content) == {"application/json"}
        assert {"username", "password"} <= set(content["application/json"]["schema"]["required"])
        assert "application/x-www-form-urlencoded" in operation["description"]

    def test_protected_routes_carry_the_security_requirement(self, openapi: dict[str, Any]) -> None:
        for path, method in [("/api/v1/users/me", "get"), ("/api/v1/users", "get")]:
            assert openapi["paths"][path][method]["security"], path

    def test_public_auth_routes_need_no_token(self, openapi: dict[str, Any]) -> None:
        for path in ("/api/v1/auth/login", "/api/v1/auth/register", "/api/v1/auth/refresh"):
            assert "security" not in openapi["paths"][path]["post"], path

    def test_the_docs_page_is_served(self, client: TestClient) -> None:
        response = client.get("/api/v1/docs")

        assert response.status_code == 200
        assert "/api/v1/openapi.json" in response.text

    def test_the_swagger_authorize_request_signs_in(self, client: TestClient) -> None:
        # What Swagger UI sends from the Authorize dialog: the form, with empty optional fields.
        client.post("/api/v1/auth/register", json={"username": "alice", "password": "long-pass"})

        response = client.post(
            "/api/v1/auth/login",
            content=b"grant_type=password&username=alice&password=long-pass&scope=",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

        assert response.status_code == 200
        assert response.json()["token_type"] == "bearer"
