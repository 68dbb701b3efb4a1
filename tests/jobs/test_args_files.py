"""`args` and `files` on /code/execute and /jobs: every bad shape is a 4xx naming its field, good
ones are stored with the job (so a queued job runs later with them) and answered back, and the
Idempotency-Key hash covers them. The result carries `compile` and `usage`. Real pool, real DB."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.jobs.models import Job
from app.jobs.results import run_request_for
from app.sandbox.types import RunFile
from tests.jobs.helpers import wait_for_final

pytestmark = pytest.mark.docker

EXECUTE = "/api/v1/code/execute"
JOBS = "/api/v1/jobs"
GOOD_FILES = [
    {"name": "data.csv", "content": "a,b\n1,2\n"},
    {
        "name": "blob.bin",
        "content": base64.b64encode(b"\x00\xffbin").decode(),
        "encoding": "base64",
    },
]

BAD_BODIES: list[tuple[str, dict[str, Any], int, str]] = [
    ("absolute path", {"files": [{"name": "/etc/passwd", "content": ""}]}, 422, "files[0].name"),
    ("dot-dot walk", {"files": [{"name": "../x", "content": ""}]}, 422, "files[0].name"),
    ("bare dot-dot", {"files": [{"name": "..", "content": ""}]}, 422, "files[0].name"),
    ("sub path", {"files": [{"name": "a/b", "content": ""}]}, 422, "files[0].name"),
    ("backslash", {"files": [{"name": "a\\b", "content": ""}]}, 422, "files[0].name"),
    ("control char", {"files": [{"name": "a\nb", "content": ""}]}, 422, "files[0].name"),
    ("nul in name", {"files": [{"name": "a\x00b", "content": ""}]}, 422, "files[0].name"),
    ("blank name", {"files": [{"name": "  ", "content": ""}]}, 422, "files[0].name"),
    ("empty name", {"files": [{"name": "", "content": ""}]}, 422, "files"),
    ("long name", {"files": [{"name": "x" * 256, "content": ""}]}, 422, "files"),
    ("long utf-8 name", {"files": [{"name": "é" * 200, "content": ""}]}, 422, "files[0].name"),
    ("program's name", {"files": [{"name": "main.py", "content": ""}]}, 422, "files[0].name"),
    (
        "duplicate",
        {"files": [{"name": "a", "content": ""}, {"name": "a", "content": ""}]},
        422,
        "files[1].name",
    ),
    (
        "bad base64",
        {"files": [{"name": "a", "content": "not base64!", "encoding": "base64"}]},
        422,
        "files[0].content",
    ),
    ("bad encoding", {"files": [{"name": "a", "content": "", "encoding": "hex"}]}, 422, "files"),
    (
        "too many files",
        {"files": [{"name": f"f{i}", "content": ""} for i in range(4)]},
        422,
        "files",
    ),
    ("files too large", {"files": [{"name": "a", "content": "x" * 300}]}, 413, "files"),
    ("too many args", {"args": [str(i) for i in range(6)]}, 422, "args"),
    ("arg too long", {"args": ["x" * 101]}, 422, "args[0]"),
    ("nul in arg", {"args": ["a\x00"]}, 422, "args[0]"),
    ("arg not a string", {"args": [1]}, 422, "args"),
    ("file not an object", {"files": ["a.txt"]}, 422, "files"),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, module_database_url: str) -> Any:
    from tests.jobs.helpers import app_settings, running_app

    settings = app_settings(
        tmp_path_factory.mktemp("extras"),
        database_url=module_database_url,
        run_max_files=3,
        run_max_files_bytes=256,
        run_max_args=5,
        run_max_arg_bytes=100,
    )
    with running_app(settings) as test_client:
        yield test_client


@pytest.mark.parametrize("path", [EXECUTE, JOBS])
@pytest.mark.parametrize(("case", "extra", "status", "field"), BAD_BODIES)
def test_bad_args_and_files_are_4xx_naming_the_field(
    client: TestClient, user: dict[str, str], path: str, case, extra, status, field
) -> None:
    response = client.post(path, json={"code": "print(1)", **extra}, headers=user)

    assert response.status_code == status, (case, response.text)
    error = response.json()["error"]
    assert error["request_id"]
    assert field in str(error["details"]), (case, error)


def test_execute_answers_compile_and_usage(client: TestClient, user: dict[str, str]) -> None:
    response = client.post(
        EXECUTE, json={"code": "print(1)", "args": ["a"], "files": GOOD_FILES}, headers=user
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == "1\n"
    assert body["compile"] is None  # python is interpreted
    assert "usage" in body
    job = client.get(f"{JOBS}/{body['job_id']}", headers=user).json()
    assert job["args"] == ["a"]
    assert job["files"] == ["data.csv", "blob.bin"]


def test_a_queued_job_keeps_its_args_and_files_for_its_run(
    client: TestClient, user: dict[str, str]
) -> None:
    response = client.post(
        JOBS, json={"code": "print(2)", "args": ["x", "y z"], "files": GOOD_FILES}, headers=user
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    final = wait_for_final(client, job_id, user)
    assert final["status"] == "succeeded", final
    assert final["args"] == ["x", "y z"]
    assert final["compile"] is None
    factory = client.app.state.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
    request = run_request_for(client.app.state.settings, job)  # type: ignore[attr-defined]
    assert request.args == ("x", "y z")
    assert request.files == (
        RunFile("data.csv", b"a,b\n1,2\n"),
        RunFile("blob.bin", b"\x00\xffbin"),
    )


@pytest.mark.parametrize(
    "change",
    [{"args": ["other"]}, {"files": [{"name": "data.csv", "content": "changed"}]}],
)
def test_the_idempotency_hash_covers_args_and_files(
    client: TestClient, user: dict[str, str], change: dict[str, Any]
) -> None:
    headers = {**user, "Idempotency-Key": f"k-{uuid.uuid4()}"}
    body = {"code": "print(3)", "args": ["a"], "files": GOOD_FILES[:1]}
    first = client.post(JOBS, json=body, headers=headers)
    again = client.post(JOBS, json=body, headers=headers)
    changed = client.post(JOBS, json={**body, **change}, headers=headers)

    assert first.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert changed.status_code == 422
