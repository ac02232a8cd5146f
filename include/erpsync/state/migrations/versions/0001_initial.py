"""Create runs, record identities, cursors and quarantine.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "erpsync_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        _ts("interval_start", True),
        _ts("interval_end", True),
        sa.Column("status", sa.String(20), nullable=False),
        _ts("started_at"),
        _ts("finished_at", True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.UniqueConstraint("flow", "run_id", name="uq_erpsync_runs_flow_run"),
    )
    op.create_index("ix_erpsync_runs_started_at", "erpsync_runs", ["started_at"])
    op.create_table(
        "erpsync_record_identities",
        sa.Column("flow", sa.String(200), primary_key=True),
        sa.Column("source_key", sa.String(255), primary_key=True),
        sa.Column("target_id", sa.String(255), nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        _ts("first_written_at"),
        _ts("last_written_at"),
        sa.Column("last_run_id", sa.String(250), nullable=True),
    )
    op.create_table(
        "erpsync_cursors",
        sa.Column("flow", sa.String(200), primary_key=True),
        sa.Column("source", sa.String(200), primary_key=True),
        sa.Column("value", sa.String(64), nullable=False),
        _ts("updated_at"),
        sa.Column("run_id", sa.String(250), nullable=True),
    )
    op.create_table(
        "erpsync_quarantine",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("source_key", sa.String(255), nullable=False),
        sa.Column("stage", sa.String(50), nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("column", sa.String(200), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        _ts("payload_expires_at", True),
        _ts("first_seen"),
        _ts("last_seen"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_run_id", sa.String(250), nullable=True),
        sa.Column("last_run_id", sa.String(250), nullable=True),
        _ts("resolved_at", True),
        sa.Column("resolved_run_id", sa.String(250), nullable=True),
    )
    op.create_index("ix_erpsync_quarantine_open", "erpsync_quarantine", ["flow", "resolved_at", "source_key"])
    op.create_index("ix_erpsync_quarantine_expiry", "erpsync_quarantine", ["payload_expires_at"])


def downgrade() -> None:
    op.drop_table("erpsync_quarantine")
    op.drop_table("erpsync_cursors")
    op.drop_table("erpsync_record_identities")
    op.drop_index("ix_erpsync_runs_started_at", table_name="erpsync_runs")
    op.drop_table("erpsync_runs")
