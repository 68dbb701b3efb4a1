"""Every operation has a short, stable, unique id: generated clients name their functions after it.

The table below is the contract with client code: changing an id renames a function in every
generated client, so it changes here on purpose or not at all.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api import operation_id

EXPECTED_IDS = {
    ("get", "/health"): "health-health",
    ("get", "/health/ready"): "health-ready",
    ("get", "/api/version"): "meta-api-version",
    ("post", "/api/v1/auth/login"): "auth-login",
    ("post", "/api/v1/auth/register"): "auth-register",
    ("post", "/api/v1/auth/refresh"): "auth-refresh",
    ("get", "/api/v1/users/me"): "users-read-me",
    ("get", "/api/v1/users"): "users-list",
    ("post", "/api/v1/users"): "users-create",
    ("get", "/api/v1/users/{user_id}"): "users-read",
    ("patch", "/api/v1/users/{user_id}"): "users-update",
    ("delete", "/api/v1/users/{user_id}"): "users-deactivate",
    ("post", "/api/v1/code/execute"): "code-execute",
    ("post", "/api/v1/jobs"): "jobs-submit",
    ("get", "/api/v1/jobs"): "jobs-list",
    ("get", "/api/v1/jobs/{job_id}"): "jobs-read",
    ("post", "/api/v1/jobs/{job_id}/cancel"): "jobs-cancel",
    ("post", "/api/v1/submissions"): "submissions-submit",
    ("post", "/api/v1/submissions/batch"): "submissions-batch",
    ("get", "/api/v1/submissions"): "submissions-list",
    ("get", "/api/v1/submissions/{submission_id}"): "submissions-read",
    ("post", "/api/v1/submissions/{submission_id}/cancel"): "submissions-cancel",
    ("get", "/api/v1/submissions/{submission_id}/events"): "submissions-events",
    ("post", "/api/v1/submissions/{submission_id}/events/ticket"): "submissions-events-ticket",
    ("get", "/api/v1/jobs/{job_id}/events"): "jobs-events",
    ("post", "/api/v1/jobs/{job_id}/events/ticket"): "jobs-events-ticket",
    ("get", "/api/v1/languages"): "sandbox-list-languages",
    ("get", "/api/v1/sandbox/pool/stats"): "sandbox-pool-stats",
    ("post", "/api/v1/sessions"): "sessions-create",
    ("get", "/api/v1/sessions"): "sessions-list",
    ("get", "/api/v1/sessions/{session_id}"): "sessions-read",
    ("delete", "/api/v1/sessions/{session_id}"): "sessions-close",
    ("post", "/api/v1/sessions/{session_id}/execute"): "sessions-execute",
    ("get", "/api/v1/sessions/{session_id}/files"): "sessions-list-files",
    ("put", "/api/v1/sessions/{session_id}/files/{path}"): "sessions-put-file",
    ("get", "/api/v1/sessions/{session_id}/files/{path}"): "sessions-get-file",
    ("delete", "/api/v1/sessions/{session_id}/files/{path}"): "sessions-delete-file",
}


@pytest.fixture
def operations(client: TestClient) -> dict[tuple[str, str], dict[str, Any]]:
    schema = client.get("/api/v1/openapi.json").json()
    return {
        (method, path): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }


def test_every_operation_has_exactly_one_tag(
    operations: dict[tuple[str, str], dict[str, Any]],
) -> None:
    assert {
        key: op.get("tags") for key, op in operations.items() if len(op.get("tags", [])) != 1
    } == {}


def test_operation_ids_are_unique(operations: dict[tuple[str, str], dict[str, Any]]) -> None:
    ids = [operation["operationId"] for operation in operations.values()]
    assert len(ids) == len(set(ids))


def test_operation_ids_are_the_published_ones(
    operations: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """A new endpoint adds its line here; an existing line never changes by accident."""
    assert {key: op["operationId"] for key, op in operations.items()} == EXPECTED_IDS


def test_a_route_without_one_tag_keeps_the_long_default_id_that_the_tests_above_refuse() -> None:
    app = FastAPI(generate_unique_id_function=operation_id)
    app.get("/untagged")(lambda: None)
    app.get("/tagged", tags=["things"], name="read_thing")(lambda: None)

    ids = {path: item["get"]["operationId"] for path, item in app.openapi()["paths"].items()}

    assert ids == {"/untagged": "_lambda__untagged_get", "/tagged": "things-read"}
