"""Bridge trust: probe attempts and `in_doubt`, the company's qbXML version, scoped API tokens,
who created a job, and the login throttle shared by every replica.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_requests") as batch:
        batch.add_column(sa.Column("probe_attempts", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("companies") as batch:
        batch.add_column(sa.Column("qbxml_version", sa.String(8), nullable=True))
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("companies", sa.Text, nullable=True))
        batch.add_column(sa.Column("rights", sa.String(40), nullable=False, server_default="read,write"))
        batch.add_column(sa.Column("expires_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.Float, nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("created_by", sa.String(100), nullable=True))
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("blocked_until", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("login_throttle")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("created_by")
    with op.batch_alter_table("api_tokens") as batch:
        for name in ("revoked_at", "expires_at", "rights", "companies"):
            batch.drop_column(name)
    with op.batch_alter_table("companies") as batch:
        batch.drop_column("qbxml_version")
    with op.batch_alter_table("job_requests") as batch:
        batch.drop_column("probe_attempts")
