"""Property-based tests of the whole OpenAPI schema, once per role, against the real app.

Every operation gets generated requests as an anonymous caller, a guest, a user and an admin; no
answer may be a server error and every answer must match what the schema declares (errors
included). The app runs with a real pool, so execute and jobs really run the generated code.
"""

from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from app.auth.models import Role
from app.core.migrations import upgrade_to_head
from app.main import create_app
from tests.jobs.helpers import app_settings, cheap_hashes, headers_for

# schemathesis 3.x subclasses jsonschema names deprecated upstream; that is its business, not ours.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import schemathesis
    from schemathesis.checks import not_a_server_error, response_schema_conformance
    from schemathesis.specs.openapi.schemas import BaseOpenAPISchema


pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:jsonschema.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:schemathesis.*"),
]


@dataclass
class LiveServer:
    """The app served by uvicorn on a loopback port: one lifespan (one pool, one job runner) for
    every generated request. (schemathesis' ASGI transport would run the lifespan per call.)"""

    app: FastAPI
    base_url: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    app_config = app_settings(
        tmp_path_factory.mktemp("schemathesis"),
        run_max_timeout_s=3.0,
        run_default_timeout_s=2.0,
        pool_initial_size=2,
    )
    upgrade_to_head(app_config.database_url)
    app = create_app(app_config)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    with cheap_hashes():
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the server failed to start"
            assert time.monotonic() < deadline, "the server did not start in time"
            time.sleep(0.05)
        try:
            yield LiveServer(app=app, base_url=f"http://127.0.0.1:{port}")
        finally:
            server.should_exit = True
            thread.join(timeout=30)


@pytest.fixture(scope="module")
def role_headers(live_server: LiveServer) -> dict[str, dict[str, str]]:
    client: Any = live_server  # the helpers only read `.app`
    return {
        "anonymous": {},
        "guest": headers_for(client, Role.GUEST),
        "user": headers_for(client, Role.USER),
        "admin": headers_for(client, Role.ADMIN),
    }


@pytest.fixture(scope="module")
def api_schema(live_server: LiveServer) -> BaseOpenAPISchema:
    schemathesis.experimental.OPEN_API_3_1.enable()  # FastAPI publishes OpenAPI 3.1
    return schemathesis.from_uri(
        f"{live_server.base_url}/api/v1/openapi.json", base_url=live_server.base_url
    )


with warnings.catch_warnings():  # 3.x warns about filter arguments nobody passed
    warnings.simplefilter("ignore", DeprecationWarning)
    schema = schemathesis.from_pytest_fixture("api_schema")


BOUNDED = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def call_and_validate(case: Any, headers: dict[str, str]) -> None:
    merged = {key: value for key, value in (case.headers or {}).items() if key != "Authorization"}
    case.call_and_validate(
        headers={**merged, **headers}, checks=(not_a_server_error, response_schema_conformance)
    )


@schema.parametrize()
@BOUNDED
def test_as_anonymous(case: Any, role_headers: dict[str, dict[str, str]]) -> None:
    call_and_validate(case, role_headers["anonymous"])


@schema.parametrize()
@BOUNDED
def test_as_guest(case: Any, role_headers: dict[str, dict[str, str]]) -> None:
    call_and_validate(case, role_headers["guest"])


@schema.parametrize()
@BOUNDED
def test_as_user(case: Any, role_headers: dict[str, dict[str, str]]) -> None:
    call_and_validate(case, role_headers["user"])


@schema.parametrize()
@BOUNDED
def test_as_admin(case: Any, role_headers: dict[str, dict[str, str]]) -> None:
    call_and_validate(case, role_headers["admin"])
