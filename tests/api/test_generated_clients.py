"""Clients generated from the live schema work: a Python client signs in, runs code, reads a
job, keeps a session's state from cell to cell and grades a submission; TypeScript types come out
of openapi-typescript and pass `tsc --strict`.

Both generators are the tools a frontend team would use (openapi-python-client from PyPI,
openapi-typescript from npm). The npm tools are installed once into build/npm-tools (ignored by
git) at pinned versions and reused while the pins stay the same.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import httpx
import pytest

from app.auth.models import Role
from app.core.config import REPO_ROOT
from tests.api.live import LiveServer, serve
from tests.auth.helpers import create_user
from tests.jobs.helpers import FINAL, app_settings

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NPM_TOOLS = REPO_ROOT / "build" / "npm-tools"
NPM_PINS = {"openapi-typescript": "7.13.0", "typescript": "5.9.3"}
CLIENT_PACKAGE = "warmbox_client"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve(app_settings(tmp_path_factory.mktemp("clients"))) as server:
        yield server


@pytest.fixture(scope="module")
def schema_file(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    response = httpx.get(f"{live_server.base_url}/api/v1/openapi.json", timeout=10)
    response.raise_for_status()
    path = tmp_path_factory.mktemp("schema") / "openapi.json"
    path.write_text(response.text)
    return path


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> str:
    result = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{argv[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def python_client(schema_file: Path) -> Iterator[ModuleType]:
    out = schema_file.parent / "python"
    generator = Path(sys.executable).parent / "openapi-python-client"
    _run(
        [
            *(str(generator), "generate", "--path", str(schema_file)),
            *("--output-path", str(out / CLIENT_PACKAGE), "--meta", "none"),
        ],
        cwd=schema_file.parent,
    )
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(CLIENT_PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.partition(".")[0] == CLIENT_PACKAGE]:
            del sys.modules[name]


def _api(name: str) -> ModuleType:
    """`code-execute` -> the generated module warmbox_client.api.code.code_execute."""
    tag = name.partition("-")[0]
    return importlib.import_module(f"{CLIENT_PACKAGE}.api.{tag}.{name.replace('-', '_')}")


def test_every_generated_module_imports(python_client: ModuleType, schema_file: Path) -> None:
    operation_ids = [
        operation["operationId"]
        for item in json.loads(schema_file.read_text())["paths"].values()
        for operation in item.values()
    ]
    for operation_id in operation_ids:
        assert hasattr(_api(operation_id), "sync_detailed"), operation_id


def test_python_client_signs_in_runs_code_and_reads_a_job(
    python_client: ModuleType, live_server: LiveServer
) -> None:
    models = importlib.import_module(f"{CLIENT_PACKAGE}.models")
    anonymous = python_client.Client(base_url=live_server.base_url, raise_on_unexpected_status=True)
    # Written straight to the database (committed before the first request), so signing in
    # does not race a registration's commit.
    username, password = f"client{uuid.uuid4().hex[:8]}", "generated-client-pass"
    create_user(cast(Any, live_server), Role.USER, username=username, password=password)
    login_body = _login_model(models)(username=username, password=password)
    tokens = _api("auth-login").sync(client=anonymous, body=login_body)
    assert isinstance(tokens, models.TokenPair)
    client = python_client.AuthenticatedClient(
        base_url=live_server.base_url, token=tokens.access_token, raise_on_unexpected_status=True
    )

    result = _api("code-execute").sync(client=client, body=models.RunBody(code="print('hello')"))
    assert isinstance(result, models.ExecutionResult)
    assert (result.success, result.output) == (True, "hello\n")

    accepted = _api("jobs-submit").sync(client=client, body=models.RunBody(code="print(6 * 7)"))
    assert isinstance(accepted, models.JobAccepted)
    job = _wait_for_job(client, accepted.job_id)
    assert (str(job.status), job.output) == ("succeeded", "42\n")


def test_python_client_keeps_a_session_and_grades_a_submission(
    python_client: ModuleType, live_server: LiveServer
) -> None:
    """The stateful and graded parts through the generated client, as a frontend would call them."""
    models = importlib.import_module(f"{CLIENT_PACKAGE}.models")
    client = _signed_in(python_client, models, live_server)

    session = _api("sessions-create").sync(client=client, body=models.SessionCreate())
    assert isinstance(session, models.SessionRead)
    first = _api("sessions-execute").sync(
        client=client, session_id=session.session_id, body=models.CellBody(code="x = 41")
    )
    second = _api("sessions-execute").sync(
        client=client, session_id=session.session_id, body=models.CellBody(code="print(x + 1)")
    )
    assert isinstance(second, models.CellResponse)
    assert (first.success, second.output, second.cell) == (True, "42\n", 2)
    closed = _api("sessions-close").sync_detailed(client=client, session_id=session.session_id)
    assert closed.status_code == 204

    case = models.TestCaseBody(stdin="3\n", expected_output="6\n")
    body = models.SubmissionBody(
        language="python", code="print(int(input()) * 2)", test_cases=[case]
    )
    accepted = _api("submissions-submit").sync(client=client, body=body)
    deadline = time.monotonic() + 60
    while True:
        graded = _api("submissions-read").sync(client=client, submission_id=accepted.submission_id)
        if str(graded.status) in {"finished", "cancelled", "failed"} or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (str(graded.status), str(graded.verdict), graded.passed) == ("finished", "accepted", 1)


def _signed_in(python_client: ModuleType, models: ModuleType, live_server: LiveServer) -> Any:
    anonymous = python_client.Client(base_url=live_server.base_url, raise_on_unexpected_status=True)
    username, password = f"client{uuid.uuid4().hex[:8]}", "generated-client-pass"
    create_user(cast(Any, live_server), Role.USER, username=username, password=password)
    tokens = _api("auth-login").sync(
        client=anonymous, body=_login_model(models)(username=username, password=password)
    )
    return python_client.AuthenticatedClient(
        base_url=live_server.base_url, token=tokens.access_token, raise_on_unexpected_status=True
    )


def _login_model(models: ModuleType) -> Any:
    """The login body's generated class, named after the operation (the schema is inline)."""
    (name,) = [name for name in dir(models) if name.startswith("AuthLogin")]
    return getattr(models, name)


