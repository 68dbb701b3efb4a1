"""Webhook deliveries, and a job's callback URL and metadata.

`webhook_deliveries` holds every delivery of a finished resource (a job now, a submission later)
to its callback URL with its attempts, so deliveries survive a restart; the index on (status,
next_attempt_at) is what the delivery worker's claim reads. Jobs keep the `callback_url` and the
flat string `metadata` they were submitted with (both NULL when not given).

Revision ID: 0004_webhooks
Revises: 0003_job_args_files_compile
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_webhooks"
down_revision: str | None = "0003_job_args_files_compile"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("resource", sa.String(16), nullable=False),
        sa.Column("resource_id", sa.String(36), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_webhook_deliveries_status_next", "webhook_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index(
        "ix_webhook_deliveries_resource", "webhook_deliveries", ["resource", "resource_id"]
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("callback_url", sa.String(2048), nullable=True))
        batch.add_column(sa.Column("metadata", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("metadata")
        batch.drop_column("callback_url")
    op.drop_index("ix_webhook_deliveries_resource", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_status_next", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
