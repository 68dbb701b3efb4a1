"""Authentication gives its database connection back before the handler runs: a run can last
seconds, and holding a connection through it starved the pool under load."""

from __future__ import annotations

import structlog
from fastapi import APIRouter
from sqlalchemy import event

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
            request_id = structlog.contextvars.get_contextvars().get("request_id")
            seen["checked_out"] = sum(held == request_id for held in holders.values())
            seen["checkouts"] = checkouts.count(request_id)
            return {"user": user.username}

        router.include_router(probe)
        return router

    # Connections checked out on behalf of a request (its id is in the context that worker-thread
    # hops copy), so that a background worker's poll landing meanwhile is not counted.
    holders: dict[int, str | None] = {}
    checkouts: list[str | None] = []

    def on_checkout(_dbapi: object, record: object, _proxy: object) -> None:
        holders[id(record)] = structlog.contextvars.get_contextvars().get("request_id")
        checkouts.append(holders[id(record)])

    def on_checkin(_dbapi: object, record: object) -> None:
        holders.pop(id(record), None)

    main.build_v1_router = with_probe
    try:
        with make_client(make_settings()) as client:
            pool = client.app.state.db_engine.pool
            event.listen(pool, "checkout", on_checkout)
            event.listen(pool, "checkin", on_checkin)
            _, token = create_user_and_token(client, Role.USER)
            response = client.get("/api/v1/test/connections", headers=auth_headers(token))
    finally:
        main.build_v1_router = original
    assert response.status_code == 200
    assert seen["checkouts"] >= 1  # the user was read through the pool, in this request's context
    assert seen["checked_out"] == 0
