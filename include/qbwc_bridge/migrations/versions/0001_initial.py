"""Initial bridge schema: companies, tokens, jobs, job requests, exchanges, tickets.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "companies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("username", sa.String(100), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("owner_id", sa.String(38), nullable=False),
        sa.Column("file_id", sa.String(38), nullable=False),
        sa.Column("company_file", sa.String(500), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("run_every_minutes", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("on_error", sa.String(10), nullable=False),
        sa.Column("request_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.UniqueConstraint("company_id", "idempotency_key", name="uq_jobs_company_idempotency_key"),
    )
    op.create_index("ix_jobs_company_state", "jobs", ["company_id", "state"])
    op.create_table(
        "job_requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("request_xml", sa.Text, nullable=False),
        sa.Column("caller_request_id", sa.String(50), nullable=True),
        sa.Column("qb_request_id", sa.String(50), nullable=False, unique=True),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("status_severity", sa.String(10), nullable=True),
        sa.Column("status_message", sa.Text, nullable=True),
        sa.Column("list_id", sa.String(40), nullable=True),
        sa.Column("txn_id", sa.String(40), nullable=True),
        sa.Column("edit_sequence", sa.String(20), nullable=True),
        sa.Column("response_xml", sa.Text, nullable=True),
        sa.Column("record_count", sa.Integer, nullable=False),
        sa.Column("iterator_id", sa.String(100), nullable=True),
        sa.Column("iterator_ticket", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("exchange_id", sa.Integer, nullable=True),
        sa.Column("solo", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_job_requests_queue", "job_requests", ["company_id", "state", "id"])
    op.create_index("ix_job_requests_job", "job_requests", ["job_id", "position"])
    op.create_index("ix_job_requests_exchange", "job_requests", ["exchange_id"])
    op.create_table(
        "exchanges",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), nullable=False),
        sa.Column("ticket", sa.String(64), nullable=False),
        sa.Column("message_set_id", sa.String(23), nullable=False),
        sa.Column("old_message_set_id", sa.String(23), nullable=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("request_count", sa.Integer, nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("probes", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("acked_at", sa.Float, nullable=True),
    )
    op.create_index("ix_exchanges_company_state", "exchanges", ["company_id", "state"])
    op.create_table(
        "tickets",
        sa.Column("ticket", sa.String(64), primary_key=True),
        sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), nullable=True),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("closed_at", sa.Float, nullable=True),
        sa.Column("client_version", sa.String(40), nullable=True),
        sa.Column("hcp_response", sa.Text, nullable=True),
        sa.Column("qbxml_version", sa.String(8), nullable=True),
        sa.Column("country", sa.String(4), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("pending_exchange_id", sa.Integer, nullable=True),
        sa.Column("baseline", sa.Integer, nullable=False),
        sa.Column("exchanges", sa.Integer, nullable=False),
        sa.Column("requests_ok", sa.Integer, nullable=False),
        sa.Column("requests_failed", sa.Integer, nullable=False),
        sa.Column("reconciled", sa.Integer, nullable=False),
    )
    op.create_index("ix_tickets_company_state", "tickets", ["company_id", "state"])


def downgrade() -> None:
    for index, table in [
        ("ix_tickets_company_state", "tickets"),
        ("ix_exchanges_company_state", "exchanges"),
        ("ix_job_requests_exchange", "job_requests"),
        ("ix_job_requests_job", "job_requests"),
        ("ix_job_requests_queue", "job_requests"),
        ("ix_jobs_company_state", "jobs"),
    ]:
        op.drop_index(index, table_name=table)
    for table in ("tickets", "exchanges", "job_requests", "jobs", "api_tokens", "companies"):
        op.drop_table(table)
