"""/api/v1/users: the caller's profile, and admin-only account management."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from app.auth.models import Role
from tests.auth.helpers import auth_headers, create_user, create_user_and_token, login

USERS = "/api/v1/users"


def _admin_headers(client: TestClient) -> dict[str, str]:
    return auth_headers(create_user_and_token(client, Role.ADMIN)[1])


class TestReadMe:
    @pytest.mark.parametrize("role", list(Role))
    def test_every_role_reads_its_own_profile(self, client: TestClient, role: Role) -> None:
        user_id, token = create_user_and_token(client, role)

        response = client.get(f"{USERS}/me", headers=auth_headers(token))

        assert response.status_code == 200
        assert response.json()["id"] == user_id
        assert response.json()["role"] == role.value

    def test_cannot_be_changed_through_me(self, client: TestClient) -> None:
        _, token = create_user_and_token(client)

        response = client.patch(f"{USERS}/me", json={"role": "admin"}, headers=auth_headers(token))

        assert response.status_code in (403, 405, 422)
        assert client.get(f"{USERS}/me", headers=auth_headers(token)).json()["role"] == "user"


class TestListUsers:
    def test_admin_pages_through_users(self, client: TestClient) -> None:
        headers = _admin_headers(client)
        for _ in range(3):
            create_user(client)

        first = client.get(USERS, params={"limit": 2}, headers=headers).json()
        second = client.get(USERS, params={"limit": 2, "offset": 2}, headers=headers).json()

        assert first["total"] == second["total"] == 4
        assert len(first["items"]) == 2
        assert len(second["items"]) == 2
        ids = {item["id"] for item in first["items"] + second["items"]}
        assert len(ids) == 4

    @pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"offset": -1}])
    def test_refuses_out_of_range_paging(self, client: TestClient, params: dict) -> None:
        response = client.get(USERS, params=params, headers=_admin_headers(client))

        assert response.status_code == 422

    @pytest.mark.parametrize("role", [Role.USER, Role.GUEST])
    def test_refuses_non_admins(self, client: TestClient, role: Role) -> None:
        _, token = create_user_and_token(client, role)

        response = client.get(USERS, headers=auth_headers(token))

        assert response.status_code == 403
        assert response.json()["error"]["code"] == "AUTHORIZATION_ERROR"

    def test_refuses_anonymous_callers(self, client: TestClient) -> None:
        response = client.get(USERS)

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


class TestCreateUser:
    def test_admin_creates_a_user_of_any_role(self, client: TestClient) -> None:
        response = client.post(
            USERS,
            json={"username": "newadmin", "password": "a-long-password", "role": "admin"},
            headers=_admin_headers(client),
        )

        assert response.status_code == 201
        assert response.json()["role"] == "admin"

    def test_a_user_cannot_create_an_admin(self, client: TestClient) -> None:
        _, token = create_user_and_token(client)

        response = client.post(
            USERS,
            json={"username": "sneaky", "password": "a-long-password", "role": "admin"},
            headers=auth_headers(token),
        )

        assert response.status_code == 403

    def test_the_password_policy_still_applies(self, client: TestClient) -> None:
        response = client.post(
            USERS,
            json={"username": "newuser", "password": "newuser", "role": "user"},
            headers=_admin_headers(client),
        )

        assert response.status_code == 422


class TestUpdateUser:
    def test_admin_changes_a_role(self, client: TestClient) -> None:
        target = create_user(client)

        response = client.patch(
            f"{USERS}/{target.id}", json={"role": "guest"}, headers=_admin_headers(client)
        )

        assert response.status_code == 200
        assert response.json()["role"] == "guest"

    def test_a_demotion_takes_effect_on_the_current_token(self, client: TestClient) -> None:
        target_id, token = create_user_and_token(client, Role.ADMIN)
        client.patch(f"{USERS}/{target_id}", json={"role": "user"}, headers=_admin_headers(client))

        assert client.get(USERS, headers=auth_headers(token)).status_code == 403

    def test_a_role_change_ends_the_users_refresh_tokens(self, client: TestClient) -> None:
        target = create_user(client, username="alice")
        pair = login(client, "alice")
        client.patch(f"{USERS}/{target.id}", json={"role": "guest"}, headers=_admin_headers(client))

        response = client.post(
            "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )

        assert response.status_code == 401

    def test_a_user_cannot_raise_its_own_role(self, client: TestClient) -> None:
        user_id, token = create_user_and_token(client)

        response = client.patch(
            f"{USERS}/{user_id}", json={"role": "admin"}, headers=auth_headers(token)
        )

        assert response.status_code == 403
        assert client.get(f"{USERS}/me", headers=auth_headers(token)).json()["role"] == "user"

    def test_a_guest_cannot_raise_its_own_role(self, client: TestClient) -> None:
        user_id, token = create_user_and_token(client, Role.GUEST)

        response = client.patch(
            f"{USERS}/{user_id}", json={"role": "user"}, headers=auth_headers(token)
        )

        assert response.status_code == 403

    def test_the_last_active_admin_cannot_be_demoted(self, client: TestClient) -> None:
        admin_id, token = create_user_and_token(client, Role.ADMIN)

        response = client.patch(
            f"{USERS}/{admin_id}", json={"role": "user"}, headers=auth_headers(token)
        )

        assert response.status_code == 409
        assert response.json()["error"]["code"] == "CONFLICT"

    def test_refuses_an_unknown_role(self, client: TestClient) -> None:
        target = create_user(client)

        response = client.patch(
            f"{USERS}/{target.id}", json={"role": "root"}, headers=_admin_headers(client)
        )

        assert response.status_code == 422

    def test_refuses_an_empty_change(self, client: TestClient) -> None:
        target = create_user(client)

        response = client.patch(f"{USERS}/{target.id}", json={}, headers=_admin_headers(client))

        assert response.status_code == 422

    def test_refuses_unknown_fields(self, client: TestClient) -> None:
        target = create_user(client)

        response = client.patch(
            f"{USERS}/{target.id}",
            json={"password_hash": "x", "role": "user"},
            headers=_admin_headers(client),
        )

        assert response.status_code == 422

    def test_an_unknown_user_is_404(self, client: TestClient) -> None:
        response = client.patch(
            f"{USERS}/{uuid.uuid4()}", json={"role": "user"}, headers=_admin_headers(client)
        )

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"

    def test_a_malformed_id_is_a_validation_error(self, client: TestClient) -> None:
        response = client.patch(
            f"{USERS}/../../etc", json={"role": "user"}, headers=_admin_headers(client)
        )

        assert response.status_code in (404, 422)
        assert "error" in response.json()


class TestDeactivateUser:
    def test_admin_deactivates_a_user_who_then_cannot_sign_in(self, client: TestClient) -> None:
        target = create_user(client, username="alice")

        response = client.delete(f"{USERS}/{target.id}", headers=_admin_headers(client))

        assert response.status_code == 200
        assert response.json()["is_active"] is False
        signin = client.post("/api/v1/auth/login", json={"username": "alice", "password": "x" * 12})
        assert signin.status_code == 401

    def test_the_account_is_kept(self, client: TestClient) -> None:
        headers = _admin_headers(client)
        target = create_user(client)
        client.delete(f"{USERS}/{target.id}", headers=headers)

        response = client.get(f"{USERS}/{target.id}", headers=headers)

        assert response.status_code == 200
        assert response.json()["is_active"] is False

    def test_a_user_cannot_deactivate_another_user(self, client: TestClient) -> None:
        target = create_user(client)
        _, token = create_user_and_token(client)

        response = client.delete(f"{USERS}/{target.id}", headers=auth_headers(token))

        assert response.status_code == 403

    def test_the_last_active_admin_cannot_deactivate_itself(self, client: TestClient) -> None:
        admin_id, token = create_user_and_token(client, Role.ADMIN)

        response = client.delete(f"{USERS}/{admin_id}", headers=auth_headers(token))

        assert response.status_code == 409
