"""Passwords and tokens never appear in a log line or in a response that should not carry them."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from app.auth.models import Role
from tests.auth.helpers import auth_headers, create_user_and_token

PASSWORD = "Pa55-very-secret-words"
ADMIN_PASSWORD = "Adm1n-very-secret-words"


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Everything the app logs, rendered by the app's own formatter (redaction included)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(root.handlers[0].formatter)
    handler.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler.stream
    finally:
        root.removeHandler(handler)


def _exercise_every_auth_path(client: TestClient) -> tuple[list[str], list[str]]:
    """Register, sign in (form and JSON, good and bad), refresh, reuse, read; return secrets seen
    and the bodies that must not contain passwords."""
    bodies = []
    registered = client.post(
        "/api/v1/auth/register", json={"username": "alice", "password": PASSWORD}
    )
    bodies.append(registered.text)
    bodies.append(
        client.post("/api/v1/auth/register", json={"username": "bob", "password": "x"}).text
    )
    bodies.append(
        client.post(
            "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD + "!"}
        ).text
    )
    bodies.append(
        client.post("/api/v1/auth/login", json={"username": PASSWORD, "password": PASSWORD}).text
    )
    form = client.post("/api/v1/auth/login", data={"username": "alice", "password": PASSWORD})
    pair = client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    ).json()
    rotated = client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    bodies.append(
        client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}).text
    )
    bodies.append(client.get("/api/v1/users/me", headers=auth_headers(pair["access_token"])).text)
    bodies.append(client.get("/api/v1/users", headers=auth_headers(pair["access_token"])).text)
    tokens = [
        form.json()["access_token"],
        form.json()["refresh_token"],
        pair["access_token"],
        pair["refresh_token"],
        rotated.json()["access_token"],
        rotated.json()["refresh_token"],
    ]
    return tokens, bodies


class TestSecretsStayOut:
    def test_no_password_or_token_in_any_log_line(
        self, make_settings: Callable, make_client: Callable
    ) -> None:
        settings = make_settings(
            log_level="DEBUG",
            log_format="json",
            admin_username="root",
            admin_password=ADMIN_PASSWORD,
            rate_limit_enabled=True,
        )
        with make_client(settings) as client, captured_logs() as logs:
            tokens, _ = _exercise_every_auth_path(client)
            client.post("/api/v1/auth/login", json={"username": "root", "password": ADMIN_PASSWORD})

        output = logs.getvalue()
        assert "login_succeeded" in output  # the capture really saw the app's log lines
        assert "refresh_token_reuse_detected" in output
        signing_key = client.app.state.settings.secret_key  # made in DATA_DIR at start-up
        for secret in (PASSWORD, ADMIN_PASSWORD, signing_key, *tokens):
            assert secret not in output
        for token in tokens:
            assert token.split(".")[2] not in output  # not even the signature alone

    def test_no_password_or_hash_in_any_response(self, client: TestClient) -> None:
        _, bodies = _exercise_every_auth_path(client)

        for body in bodies:
            assert PASSWORD not in body
            assert "argon2" not in body
            assert "password_hash" not in body

    def test_admin_listing_carries_no_hashes(self, client: TestClient) -> None:
        _, token = create_user_and_token(client, Role.ADMIN)

        response = client.get("/api/v1/users", headers=auth_headers(token))

        assert response.status_code == 200
        assert "argon2" not in response.text
        assert "hash" not in response.text
