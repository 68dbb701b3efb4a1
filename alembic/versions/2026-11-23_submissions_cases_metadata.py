"""Graded submissions: a submission, its test cases, and its metadata as indexed key/value rows.

Metadata is a side table rather than a JSON column so that `metadata.<key>=<value>` filters are
one indexed lookup on SQLite and PostgreSQL alike. Text a user writes is stored as UTF-8 bytes
(LargeBinary), as in the jobs table; metadata keys and values are checked plain strings.

Revision ID: 0005_submissions
Revises: 0004_webhooks
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_submissions"
down_revision: str | None = "0004_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("language", sa.String(32), nullable=False),
        sa.Column("code", sa.LargeBinary(), nullable=False),
        sa.Column("files", sa.LargeBinary(), nullable=True),
        sa.Column("compare", sa.String(8), nullable=False),
        sa.Column("abs_tol", sa.Float(), nullable=False),
        sa.Column("rel_tol", sa.Float(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("callback_url", sa.String(2048), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=True),
        sa.Column("passed", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("error", sa.LargeBinary(), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("compile_output", sa.LargeBinary(), nullable=True),
        sa.Column("compile_exit_code", sa.Integer(), nullable=True),
        sa.Column("compile_time_s", sa.Float(), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("started_at", UTC_DATETIME, nullable=True),
        sa.Column("finished_at", UTC_DATETIME, nullable=True),
        sa.UniqueConstraint(
            "user_id", "idempotency_key", name="uq_submissions_user_idempotency_key"
        ),
    )
    for name, columns in (
        ("ix_submissions_user_created", ["user_id", "created_at"]),
        ("ix_submissions_status_created", ["status", "created_at"]),
        ("ix_submissions_language_created", ["language", "created_at"]),
        ("ix_submissions_verdict_created", ["verdict", "created_at"]),
        ("ix_submissions_created", ["created_at"]),
    ):
        op.create_index(name, "submissions", columns)
    op.create_table(
        "submission_cases",
        sa.Column(
            "submission_id",
            sa.String(36),
            sa.ForeignKey("submissions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("number", sa.Integer(), primary_key=True),
        sa.Column("stdin", sa.LargeBinary(), nullable=False),
        sa.Column("expected_output", sa.LargeBinary(), nullable=False),
        sa.Column("args", sa.LargeBinary(), nullable=True),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=True),
        sa.Column("time_ms", sa.Float(), nullable=True),
        sa.Column("memory_kb", sa.Integer(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("stdout", sa.LargeBinary(), nullable=True),
        sa.Column("stderr", sa.LargeBinary(), nullable=True),
        sa.Column("truncated", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "submission_metadata",
        sa.Column(
            "submission_id",
            sa.String(36),
            sa.ForeignKey("submissions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_index(
        "ix_submission_metadata_key_value", "submission_metadata", ["key", "value", "submission_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_submission_metadata_key_value", table_name="submission_metadata")
    op.drop_table("submission_metadata")
    op.drop_table("submission_cases")
    op.drop_table("submissions")
