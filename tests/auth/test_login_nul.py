"""A NUL in a login's username is an ordinary failed login on both databases, never a 500.

No account can have one (registration refuses it), and PostgreSQL refuses U+0000 in a query
parameter where SQLite simply finds no row.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

LOGIN = "/api/v1/auth/login"


def test_a_username_with_nul_is_a_failed_login_as_json_and_as_a_form(client: TestClient) -> None:
    credentials = {"username": "ali\x00ce", "password": "correct-horse-battery-staple"}

    as_json = client.post(LOGIN, json=credentials)
    as_form = client.post(LOGIN, data=credentials)

    for response in (as_json, as_form):
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "AUTHENTICATION_ERROR"