def _wait_for_job(client: Any, job_id: Any, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        job = _api("jobs-read").sync(client=client, job_id=job_id)
        if str(job.status) in FINAL or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def _npm_tools() -> Path:
    """Install the pinned npm tools into build/npm-tools unless that exact set is there."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed to generate the TypeScript types (Node 20 or newer)"
    manifest = {"name": "warmbox-npm-tools", "private": True, "dependencies": NPM_PINS}
    marker = NPM_TOOLS / "installed.json"
    if marker.exists() and json.loads(marker.read_text()) == manifest:
        return NPM_TOOLS / "node_modules" / ".bin"
    NPM_TOOLS.mkdir(parents=True, exist_ok=True)
    (NPM_TOOLS / "package.json").write_text(json.dumps(manifest, indent=2))
    _run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NPM_TOOLS)
    marker.write_text(json.dumps(manifest))
    return NPM_TOOLS / "node_modules" / ".bin"


USAGE_TS = """
import type { components, operations, paths } from "./schema";

type RunBody = paths["/api/v1/code/execute"]["post"]["requestBody"]["content"]["application/json"];
type Result = operations["code-execute"]["responses"][200]["content"]["application/json"];
type Login = operations["auth-login"]["requestBody"]["content"]["application/json"];
type Job = operations["jobs-read"]["responses"][200]["content"]["application/json"];

const run: RunBody = { code: "print('hello')" };
const login: Login = { username: "alice", password: "long-pass" };
const output: Result["output"] = "hello\\n";
const status: Job["status"] = "succeeded";
const error: components["schemas"]["ErrorResponse"]["error"]["code"] = "NOT_FOUND";
export const used = [run, login, output, status, error];
"""


def test_typescript_types_generate_and_type_check(schema_file: Path) -> None:
    bin_dir = _npm_tools()
    out = schema_file.parent / "typescript"
    out.mkdir()
    # A field with a default is optional in a request: the server fills it in.
    generate = [str(bin_dir / "openapi-typescript"), str(schema_file), "-o", str(out / "schema.ts")]
    _run([*generate, "--default-non-nullable=false"], out)
    (out / "usage.ts").write_text(USAGE_TS)
    _run(
        [
            *(str(bin_dir / "tsc"), "--noEmit", "--strict", "--target", "es2022"),
            *("--module", "esnext", "--moduleResolution", "bundler"),
            *(str(out / "schema.ts"), str(out / "usage.ts")),
        ],
        out,
    )
