"""Index job requests by (job, state): settling a job after each exchange probes it instead of counting.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_job_requests_job_state", "job_requests", ["job_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_job_requests_job_state", table_name="job_requests")
