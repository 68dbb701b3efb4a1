"""POST /api/v1/auth/refresh: rotation, reuse detection, family revocation."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.auth.models import RefreshToken, Role
from tests.auth.helpers import auth_headers, create_user, create_user_and_token, login

URL = "/api/v1/auth/refresh"


def _refresh(client: TestClient, token: str) -> object:
    return client.post(URL, json={"refresh_token": token})


class TestRefresh:
    def test_swaps_a_refresh_token_for_a_new_working_pair(self, client: TestClient) -> None:
        create_user(client, username="alice")
        first = login(client, "alice")

        response = _refresh(client, first["refresh_token"])

        assert response.status_code == 200
        second = response.json()
        assert second["refresh_token"] != first["refresh_token"]
        me = client.get("/api/v1/users/me", headers=auth_headers(second["access_token"]))
        assert me.status_code == 200

    def test_the_old_refresh_token_is_revoked_and_linked_to_its_successor(
        self, client: TestClient
    ) -> None:
        create_user(client, username="alice")
        first = login(client, "alice")
        _refresh(client, first["refresh_token"])

        with client.app.state.session_factory() as session:
            rows = session.query(RefreshToken).order_by(RefreshToken.created_at).all()
        assert len(rows) == 2
        assert rows[0].revoked_at is not None
        assert rows[0].replaced_by == rows[1].jti
        assert rows[0].family_id == rows[1].family_id

    def test_a_reused_refresh_token_is_refused(self, client: TestClient) -> None:
        create_user(client, username="alice")
        first = login(client, "alice")
        _refresh(client, first["refresh_token"])

        response = _refresh(client, first["refresh_token"])

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "AUTHENTICATION_ERROR"

    def test_reuse_revokes_the_whole_family(self, client: TestClient) -> None:
        create_user(client, username="alice")
        stolen = login(client, "alice")
        current = _refresh(client, stolen["refresh_token"]).json()

        _refresh(client, stolen["refresh_token"])  # the thief replays the old token

        assert _refresh(client, current["refresh_token"]).status_code == 401

    def test_reuse_leaves_other_sign_ins_alone(self, client: TestClient) -> None:
        create_user(client, username="alice")
        laptop = login(client, "alice")
        phone = login(client, "alice")
        _refresh(client, laptop["refresh_token"])
        _refresh(client, laptop["refresh_token"])

        assert _refresh(client, phone["refresh_token"]).status_code == 200

    def test_an_access_token_is_not_a_refresh_token(self, client: TestClient) -> None:
        create_user(client, username="alice")
        pair = login(client, "alice")

        assert _refresh(client, pair["access_token"]).status_code == 401

    def test_a_malformed_refresh_token_is_refused(self, client: TestClient) -> None:
        response = _refresh(client, "garbage")

        assert response.status_code == 401
        assert response.json()["error"]["code"] == "AUTHENTICATION_ERROR"

    def test_a_deactivated_user_cannot_refresh(self, client: TestClient) -> None:
        user = create_user(client, username="alice")
        pair = login(client, "alice")
        _, admin_token = create_user_and_token(client, Role.ADMIN)
        client.delete(f"/api/v1/users/{user.id}", headers=auth_headers(admin_token))

        assert _refresh(client, pair["refresh_token"]).status_code == 401

    def test_a_missing_body_field_is_a_validation_error(self, client: TestClient) -> None:
        response = client.post(URL, json={})

        assert response.status_code == 422
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
