"""Run Alembic from Python: used by the prestart step and by the test fixtures."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from app.core.config import REPO_ROOT


def alembic_config(database_url: str) -> Config:
    config = Config(toml_file=str(REPO_ROOT / "pyproject.toml"))
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


def downgrade_to_base(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "base")
