"""Jobs keep a run's args and extra files, its compile step and its resource usage.

`args` and `files` are stored so that a queued job runs later with them (JSON, as UTF-8 bytes
like the other text a user writes); the compile columns and the usage columns are filled when
the run finishes and stay NULL for interpreters and for runs the sandbox did not measure.

Revision ID: 0003_job_args_files_compile
Revises: 0002_job_text_utf8_bytes
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_job_args_files_compile"
down_revision: str | None = "0002_job_text_utf8_bytes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("args", sa.LargeBinary()),
    ("files", sa.LargeBinary()),
    ("compile_output", sa.LargeBinary()),
    ("compile_exit_code", sa.Integer()),
    ("compile_time_s", sa.Float()),
    ("compile_cached", sa.Boolean()),
    ("cpu_time_ms", sa.Float()),
    ("wall_time_ms", sa.Float()),
    ("peak_memory_kb", sa.Integer()),
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
