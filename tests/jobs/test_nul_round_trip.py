"""NUL bytes in code, stdin and output come back exactly as sent, on SQLite and on PostgreSQL.

PostgreSQL's `text` refuses U+0000 where SQLite keeps it; a program that prints a NUL (binary
output, a C string gone wrong) must still be a 200 with its output, and the same on both.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.jobs.helpers import wait_for_final

pytestmark = pytest.mark.docker

EXECUTE = "/api/v1/code/execute"
JOBS = "/api/v1/jobs"

# Escapes in the source, so the program itself is valid Python; it echoes stdin back.
PRINTS_NUL = (
    "import sys\nsys.stdout.write('a\\x00b' + sys.stdin.read())\nsys.stderr.write('\\x00')\n"
)
# A literal NUL in the source: CPython refuses it, and that refusal is a run that happened.
CONTAINS_NUL = "print('before')\x00\n"


def _stored(client: TestClient, job_id: str, headers: dict[str, str]) -> dict[str, object]:
    response = client.get(f"{JOBS}/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_output_with_nul_round_trips_through_execute(
    client: TestClient, user: dict[str, str]
) -> None:
    response = client.post(EXECUTE, json={"code": PRINTS_NUL, "stdin": "\x00in"}, headers=user)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == "a\x00b\x00in"
    assert body["error"] == "\x00"
    stored = _stored(client, body["job_id"], user)
    assert (stored["code"], stored["stdin"]) == (PRINTS_NUL, "\x00in")
    assert (stored["output"], stored["error"]) == ("a\x00b\x00in", "\x00")


def test_output_with_nul_round_trips_through_a_job(
    client: TestClient, user: dict[str, str]
) -> None:
    response = client.post(JOBS, json={"code": PRINTS_NUL, "stdin": "\x00in"}, headers=user)
    assert response.status_code == 202, response.text

    job = wait_for_final(client, response.json()["job_id"], user)

    assert job["status"] == "succeeded"
    assert (job["code"], job["stdin"]) == (PRINTS_NUL, "\x00in")
    assert (job["output"], job["error"]) == ("a\x00b\x00in", "\x00")


def test_code_with_nul_is_a_run_that_happened(client: TestClient, user: dict[str, str]) -> None:
    response = client.post(EXECUTE, json={"code": CONTAINS_NUL}, headers=user)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is False
    assert "null bytes" in body["error"]
    assert _stored(client, body["job_id"], user)["code"] == CONTAINS_NUL

    queued = client.post(JOBS, json={"code": CONTAINS_NUL}, headers=user)
    assert queued.status_code == 202, queued.text
    job = wait_for_final(client, queued.json()["job_id"], user)
    assert job["status"] == "failed"
    assert job["code"] == CONTAINS_NUL


def test_a_language_filter_with_nul_is_refused_on_both_databases(
    client: TestClient, user: dict[str, str]
) -> None:
    response = client.get(JOBS, params={"language": "py\x00"}, headers=user)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
