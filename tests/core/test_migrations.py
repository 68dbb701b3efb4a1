"""Migrations build exactly the schema the models describe, and unwind cleanly, on both databases.

Runs through Alembic's Python API with the config in pyproject.toml, as prestart does.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

import app.models  # noqa: F401  (fills Base.metadata)
from app.core.config import REPO_ROOT
from app.core.db import Base

MODEL_TABLES = set(Base.metadata.tables)


def _config(database_url: str) -> Config:
    config = Config(toml_file=str(REPO_ROOT / "pyproject.toml"))
    config.attributes["database_url"] = database_url
    return config


def _tables(database_url: str) -> set[str]:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def _drift(database_url: str) -> list[object]:
    """What `alembic check` would report: differences between the models and the live schema."""
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _assert_round_trip(database_url: str) -> None:
    config = _config(database_url)

    command.upgrade(config, "head")
    assert _tables(database_url) >= MODEL_TABLES | {"alembic_version"}
    assert _drift(database_url) == []

    command.downgrade(config, "base")
    assert not _tables(database_url) & MODEL_TABLES

    command.upgrade(config, "head")
    assert _tables(database_url) >= MODEL_TABLES
    assert _drift(database_url) == []


def test_models_define_tables() -> None:
    # Guards the round trips below against passing vacuously on an empty metadata.
    assert {"users", "refresh_tokens", "jobs"} <= MODEL_TABLES


def test_sqlite_upgrade_downgrade_upgrade_without_drift(tmp_path: Path) -> None:
    _assert_round_trip(f"sqlite:///{(tmp_path / 'migrations.db').as_posix()}")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on the server from scripts/services.sh, dropped afterwards."""
    server_url = os.environ.get("WARMBOX_TEST_POSTGRES_URL", "")
    if not server_url:
        reason = (
            "WARMBOX_TEST_POSTGRES_URL is not set; scripts/test.sh starts PostgreSQL and sets it"
        )
        if _in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"warmbox_migrations_{secrets.token_hex(6)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_postgres_upgrade_downgrade_upgrade_without_drift(postgres_url: str) -> None:
    _assert_round_trip(postgres_url)
