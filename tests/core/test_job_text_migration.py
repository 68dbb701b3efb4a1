"""The migration to UTF-8 bytes keeps every existing job's code and output, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from app.core.migrations import alembic_config
from app.jobs.models import Job
from tests.databases import PostgresServer

BEFORE = "0001_initial"
# The ORM model is the head's, so the rows are read back at the head (0002 and every later one).
AFTER = "head"
ROWS = {
    "with-text": {"code": "print('é ✓ 日本')", "stdin": "naïve", "stdout": "é ✓\n", "stderr": ""},
    "with-nulls": {"code": "pass", "stdin": None, "stdout": None, "stderr": None},
}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{(tmp_path / 'migration.db').as_posix()}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create("warmbox_migration")
    yield url
    server.drop(url)


def _insert_old_rows(database_url: str) -> None:
    now = datetime.now(UTC)
    engine = create_engine(database_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (id, username, username_key, password_hash, role, is_active,"
                " created_at, updated_at) VALUES ('u1', 'alice', 'alice', 'x', 'user', true,"
                " :now, :now)"
            ),
            {"now": now},
        )
        for job_id, columns in ROWS.items():
            connection.execute(
                text(
                    "INSERT INTO jobs (id, user_id, mode, language, code, stdin, timeout_s,"
                    " status, cancel_requested, created_at, stdout, stderr, timed_out,"
                    " memory_exceeded, output_truncated) VALUES (:id, 'u1', 'sync', 'python',"
                    " :code, :stdin, 5, 'succeeded', false, :now, :stdout, :stderr, false,"
                    " false, false)"
                ),
                {"id": job_id, "now": now, **columns},
            )
    engine.dispose()


def _read(database_url: str, statement: str) -> dict[str, tuple[object, ...]]:
    engine = create_engine(database_url, poolclass=NullPool)
    with engine.connect() as connection:
        rows = connection.execute(text(statement)).all()
    engine.dispose()
    return {row[0]: tuple(row[1:]) for row in rows}


def test_existing_rows_read_back_unchanged_after_the_upgrade_and_the_downgrade(
    database_url: str,
) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, BEFORE)
    _insert_old_rows(database_url)

    command.upgrade(config, AFTER)

    engine = create_engine(database_url, poolclass=NullPool)
    with Session(engine) as session:
        for job_id, columns in ROWS.items():
            job = session.get(Job, job_id)
            assert job is not None
            assert {name: getattr(job, name) for name in columns} == columns
        # New rows keep what PostgreSQL's text could not.
        session.get(Job, "with-nulls").stdout = "a\x00b"  # type: ignore[union-attr]
        session.commit()
    engine.dispose()
    stored = _read(database_url, "SELECT id, code, stdout FROM jobs")
    assert stored["with-text"] == ("print('é ✓ 日本')".encode(), "é ✓\n".encode())

    command.downgrade(config, BEFORE)

    back = _read(database_url, "SELECT id, code, stdin, stdout, stderr FROM jobs")
    assert back["with-text"] == tuple(ROWS["with-text"].values())
    # PostgreSQL's text cannot hold the NUL: the downgrade's one documented loss.
    expected = "a\x00b" if database_url.startswith("sqlite") else "a\ufffdb"
    assert back["with-nulls"] == ("pass", None, expected, None)
