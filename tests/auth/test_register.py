"""POST /api/v1/auth/register."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from app.auth.models import Role
from tests.auth.helpers import auth_headers, create_user_and_token

URL = "/api/v1/auth/register"


class TestRegister:
    def test_creates_an_active_user_with_the_user_role(self, client: TestClient) -> None:
        response = client.post(
            URL, json={"username": "Alice", "password": "a-long-password", "email": "a@x.io"}
        )

        assert response.status_code == 201
        body = response.json()
        assert body["username"] == "Alice"
        assert body["email"] == "a@x.io"
        assert body["role"] == "user"
        assert body["is_active"] is True
        assert "password" not in response.text
        assert "hash" not in response.text

    def test_username_is_unique_regardless_of_case(self, client: TestClient) -> None:
        client.post(URL, json={"username": "alice", "password": "a-long-password"})

        response = client.post(URL, json={"username": "ALICE", "password": "another-password"})

        assert response.status_code == 409
        assert response.json()["error"]["code"] == "CONFLICT"

    def test_refuses_a_password_shorter_than_the_minimum(self, client: TestClient) -> None:
        response = client.post(URL, json={"username": "alice", "password": "short"})

        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"][0]["loc"] == ["body", "password"]

    def test_refuses_a_password_equal_to_the_username(self, client: TestClient) -> None:
        response = client.post(URL, json={"username": "alice-smith", "password": "Alice-Smith"})

        assert response.status_code == 422
        assert "username" in response.json()["error"]["details"][0]["msg"]

    def test_cannot_choose_a_role(self, client: TestClient) -> None:
        response = client.post(
            URL, json={"username": "mallory", "password": "a-long-password", "role": "admin"}
        )

        assert response.status_code == 422
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"

    def test_refuses_a_username_with_odd_characters(self, client: TestClient) -> None:
        response = client.post(URL, json={"username": "al ice<script>", "password": "long-pass"})

        assert response.status_code == 422

    def test_refuses_malformed_json(self, client: TestClient) -> None:
        response = client.post(
            URL, content=b'{"username": ', headers={"Content-Type": "application/json"}
        )

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"

    def test_refuses_an_oversized_body(self, client: TestClient) -> None:
        response = client.post(URL, json={"username": "alice", "password": "x" * 600_000})

        assert response.status_code == 413
        assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

    def test_refuses_a_password_longer_than_the_maximum(self, client: TestClient) -> None:
        response = client.post(URL, json={"username": "alice", "password": "x" * 5000})

        assert response.status_code == 422

    def test_is_refused_when_registration_is_closed(
        self, make_settings: Callable, make_client: Callable
    ) -> None:
        with make_client(make_settings(allow_registration=False)) as client:
            response = client.post(URL, json={"username": "alice", "password": "long-password"})

        assert response.status_code == 403
        assert response.json()["error"]["code"] == "AUTHORIZATION_ERROR"

    def test_admins_still_create_users_when_registration_is_closed(
        self, make_settings: Callable, make_client: Callable
    ) -> None:
        with make_client(make_settings(allow_registration=False)) as client:
            _, token = create_user_and_token(client, Role.ADMIN)
            response = client.post(
                "/api/v1/users",
                json={"username": "bob", "password": "long-password", "role": "guest"},
                headers=auth_headers(token),
            )

        assert response.status_code == 201
        assert response.json()["role"] == "guest"
