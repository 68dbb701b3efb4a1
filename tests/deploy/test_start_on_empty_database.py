"""Starting the server on a database nobody migrated stops with one line that names the fix.

Runs uvicorn exactly as an operator would (`uvicorn app.main:app_factory --factory`), in a child
process with a fresh data directory, so what is proven is what the operator sees.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app.core.config import REPO_ROOT, Settings
from app.core.db import create_db_engine
from app.core.migrations import schema_problem, upgrade_to_head


def _server_env(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DATABASE_")}
    env.update(
        DATA_DIR=str(data_dir),
        ENVIRONMENT="test",
        SANDBOX_ENABLED="false",
        RATE_LIMIT_ENABLED="false",
        LOG_FORMAT="console",
    )
    return env


def _uvicorn(port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", "app.main:app_factory", "--factory"),
        *("--host", "127.0.0.1", "--port", str(port)),
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_uvicorn_on_an_empty_database_refuses_with_one_line_naming_prestart(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        _uvicorn(_free_port()),
        cwd=REPO_ROOT,
        env=_server_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "no such table" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "scripts/prestart.sh" in lines[0]


def test_uvicorn_on_a_migrated_database_serves(tmp_path: Path) -> None:
    upgrade_to_head(Settings(_env_file=None, data_dir=tmp_path).database_url)  # type: ignore[call-arg]
    port = _free_port()
    server = subprocess.Popen(
        _uvicorn(port),
        cwd=REPO_ROOT,
        env=_server_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "the server exited on a migrated database"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer /health in time"
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize(
    ("revision", "expected"),
    [(None, "no schema yet"), ("0123456789ab", "revision 0123456789ab")],
)
def test_schema_problem_names_what_is_wrong_and_the_fix(
    tmp_path: Path, revision: str | None, expected: str
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    if revision is not None:
        with create_engine(url).begin() as connection:
            connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            connection.execute(
                text("INSERT INTO alembic_version VALUES (:revision)"), {"revision": revision}
            )
    db_engine = create_db_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        problem = schema_problem(db_engine)
    finally:
        db_engine.dispose()
    assert problem is not None
    assert expected in problem
    assert "scripts/prestart.sh" in problem


def test_schema_problem_is_none_at_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    upgrade_to_head(url)
    db_engine = create_db_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        assert schema_problem(db_engine) is None
    finally:
        db_engine.dispose()
