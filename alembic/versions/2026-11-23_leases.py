"""Leases (issue 14): which node works on a queued job, a submission or a webhook delivery, and
until when; and which node holds a code session.

A node claims a row by writing its id into `lease_owner` and renews `lease_expires_at` while it
works; a row whose lease has expired is recovered by any node. The index on (status,
lease_expires_at) serves that recovery scan; the claim of queued work uses the existing
(status, created_at) indexes.

Revision ID: 0007_leases
Revises: 0006_sessions
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_leases"
down_revision: str | None = "0006_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEASED_TABLES = {"jobs": "ix_jobs_lease", "submissions": "ix_submissions_lease"}
DELIVERIES = ("webhook_deliveries", "ix_webhook_deliveries_lease")


def _tables() -> list[tuple[str, str]]:
    return [*LEASED_TABLES.items(), DELIVERIES]


def upgrade() -> None:
    for table, index in _tables():
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("lease_owner", sa.String(64), nullable=True))
            batch.add_column(
                sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
            )
        op.create_index(index, table, ["status", "lease_expires_at"])
    with op.batch_alter_table("code_sessions") as batch:
        batch.add_column(sa.Column("node_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("code_sessions") as batch:
        batch.drop_column("node_id")
    for table, index in reversed(_tables()):
        op.drop_index(index, table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("lease_expires_at")
            batch.drop_column("lease_owner")
