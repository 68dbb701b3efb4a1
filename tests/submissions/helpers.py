"""Submitting and waiting for submissions through the real API."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

SUBMISSIONS = "/api/v1/submissions"
FINAL = {"finished", "cancelled", "failed"}


def hello_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "language": "python",
        "code": "print(input())",
        "test_cases": [{"stdin": "hello\n", "expected_output": "hello\n"}],
    }
    body.update(overrides)
    return body


def submit(client: TestClient, headers: dict[str, str], body: dict[str, Any]) -> str:
    response = client.post(SUBMISSIONS, json=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["submission_id"])


def wait_for_final(
    client: TestClient, submission_id: str, headers: dict[str, str], timeout_s: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"{SUBMISSIONS}/{submission_id}", headers=headers).json()
        if body.get("status") in FINAL or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def graded(
    client: TestClient, headers: dict[str, str], body: dict[str, Any], timeout_s: float = 60.0
) -> dict[str, Any]:
    """Submit and wait for the final state."""
    return wait_for_final(client, submit(client, headers, body), headers, timeout_s)
