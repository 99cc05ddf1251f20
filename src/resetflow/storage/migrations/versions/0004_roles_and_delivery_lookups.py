"""roles and delivery look-ups

``users.role`` ("user" or "admin": operators see /admin pages; every existing account
becomes "user" through the server default). Indexes on ``delivery_jobs``: the provider's
message id (provider webhooks find their job by it) and the creation time (the delivery
log lists the newest jobs first and counts the last hour and day).

SQLite adds the column and the indexes in place (batch mode decides; no table copy is
needed for either); PostgreSQL adds the column with its default in one statement.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("role", sa.String(length=16), server_default="user", nullable=False)
        )
    with op.batch_alter_table("delivery_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_delivery_jobs_provider_message_id", ["provider_message_id"], unique=False
        )
        batch_op.create_index("ix_delivery_jobs_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("delivery_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_jobs_created_at")
        batch_op.drop_index("ix_delivery_jobs_provider_message_id")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("role")
