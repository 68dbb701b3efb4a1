"""Authentication gives its database connection back before the handler runs: a run can last
seconds, and holding a connection through it starved the pool under load."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth.dependencies import CurrentUser
from app.auth.models import Role
from tests.auth.helpers import auth_headers, create_user_and_token


def test_no_connection_is_held_while_an_authenticated_handler_runs(make_settings, make_client):
    from app import main

    original = main.build_v1_router
    seen: dict[str, int] = {}

    def with_probe():
        router = original()
        probe = APIRouter()

        @probe.get("/test/connections")
        def connections(user: CurrentUser) -> dict[str, str]:
            seen["checked_out"] = main_app.state.db_engine.pool.checkedout()
            return {"user": user.username}

        router.include_router(probe)
        return router

    main.build_v1_router = with_probe
    try:
        with make_client(make_settings()) as client:
            main_app = client.app
            _, token = create_user_and_token(client, Role.USER)
            response = client.get("/api/v1/test/connections", headers=auth_headers(token))
    finally:
        main.build_v1_router = original
    assert response.status_code == 200
    assert seen["checked_out"] == 0
