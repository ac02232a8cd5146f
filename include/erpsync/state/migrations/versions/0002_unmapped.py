"""Remember the pairs a user un-mapped in the target (the Autotask flow's cleared Salesforce UDF).

Revision ID: 0002_unmapped
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_unmapped"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erpsync_unmapped",
        sa.Column("flow", sa.String(200), primary_key=True),
        sa.Column("source_key", sa.String(255), primary_key=True),
        sa.Column("target_id", sa.String(255), nullable=True),
        sa.Column("unmapped_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("erpsync_unmapped")
