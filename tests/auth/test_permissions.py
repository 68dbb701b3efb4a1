"""Roles map to permissions, and require_permission guards routes with 401/403."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient

from app.auth.dependencies import require_permission
from app.auth.models import Role, User
from app.auth.permissions import ROLE_PERMISSIONS, Permission, has_permission
from app.auth.security import TokenType, create_token
from tests.auth.helpers import auth_headers, create_user, create_user_and_token

PROBE = "/probe/execute"


class TestRolePermissions:
    def test_admin_has_every_permission(self) -> None:
        assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)

    def test_user_executes_and_manages_only_its_own_jobs(self) -> None:
        assert ROLE_PERMISSIONS[Role.USER] == {
            Permission.EXECUTE_CODE,
            Permission.JOBS_READ_OWN,
            Permission.JOBS_CANCEL_OWN,
            Permission.LANGUAGES_READ,
        }

    def test_guest_reads_public_information_only(self) -> None:
        assert ROLE_PERMISSIONS[Role.GUEST] == {Permission.LANGUAGES_READ}
        assert not has_permission(Role.GUEST, Permission.EXECUTE_CODE)

    def test_an_unknown_role_has_no_permission(self) -> None:
        assert not has_permission("superuser", Permission.LANGUAGES_READ)


@pytest.fixture
def probe_client(make_settings: Callable, make_client: Callable) -> Iterator[TestClient]:
    """The real app plus one route that needs EXECUTE_CODE, as the execution routes will."""
    with make_client(make_settings()) as client:

        async def probe(
            user: Annotated[User, Depends(require_permission(Permission.EXECUTE_CODE))],
        ) -> dict[str, str]:
            return {"user_id": user.id}

        client.app.add_api_route(PROBE, probe, methods=["POST"])
        yield client


class TestRequirePermission:
    def test_a_user_may_execute(self, probe_client: TestClient) -> None:
        user_id, token = create_user_and_token(probe_client, Role.USER)

        response = probe_client.post(PROBE, headers=auth_headers(token))

        assert response.status_code == 200
        assert response.json() == {"user_id": user_id}

    def test_an_admin_may_execute(self, probe_client: TestClient) -> None:
        _, token = create_user_and_token(probe_client, Role.ADMIN)

        assert probe_client.post(PROBE, headers=auth_headers(token)).status_code == 200

    def test_a_guest_cannot_execute(self, probe_client: TestClient) -> None:
        _, token = create_user_and_token(probe_client, Role.GUEST)

        response = probe_client.post(PROBE, headers=auth_headers(token))

        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "AUTHORIZATION_ERROR"
        assert error["details"] == {"missing_permissions": ["execute:code"]}

    def test_an_anonymous_caller_gets_401_not_403(self, probe_client: TestClient) -> None:
        response = probe_client.post(PROBE)

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

    def test_the_role_claim_of_a_token_grants_nothing(self, probe_client: TestClient) -> None:
        # Even a correctly signed token that claims `admin` is judged by the role in the database.
        guest = create_user(probe_client, Role.GUEST)
        token = create_token(
            settings=probe_client.app.state.settings,
            subject=guest.id,
            role=Role.ADMIN.value,
            token_type=TokenType.ACCESS,
        ).token

        assert probe_client.post(PROBE, headers=auth_headers(token)).status_code == 403
        assert probe_client.get("/api/v1/users", headers=auth_headers(token)).status_code == 403
