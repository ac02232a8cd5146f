"""Secrets at rest: tickets are stored as their SHA-256, jobs remember when their payloads were pruned.

Tickets written before are replaced by their hash (in `tickets`, and where exchanges and iterators
refer to them), so a session open during the upgrade goes on: the bridge hashes what the Web
Connector sends. A stored value that already is a 64-character hex hash is left alone.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import hashlib
import re

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_HASHED = re.compile(r"[0-9a-f]{64}")


def _hash_tickets() -> None:
    bind = op.get_bind()
    raw = [t for (t,) in bind.execute(sa.text("SELECT ticket FROM tickets")) if not _HASHED.fullmatch(t)]
    for ticket in raw:
        params = {"old": ticket, "new": hashlib.sha256(ticket.encode()).hexdigest()}
        bind.execute(sa.text("UPDATE tickets SET ticket = :new WHERE ticket = :old"), params)
        bind.execute(sa.text("UPDATE exchanges SET ticket = :new WHERE ticket = :old"), params)
        bind.execute(
            sa.text("UPDATE job_requests SET iterator_ticket = :new WHERE iterator_ticket = :old"), params
        )


def upgrade() -> None:
    _hash_tickets()
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("payload_pruned_at", sa.Float, nullable=True))


def downgrade() -> None:
    # Hashes cannot be turned back into tickets; the Web Connector simply authenticates again.
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("payload_pruned_at")
