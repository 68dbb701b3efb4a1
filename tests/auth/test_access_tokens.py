"""Every way an access token can be wrong ends in 401 AUTHENTICATION_ERROR + WWW-Authenticate.

Probed on GET /api/v1/users/me, which any valid token may read.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
from fastapi.testclient import TestClient
from jose import jwt

from app.auth.models import Role, User
from tests.auth.helpers import (
    access_token_for,
    auth_headers,
    create_user,
    create_user_and_token,
    login,
)

ME = "/api/v1/users/me"


def _claims(client: TestClient, user: User, **overrides: Any) -> dict[str, Any]:
    settings = client.app.state.settings
    now = int(time.time())
    claims = {
        "sub": user.id,
        "role": user.role,
        "type": "access",
        "iat": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _sign(client: TestClient, claims: dict[str, Any], **kwargs: Any) -> str:
    settings = client.app.state.settings
    key = kwargs.pop("key", settings.secret_key)
    return jwt.encode(claims, key, algorithm=kwargs.pop("algorithm", "HS256"), **kwargs)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "AUTHENTICATION_ERROR"


class TestAccessTokenRefusals:
    def test_a_valid_token_is_accepted(self, client: TestClient) -> None:
        user_id, token = create_user_and_token(client)

        response = client.get(ME, headers=auth_headers(token))

        assert response.status_code == 200
        assert response.json()["id"] == user_id

    def test_no_token(self, client: TestClient) -> None:
        assert_refused(client.get(ME))

    def test_an_empty_bearer_token(self, client: TestClient) -> None:
        assert_refused(client.get(ME, headers={"Authorization": "Bearer "}))

    def test_another_authorization_scheme(self, client: TestClient) -> None:
        assert_refused(client.get(ME, headers={"Authorization": "Basic YWxpY2U6cGFzcw=="}))

    def test_a_malformed_token(self, client: TestClient) -> None:
        assert_refused(client.get(ME, headers=auth_headers("not.a.jwt")))

    def test_garbage_that_is_not_even_base64(self, client: TestClient) -> None:
        assert_refused(client.get(ME, headers=auth_headers("%%%%.@@@@.!!!!")))

    def test_a_wrong_signature(self, client: TestClient) -> None:
        user = create_user(client)
        token = _sign(client, _claims(client, user), key="another-key-entirely-" * 3)

        assert_refused(client.get(ME, headers=auth_headers(token)))

    def test_a_tampered_payload(self, client: TestClient) -> None:
        user = create_user(client)
        header, _, signature = access_token_for(client, user).split(".")
        forged = _b64(_claims(client, user, role="admin"))

        assert_refused(client.get(ME, headers=auth_headers(f"{header}.{forged}.{signature}")))

    def test_alg_none(self, client: TestClient) -> None:
        user = create_user(client)
        token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(client, user))}."

        assert_refused(client.get(ME, headers=auth_headers(token)))

    def test_alg_none_with_a_copied_signature(self, client: TestClient) -> None:
        user = create_user(client)
        signature = access_token_for(client, user).split(".")[2]
        token = f"{_b64({'alg': 'none'})}.{_b64(_claims(client, user))}.{signature}"

        assert_refused(client.get(ME, headers=auth_headers(token)))

    def test_another_hmac_algorithm_with_the_right_key(self, client: TestClient) -> None:
        user = create_user(client)
        token = _sign(client, _claims(client, user), algorithm="HS512")

        assert_refused(client.get(ME, headers=auth_headers(token)))

    def test_an_expired_token(self, client: TestClient) -> None:
        user = create_user(client)
        past = int(time.time()) - 3600
        token = _sign(client, _claims(client, user, iat=past - 60, exp=past))

        response = client.get(ME, headers=auth_headers(token))

        assert_refused(response)
        assert "expired" in response.json()["error"]["message"]

    def test_a_wrong_issuer(self, client: TestClient) -> None:
        user = create_user(client)
        token = _sign(client, _claims(client, user, iss="someone-else"))

        assert_refused(client.get(ME, headers=auth_headers(token)))

    def test_a_wrong_audience(self, client: TestClient) -> None:
        user = create_user(client)
        token = _sign(client, _claims(client, user, aud="another-api"))

        assert_refused(client.get(ME, headers=auth_headers(token)))

    def test_a_token_without_an_expiry(self, client: TestClient) -> None:
        user = create_user(client)
        claims = _claims(client, user)
        del claims["exp"]

        assert_refused(client.get(ME, headers=auth_headers(_sign(client, claims))))

    def test_a_token_without_a_type(self, client: TestClient) -> None:
        user = create_user(client)
        claims = _claims(client, user)
        del claims["type"]

        assert_refused(client.get(ME, headers=auth_headers(_sign(client, claims))))

    def test_a_refresh_token_used_as_an_access_token(self, client: TestClient) -> None:
        create_user(client, username="alice")
        pair = login(client, "alice")

        assert_refused(client.get(ME, headers=auth_headers(pair["refresh_token"])))

    def test_a_token_of_a_deactivated_user(self, client: TestClient) -> None:
        user_id, token = create_user_and_token(client)
        _, admin_token = create_user_and_token(client, Role.ADMIN)
        deleted = client.delete(f"/api/v1/users/{user_id}", headers=auth_headers(admin_token))
        assert deleted.status_code == 200

        assert_refused(client.get(ME, headers=auth_headers(token)))

    def test_a_token_of_a_deleted_user(self, client: TestClient) -> None:
        user = create_user(client)
        token = access_token_for(client, user)
        with client.app.state.session_factory() as session:
            session.delete(session.get(User, user.id))
            session.commit()

        assert_refused(client.get(ME, headers=auth_headers(token)))

    def test_a_token_for_a_user_that_never_existed(self, client: TestClient) -> None:
        user = create_user(client)
        token = _sign(client, _claims(client, user, sub=str(uuid.uuid4())))

        assert_refused(client.get(ME, headers=auth_headers(token)))

    def test_a_huge_token(self, client: TestClient) -> None:
        assert_refused(client.get(ME, headers=auth_headers("a" * 20_000)))
