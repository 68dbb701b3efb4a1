"""The sessions API against a real pool and a real database: state kept between cells, files,
ownership (404), busy (409), limits (429), ended sessions (410), the reaper and a restart."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.auth.models import Role
from tests.jobs.helpers import app_settings, headers_for, running_app

pytestmark = pytest.mark.docker

SESSIONS = "/api/v1/sessions"


def settings_for(data_dir: Path, **overrides: Any):
    values: dict[str, Any] = {
        "pool_max_total": 3,
        "pool_max_size": 3,
        "sessions_max_per_user": 2,
        "max_concurrent_runs_per_user": 3,
        "session_reap_interval_s": 0.2,
        "session_max_file_bytes": 4096,
        "session_max_files": 4,
        "run_max_timeout_s": 20.0,
        "run_default_timeout_s": 5.0,
        "sandbox_python_preload": "",
    }
    values.update(overrides)
    return app_settings(data_dir, **values)


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str
) -> Iterator[TestClient]:
    settings = settings_for(tmp_path_factory.mktemp("sessions"), database_url=module_database_url)
    with running_app(settings) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def user(client: TestClient) -> dict[str, str]:
    return headers_for(client)


@pytest.fixture
def session_id(client: TestClient, user: dict[str, str]) -> Iterator[str]:
    response = client.post(SESSIONS, json={"language": "python"}, headers=user)
    assert response.status_code == 201, response.text
    yield response.json()["session_id"]
    client.delete(f"{SESSIONS}/{response.json()['session_id']}", headers=user)


def execute(client: TestClient, session_id: str, headers: dict[str, str], code: str, **extra):
    return client.post(f"{SESSIONS}/{session_id}/execute", json={"code": code, **extra},
                       headers=headers)  # fmt: skip


def error_code(response) -> str:
    return response.json()["error"]["code"]


def test_create_answers_201_with_location_and_expiry(client, user):
    response = client.post(SESSIONS, json={"idle_timeout_s": 60, "max_lifetime_s": 120},
                           headers=user)  # fmt: skip
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["Location"].endswith(body["session_id"])
    assert body["status"] == "active"
    assert body["idle_timeout_s"] == 60
    assert body["expires_at"] > body["created_at"]
    assert client.delete(f"{SESSIONS}/{body['session_id']}", headers=user).status_code == 204


def test_state_persists_between_cells(client, user, session_id):
    assert execute(client, session_id, user, "import math\nx = 41").json()["success"] is True
    body = execute(client, session_id, user, "math.floor(x + 1.5)").json()
    assert body["output"] == "42\n"
    assert body["cell"] == 2
    assert body["artifacts"] == []
    assert body["restarted"] is False
    assert client.get(f"{SESSIONS}/{session_id}", headers=user).json()["cells"] == 2


def test_a_plot_comes_back_as_png(client, user, session_id):
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2]); None"
    body = execute(client, session_id, user, code, timeout=20).json()  # a cold matplotlib import
    assert body["success"], body["error"]
    (artifact,) = body["artifacts"]
    assert base64.b64decode(artifact["data"]).startswith(b"\x89PNG")
    assert (artifact["width"], artifact["height"]) == (640, 480)


def test_another_users_session_is_not_found(client, user, session_id):
    other = headers_for(client)
    for method, path, kwargs in (
        ("get", "", {}),
        ("delete", "", {}),
        ("post", "/execute", {"json": {"code": "print(1)"}}),
        ("get", "/files", {}),
        ("get", "/files/a.txt", {}),
    ):
        response = client.request(method, f"{SESSIONS}/{session_id}{path}", headers=other, **kwargs)
        assert response.status_code == 404, (method, path, response.text)
        assert error_code(response) == "NOT_FOUND"
    listed = client.get(SESSIONS, headers=other).json()
    assert session_id not in {item["session_id"] for item in listed["items"]}


def test_admins_see_every_session_but_run_cells_only_in_their_own(client, user, session_id):
    admin = headers_for(client, Role.ADMIN)
    assert client.get(f"{SESSIONS}/{session_id}", headers=admin).status_code == 200
    listed = client.get(SESSIONS, headers=admin, params={"status": "active"}).json()
    assert session_id in {item["session_id"] for item in listed["items"]}
    assert execute(client, session_id, admin, "print(1)").status_code == 404


def test_a_second_cell_while_one_runs_is_refused_busy(client, user, session_id):
    answers: list[Any] = []
    slow = threading.Thread(
        target=lambda: answers.append(
            execute(client, session_id, user, "import time; time.sleep(1.5)")
        )
    )
    slow.start()
    time.sleep(0.5)
    second = execute(client, session_id, user, "print('second')")
    file_op = client.get(f"{SESSIONS}/{session_id}/files", headers=user)
    slow.join()
    assert second.status_code == 409
    assert error_code(second) == "SESSION_BUSY"
    assert file_op.status_code == 409
    assert answers[0].status_code == 200
    assert answers[0].json()["success"]
    assert execute(client, session_id, user, "print('after')").json()["output"] == "after\n"


def test_timed_out_cell_is_interrupted_with_its_state_kept(client, user, session_id):
    execute(client, session_id, user, "kept = 7")
    body = execute(client, session_id, user, "while True: pass", timeout=1).json()
    assert body["timed_out"]
    assert body["interrupted"]
    assert not body["restarted"]
    assert execute(client, session_id, user, "print(kept)").json()["output"] == "7\n"


def test_files_round_trip(client, user, session_id):
    put = client.put(f"{SESSIONS}/{session_id}/files/data/in.txt", content=b"\x00\x01hi",
                     headers={**user, "Content-Type": "application/octet-stream"})  # fmt: skip
    assert put.status_code == 200, put.text
    assert put.json() == {"path": "data/in.txt", "size_bytes": 4}
    body = execute(client, session_id, user, "open('data/in.txt','rb').read()").json()
    assert body["output"] == "b'\\x00\\x01hi'\n"
    execute(client, session_id, user, "open('out.txt', 'w').write('made in a cell')")
    got = client.get(f"{SESSIONS}/{session_id}/files/out.txt", headers=user)
    assert got.status_code == 200
    assert got.content == b"made in a cell"
    listed = client.get(f"{SESSIONS}/{session_id}/files", headers=user).json()["files"]
    assert {item["path"] for item in listed} == {"data/in.txt", "out.txt"}
    deleted = client.delete(f"{SESSIONS}/{session_id}/files/out.txt", headers=user)
    assert deleted.status_code == 204
    missing = client.get(f"{SESSIONS}/{session_id}/files/out.txt", headers=user)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "path", ["%2E%2E/etc/passwd", "a/%2E%2E/%2E%2E/x", "%2Fetc%2Fpasswd", "a%01b"]
)
def test_paths_outside_the_scratch_are_refused(client, user, session_id, path):
    response = client.get(f"{SESSIONS}/{session_id}/files/{path}", headers=user)
    assert response.status_code in (400, 404, 422), response.text
    assert response.json()["error"]["code"] in ("VALIDATION_ERROR", "NOT_FOUND")
    put = client.put(f"{SESSIONS}/{session_id}/files/{path}", content=b"x", headers=user)
    assert put.status_code in (400, 404, 422), put.text


def test_symlink_made_by_a_cell_is_not_followed(client, user, session_id):
    execute(client, session_id, user, "import os; os.symlink('/etc/passwd', 'pw')")
    response = client.get(f"{SESSIONS}/{session_id}/files/pw", headers=user)
    assert response.status_code == 400
    assert error_code(response) == "VALIDATION_ERROR"


def test_file_limits(client, user, session_id):
    big = client.put(f"{SESSIONS}/{session_id}/files/big", content=b"x" * 5000, headers=user)
    assert big.status_code == 413
    assert error_code(big) == "PAYLOAD_TOO_LARGE"
    for number in range(4):
        client.put(f"{SESSIONS}/{session_id}/files/f{number}", content=b"x", headers=user)
    fifth = client.put(f"{SESSIONS}/{session_id}/files/f4", content=b"x", headers=user)
    assert fifth.status_code == 400
    assert "already holds" in fifth.json()["error"]["message"]


def test_closed_session_answers_gone(client, user):
    session_id = client.post(SESSIONS, json={}, headers=user).json()["session_id"]
    assert client.delete(f"{SESSIONS}/{session_id}", headers=user).status_code == 204
    for response in (
        client.get(f"{SESSIONS}/{session_id}", headers=user),
        execute(client, session_id, user, "print(1)"),
        client.delete(f"{SESSIONS}/{session_id}", headers=user),
    ):
        assert response.status_code == 410
        assert error_code(response) == "SESSION_GONE"
    assert response.json()["error"]["details"]["end_reason"] == "closed"


def test_sessions_per_user_are_limited(client):
    holder = headers_for(client)
    opened = [client.post(SESSIONS, json={}, headers=holder) for _ in range(2)]
    assert [r.status_code for r in opened] == [201, 201]
    third = client.post(SESSIONS, json={}, headers=holder)
    assert third.status_code == 429
    assert error_code(third) == "QUOTA_EXCEEDED"
    for response in opened:
        client.delete(f"{SESSIONS}/{response.json()['session_id']}", headers=holder)


def test_idle_session_is_ended_by_the_reaper(client, user):
    session_id = client.post(SESSIONS, json={"idle_timeout_s": 1}, headers=user).json()[
        "session_id"
    ]
    time.sleep(2.0)
    response = client.get(f"{SESSIONS}/{session_id}", headers=user)
    assert response.status_code == 410
    assert response.json()["error"]["details"]["end_reason"] == "idle_timeout"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"language": "cobol"}, 400),
        ({"language": "bash"}, 400),
        ({"idle_timeout_s": 10**9}, 422),
        ({"max_lifetime_s": 999999}, 422),
        ({"idle_timeout_s": -1}, 422),
        ({"unknown": 1}, 422),
    ],
)
def test_bad_create_requests_are_refused(client, user, body, status):
    response = client.post(SESSIONS, json=body, headers=user)
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"code", "message", "request_id", "details"}


def test_bad_cells_and_ids_are_refused(client, user, session_id):
    assert client.post(SESSIONS, json={}).status_code == 401
    assert client.get(f"{SESSIONS}/not-a-uuid", headers=user).status_code == 422
    assert execute(client, session_id, user, "x", timeout=999).status_code == 422
    assert execute(client, session_id, user, "").status_code == 422
    assert execute(client, session_id, user, "x" * 70000).status_code == 413
    raw = client.post(f"{SESSIONS}/{session_id}/execute", content=b"{", headers={
        **user, "Content-Type": "application/json"})  # fmt: skip
    assert raw.status_code == 400


def test_a_session_holds_a_share_of_the_users_runs(tmp_path: Path):
    settings = settings_for(tmp_path, max_concurrent_runs_per_user=1)
    with running_app(settings) as app_client:
        holder = headers_for(app_client)
        assert app_client.post(SESSIONS, json={}, headers=holder).status_code == 201
        run = app_client.post("/api/v1/code/execute", json={"code": "print(1)"}, headers=holder)
        assert run.status_code == 429
        assert error_code(run) == "QUOTA_EXCEEDED"


def test_a_restart_ends_sessions_and_their_ids_answer_gone(tmp_path: Path):
    settings = settings_for(tmp_path)
    with running_app(settings) as first:
        holder = headers_for(first)
        session_id = first.post(SESSIONS, json={}, headers=holder).json()["session_id"]
        assert execute(first, session_id, holder, "x = 1").status_code == 200
    with running_app(settings) as second:
        response = second.get(f"{SESSIONS}/{session_id}", headers=holder)
        assert response.status_code == 410
        assert error_code(response) == "SESSION_GONE"
        assert response.json()["error"]["details"]["end_reason"] == "service_restart"
        listed = second.get(SESSIONS, headers=holder).json()["items"]
        assert [item["status"] for item in listed] == ["ended"]


def test_session_leftovers_never_reach_another_users_run(tmp_path: Path):
    """One container in all: a cell leaves a daemon and files, the session ends, and another
    user's run in that same container finds nothing of it."""
    settings = settings_for(tmp_path, pool_max_total=1, pool_max_size=1)
    probe = (  # the fork server (zygote) is named: it is there in every fresh container
        "import os\n"
        "me = (1, os.getpid())\n"
        "def who(p):\n"
        "    zygote = open(f'/proc/{p}/cmdline', 'rb').read().endswith(b'--zygote\\0')\n"
        "    return 'fork server' if zygote else p\n"
        "others = [who(p) for p in os.listdir('/proc') if p.isdigit() and int(p) not in me]\n"
        "print(sorted(os.listdir('/tmp')), sorted(os.listdir('/exec')), others)"
    )
    daemon = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        while True: time.sleep(0.05)\n"
        "    os._exit(0)\n"
        "open('/tmp/secret.txt', 'w').write('s'); open('/exec/left', 'w').write('s')"
    )
    with running_app(settings) as app_client:
        first, second = headers_for(app_client), headers_for(app_client)
        session_id = app_client.post(SESSIONS, json={}, headers=first).json()["session_id"]
        assert execute(app_client, session_id, first, daemon).json()["success"]
        assert app_client.delete(f"{SESSIONS}/{session_id}", headers=first).status_code == 204
        run = app_client.post("/api/v1/code/execute", json={"code": probe}, headers=second)
        assert run.status_code == 200, run.text
        assert run.json()["output"] == "['main.py'] [] ['fork server']\n"
        stats = app_client.app.state.sandbox.stats()["python"]
        assert stats["destroyed"] == 0, "the container came back through the proof of clean"
