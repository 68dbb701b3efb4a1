"""POST /api/v1/code/execute against a real pool and a real database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.auth.models import Role
from app.jobs.models import Job
from app.sandbox.languages import LANGUAGES
from tests.jobs.helpers import app_settings, headers_for, running_app

pytestmark = pytest.mark.docker

EXECUTE = "/api/v1/code/execute"


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str
) -> Iterator[TestClient]:
    settings = app_settings(
        tmp_path_factory.mktemp("code"),
        database_url=module_database_url,
        max_code_bytes=1024,
        max_stdin_bytes=512,
        run_max_timeout_s=5.0,
        run_default_timeout_s=5.0,
    )
    with running_app(settings) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def user(client: TestClient) -> dict[str, str]:
    return headers_for(client)


class TestExecute:
    def test_prints_hello(self, client: TestClient, user: dict[str, str]) -> None:
        response = client.post(EXECUTE, json={"code": "print('hello')"}, headers=user)

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["output"] == "hello\n"
        assert body["success"] is True
        assert body["exit_code"] == 0
        assert body["error"] == ""
        assert isinstance(body["execution_time"], float)
        assert body["timed_out"] is False
        assert body["memory_exceeded"] is False
        assert body["output_truncated"] is False

    def test_a_failing_script_is_still_a_200_with_its_stderr(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        response = client.post(EXECUTE, json={"code": "raise SystemExit(3)"}, headers=user)

        assert response.status_code == 200
        body = response.json()
        assert body["success"] is False
        assert body["exit_code"] == 3

    def test_reads_stdin(self, client: TestClient, user: dict[str, str]) -> None:
        code = "import sys; print(sys.stdin.read().upper())"

        response = client.post(EXECUTE, json={"code": code, "stdin": "abc"}, headers=user)

        assert response.json()["output"] == "ABC\n"

    def test_a_timeout_is_reported_not_an_error(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        body = {"code": "while True: pass", "timeout": 1}

        response = client.post(EXECUTE, json=body, headers=user)

        assert response.status_code == 200
        assert response.json()["timed_out"] is True
        assert response.json()["success"] is False

    def test_every_run_is_stored_as_a_job_of_the_caller(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        job_id = client.post(EXECUTE, json={"code": "print(1)"}, headers=user).json()["job_id"]

        job = client.get(f"/api/v1/jobs/{job_id}", headers=user).json()

        assert job["status"] == "succeeded"
        assert job["mode"] == "sync"
        assert job["output"] == "1\n"
        with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
            assert session.get(Job, job_id).user_id == job["user_id"]


class TestExecuteRefusals:
    def test_oversized_code_is_413(self, client: TestClient, user: dict[str, str]) -> None:
        response = client.post(EXECUTE, json={"code": "#" * 1025}, headers=user)

        assert response.status_code == 413
        assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        assert response.json()["error"]["details"]["field"] == "code"

    def test_oversized_stdin_is_413(self, client: TestClient, user: dict[str, str]) -> None:
        response = client.post(EXECUTE, json={"code": "1", "stdin": "x" * 513}, headers=user)

        assert response.status_code == 413
        assert response.json()["error"]["details"]["field"] == "stdin"

    def test_empty_code_is_422(self, client: TestClient, user: dict[str, str]) -> None:
        response = client.post(EXECUTE, json={"code": ""}, headers=user)

        assert response.status_code == 422
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"

    @pytest.mark.parametrize("timeout", [0, 5.5])
    def test_timeout_out_of_range_is_422(
        self, client: TestClient, user: dict[str, str], timeout: float
    ) -> None:
        response = client.post(EXECUTE, json={"code": "1", "timeout": timeout}, headers=user)

        assert response.status_code == 422

    def test_unsupported_language_lists_the_supported_ones(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        response = client.post(EXECUTE, json={"code": "1", "language": "cobol"}, headers=user)

        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "UNSUPPORTED_LANGUAGE"
        assert error["details"]["supported"] == sorted(LANGUAGES)

    def test_guest_is_refused(self, client: TestClient) -> None:
        guest = headers_for(client, Role.GUEST)

        response = client.post(EXECUTE, json={"code": "1"}, headers=guest)

        assert response.status_code == 403
        assert response.json()["error"]["code"] == "AUTHORIZATION_ERROR"

    def test_anonymous_is_refused(self, client: TestClient) -> None:
        response = client.post(EXECUTE, json={"code": "1"})

        assert response.status_code == 401

    def test_malformed_json_is_400(self, client: TestClient, user: dict[str, str]) -> None:
        headers = {**user, "Content-Type": "application/json"}

        response = client.post(EXECUTE, content=b"{not json", headers=headers)

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"

    def test_unknown_fields_are_refused(self, client: TestClient, user: dict[str, str]) -> None:
        response = client.post(EXECUTE, json={"code": "1", "memory": 9999}, headers=user)

        assert response.status_code == 422

    def test_lone_surrogates_are_refused_not_a_crash(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        headers = {**user, "Content-Type": "application/json"}

        response = client.post(EXECUTE, content=b'{"code": "\\ud800"}', headers=headers)

        assert response.status_code == 422
