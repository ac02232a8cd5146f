"""Web Connector health per company file, as JSON for the Airflow UI's sync pages (issue 15).

The status page lists sessions; this answers the on-call question per company file: when did its
Web Connector last poll, when did a session last do work without an error, how much is queued, and
how many requests sit in doubt (sent and unanswered, or unprovable: an operator decides). Idle polls
(authenticate answered "none") are counted, not listed.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from erpsync.qbwc_bridge.models import Company, JobRequest, Ticket

__all__ = ["company_health"]

#: request states that wait for QuickBooks / an answer / a person
_QUEUED = ("pending",)
_UNANSWERED = ("sent", "lost")
_IN_DOUBT = ("in_doubt",)


def company_health(s: Session, *, companies: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """One dict per company the reader may see (None = every company), by name."""
    stmt = select(Company).order_by(Company.name)
    if companies is not None:
        stmt = stmt.where(Company.name.in_(sorted(companies)))
    out = []
    now = time.time()
    for c in s.scalars(stmt):
        states = dict(
            s.execute(
                select(JobRequest.state, func.count())
                .where(JobRequest.company_id == c.id)
                .group_by(JobRequest.state)
            ).all()
        )
        last_poll = s.scalar(select(func.max(Ticket.created_at)).where(Ticket.company_id == c.id))
        worked = (
            select(Ticket)
            .where(Ticket.company_id == c.id, Ticket.exchanges > 0)
            .order_by(Ticket.created_at.desc())
            .limit(1)
        )
        last_work = s.scalar(worked)
        last_ok = s.scalar(
            select(func.max(Ticket.closed_at)).where(
                Ticket.company_id == c.id,
                Ticket.state == "closed",
                Ticket.exchanges > 0,
                Ticket.last_error.is_(None),
            )
        )
        since = last_work.created_at if last_work else 0.0
        idle = s.scalar(
            select(func.count())
            .select_from(Ticket)
            .where(Ticket.company_id == c.id, Ticket.state == "idle", Ticket.created_at > since)
        )
        out.append(
            {
                "company": c.name,
                "last_poll": last_poll,
                "seconds_since_poll": None if last_poll is None else round(now - last_poll, 1),
                "last_successful_session": last_ok,
                "last_session_with_work": None
                if last_work is None
                else {
                    "started": last_work.created_at,
                    "closed": last_work.closed_at,
                    "state": last_work.state,
                    "exchanges": last_work.exchanges,
                    "requests_ok": last_work.requests_ok,
                    "requests_failed": last_work.requests_failed,
                    "last_error": last_work.last_error,
                },
                "idle_polls_since_work": int(idle or 0),
                "queue_depth": sum(int(states.get(k, 0)) for k in _QUEUED),
                "unanswered": sum(int(states.get(k, 0)) for k in _UNANSWERED),
                "in_doubt": sum(int(states.get(k, 0)) for k in _IN_DOUBT),
            }
        )
    return out
