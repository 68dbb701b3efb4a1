"""Jobs keep code, stdin, stdout and stderr as UTF-8 bytes: PostgreSQL's text refuses NUL.

A program that printed U+0000, or code that contained it, could be stored on SQLite but not on
PostgreSQL (500 there). As `bytea` / `BLOB` both databases keep every string exactly. Existing
rows are converted in place on both databases.

Revision ID: 0002_job_text_utf8_bytes
Revises: 0001_initial
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_job_text_utf8_bytes"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# column -> nullable. The SQL below is built from these names only (hence the S608 noqa).
COLUMNS = {"code": False, "stdin": True, "stdout": True, "stderr": True}


def _is_postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"


def upgrade() -> None:
    if _is_postgresql():
        for column in COLUMNS:
            op.alter_column(
                "jobs",
                column,
                type_=sa.LargeBinary(),
                existing_type=sa.Text(),
                postgresql_using=f"convert_to({column}, 'UTF8')",
            )
        return
    _sqlite_retype(sa.Text(), sa.LargeBinary())
    # The table copy keeps each value's storage class; CAST makes text its UTF-8 bytes.
    for column in COLUMNS:
        op.execute(
            f"UPDATE jobs SET {column} = CAST({column} AS BLOB) WHERE typeof({column}) = 'text'"  # noqa: S608
        )


def downgrade() -> None:
    if _is_postgresql():
        _replace_nul_bytes()
        for column in COLUMNS:
            op.alter_column(
                "jobs",
                column,
                type_=sa.Text(),
                existing_type=sa.LargeBinary(),
                postgresql_using=f"convert_from({column}, 'UTF8')",
            )
        return
    _sqlite_retype(sa.LargeBinary(), sa.Text())
    for column in COLUMNS:
        op.execute(
            f"UPDATE jobs SET {column} = CAST({column} AS TEXT) WHERE typeof({column}) = 'blob'"  # noqa: S608
        )


def _sqlite_retype(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    with op.batch_alter_table("jobs") as batch:
        for column, nullable in COLUMNS.items():
            batch.alter_column(column, type_=new, existing_type=old, existing_nullable=nullable)


def _replace_nul_bytes() -> None:
    """PostgreSQL text cannot hold U+0000: going back replaces it with U+FFFD (the one loss)."""
    connection = op.get_bind()
    for column in COLUMNS:
        rows = connection.execute(
            sa.text(f"SELECT id, {column} FROM jobs WHERE position('\\x00'::bytea IN {column}) > 0")  # noqa: S608
        ).all()
        for job_id, value in rows:
            fixed = bytes(value).replace(b"\x00", "\ufffd".encode())
            connection.execute(
                sa.text(f"UPDATE jobs SET {column} = :value WHERE id = :id"),  # noqa: S608
                {"value": fixed, "id": job_id},
            )
