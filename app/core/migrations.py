"""Run Alembic from Python: used by the prestart step, the start-up check and the test fixtures."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from app.core.config import REPO_ROOT

PRESTART_HINT = "run `bash scripts/prestart.sh` (alembic upgrade head) first"


def alembic_config(database_url: str) -> Config:
    config = Config(toml_file=str(REPO_ROOT / "pyproject.toml"))
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


def downgrade_to_base(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "base")


def schema_problem(db_engine: Engine) -> str | None:
    """Say why the database cannot serve this code, or None when it is at the newest migration.

    The service never migrates by itself: with several processes on one database (and later
    several nodes) a migration is a deliberate step, run once by scripts/prestart.sh.
    """
    script = ScriptDirectory.from_config(Config(toml_file=str(REPO_ROOT / "pyproject.toml")))
    heads = set(script.get_heads())
    with db_engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    if current == heads:
        return None
    if not current:
        return f"the database has no schema yet; {PRESTART_HINT}"
    return (
        f"the database schema is at revision {', '.join(sorted(current))}, this code needs "
        f"{', '.join(sorted(heads))}; {PRESTART_HINT}"
    )
