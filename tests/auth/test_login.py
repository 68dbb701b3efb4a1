"""POST /api/v1/auth/login: the OAuth2 password form and JSON on one endpoint."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from fastapi.testclient import TestClient
from jose import jwt

from app.auth import service
from app.auth.models import Role
from tests.auth.helpers import DEFAULT_PASSWORD, auth_headers, create_user, create_user_and_token

URL = "/api/v1/auth/login"


class TestLogin:
    def test_accepts_the_oauth2_password_form(self, client: TestClient) -> None:
        create_user(client, username="alice")

        response = client.post(
            URL,
            data={"grant_type": "password", "username": "alice", "password": DEFAULT_PASSWORD},
        )

        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 15 * 60
        assert body["refresh_expires_in"] == 7 * 24 * 60 * 60
        me = client.get("/api/v1/users/me", headers=auth_headers(body["access_token"]))
        assert me.json()["username"] == "alice"

    def test_accepts_json(self, client: TestClient) -> None:
        create_user(client, username="alice")

        response = client.post(URL, json={"username": "alice", "password": DEFAULT_PASSWORD})

        assert response.status_code == 200
        assert response.json()["access_token"]

    def test_the_username_is_case_insensitive(self, client: TestClient) -> None:
        create_user(client, username="Alice")

        response = client.post(URL, json={"username": "ALICE", "password": DEFAULT_PASSWORD})

        assert response.status_code == 200

    def test_tokens_carry_every_required_claim(self, client: TestClient) -> None:
        user = create_user(client, username="alice")

        body = client.post(URL, json={"username": "alice", "password": DEFAULT_PASSWORD}).json()

        access = jwt.get_unverified_claims(body["access_token"])
        refresh = jwt.get_unverified_claims(body["refresh_token"])
        assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"
        for claims, kind in ((access, "access"), (refresh, "refresh")):
            assert {"sub", "role", "type", "iat", "exp", "jti", "iss", "aud"} <= set(claims)
            assert claims["sub"] == user.id
            assert claims["type"] == kind
            assert claims["iss"] == "warmbox"
            assert claims["aud"] == "warmbox-api"
        assert access["jti"] != refresh["jti"]
        assert access["exp"] - access["iat"] == 15 * 60

    def test_refuses_a_wrong_password(self, client: TestClient) -> None:
        create_user(client, username="alice")

        response = client.post(URL, json={"username": "alice", "password": "wrong-password"})

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "AUTHENTICATION_ERROR"

    def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(
        self, client: TestClient
    ) -> None:
        create_user(client, username="alice")

        wrong = client.post(URL, json={"username": "alice", "password": "wrong-password"})
        unknown = client.post(URL, json={"username": "nobody", "password": "wrong-password"})

        assert unknown.status_code == wrong.status_code == 401
        assert unknown.json()["error"]["message"] == wrong.json()["error"]["message"]

    def test_an_unknown_user_still_pays_for_a_password_check(self, client: TestClient) -> None:
        with patch.object(service, "burn_password_check", wraps=service.burn_password_check) as spy:
            client.post(URL, json={"username": "nobody", "password": "whatever-password"})

        spy.assert_called_once()

    def test_refuses_a_deactivated_user(self, client: TestClient) -> None:
        user = create_user(client, username="alice")
        _, admin_token = create_user_and_token(client, Role.ADMIN)
        client.delete(f"/api/v1/users/{user.id}", headers=auth_headers(admin_token))

        response = client.post(URL, json={"username": "alice", "password": DEFAULT_PASSWORD})

        assert response.status_code == 401

    def test_refuses_another_grant_type(self, client: TestClient) -> None:
        create_user(client, username="alice")

        response = client.post(
            URL,
            data={"grant_type": "client_credentials", "username": "alice", "password": "x"},
        )

        assert response.status_code == 422

    @pytest.mark.parametrize(
        "payload",
        [{}, {"username": "alice"}, {"password": "p"}, {"username": "", "password": "p"}],
        ids=["empty", "no-password", "no-username", "empty-username"],
    )
    def test_refuses_missing_fields(self, client: TestClient, payload: dict) -> None:
        response = client.post(URL, json=payload)

        assert response.status_code == 422
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"

    def test_refuses_malformed_json(self, client: TestClient) -> None:
        response = client.post(
            URL, content=b"{not json", headers={"Content-Type": "application/json"}
        )

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"

    def test_refuses_a_json_body_that_is_not_an_object(self, client: TestClient) -> None:
        response = client.post(URL, json=["alice", "password"])

        assert response.status_code == 400

    def test_refuses_unknown_fields(self, client: TestClient) -> None:
        response = client.post(URL, json={"username": "a", "password": "b", "role": "admin"})

        assert response.status_code == 422

    def test_refuses_an_unsupported_content_type(self, client: TestClient) -> None:
        response = client.post(
            URL, content=b"username=alice", headers={"Content-Type": "text/plain"}
        )

        assert response.status_code == 415
        assert response.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"

    def test_refuses_a_file_upload(self, client: TestClient) -> None:
        response = client.post(
            URL, data={"username": "alice"}, files={"password": ("p.txt", b"secret")}
        )

        assert response.status_code == 400

    def test_refuses_an_oversized_password_without_hashing_it(self, client: TestClient) -> None:
        with patch.object(service, "authenticate") as authenticate:
            response = client.post(URL, json={"username": "alice", "password": "x" * 100_000})

        assert response.status_code == 422
        authenticate.assert_not_called()

    def test_a_validation_error_never_echoes_the_password(self, client: TestClient) -> None:
        response = client.post(URL, json={"username": "", "password": "Sup3r-Secret-Value"})

        assert response.status_code == 422
        assert "Sup3r-Secret-Value" not in response.text
