"""Record activity log: per record and run, the source fields read and the fields sent (issue 15).

Revision ID: 0004_record_activity
Revises: 0002_unmapped
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_record_activity"
down_revision = "0002_unmapped"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erpsync_record_activity",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("source_key", sa.String(255), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("target_id", sa.String(255), nullable=True),
        sa.Column("source_fields", sa.JSON(), nullable=True),
        sa.Column("sent_fields", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_erpsync_record_activity_flow_at", "erpsync_record_activity", ["flow", "at"])
    op.create_index("ix_erpsync_record_activity_key", "erpsync_record_activity", ["flow", "source_key"])


def downgrade() -> None:
    op.drop_table("erpsync_record_activity")
