"""Sessions (issue 13): one row per session, kept after it ends so that its id answers 410.

Revision ID: 0006_sessions
Revises: 0005_submissions
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_sessions"
down_revision: str | None = "0005_submissions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "code_sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("language", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("idle_timeout_s", sa.Float(), nullable=False),
        sa.Column("max_lifetime_s", sa.Float(), nullable=False),
        sa.Column("cells", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
    )
    op.create_index("ix_code_sessions_user_status", "code_sessions", ["user_id", "status"])
    op.create_index("ix_code_sessions_status", "code_sessions", ["status"])


def downgrade() -> None:
    op.drop_index("ix_code_sessions_status", table_name="code_sessions")
    op.drop_index("ix_code_sessions_user_status", table_name="code_sessions")
    op.drop_table("code_sessions")
