"""The status page (queue per company, last sessions with counts and errors) and the store gauges.

It is where users look first when a sync "did nothing" (what Apatar's "last synchronization results"
page was). It names Web Connector users and their errors, so it needs a token and shows only the
companies that token may read; the .qwc AppSupport URL (which must answer 200) is SUPPORT_PAGE.
"""

from __future__ import annotations

import time
from html import escape

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from erpsync.qbwc_bridge.models import Company, Exchange, Job, JobRequest, Ticket

__all__ = ["SUPPORT_PAGE", "gauges", "render_status"]

#: The public AppSupport page: says what this is and names no company, user or error.
SUPPORT_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>QuickBooks Web Connector bridge</title>"
    "</head><body><h1>QuickBooks Web Connector bridge</h1><p>This service exchanges data with QuickBooks "
    "through the Web Connector. For help, contact the administrator who gave you the .qwc file; the "
    "status of each company is on <code>/status</code> (a token is required).</p></body></html>"
)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else ""


def _queue(s: Session) -> dict[int, dict[str, int]]:
    rows = s.execute(
        select(JobRequest.company_id, JobRequest.state, func.count()).group_by(
            JobRequest.company_id, JobRequest.state
        )
    ).all()
    out: dict[int, dict[str, int]] = {}
    for company_id, state, n in rows:
        out.setdefault(company_id, {})[state] = n
    return out


def render_status(s: Session, *, sessions: int = 20, companies: frozenset[str] | None = None) -> str:
    """The page for a reader of `companies` (None = every company); nothing of the others."""
    scope = companies
    stmt = select(Company).order_by(Company.name)
    companies = list(s.scalars(stmt if scope is None else stmt.where(Company.name.in_(sorted(scope)))))
    names = {c.id: c.name for c in companies}
    queue = _queue(s)
    job_counts = dict(
        ((cid, st), n)
        for cid, st, n in s.execute(
            select(Job.company_id, Job.state, func.count()).group_by(Job.company_id, Job.state)
        )
    )
    rows = []
    for c in companies:
        q = queue.get(c.id, {})
        rows.append(
            f"<tr><td>{escape(c.name)}</td><td>{escape(c.username)}</td>"
            f"<td>{job_counts.get((c.id, 'queued'), 0)}</td><td>{job_counts.get((c.id, 'in_progress'), 0)}</td>"
            f"<td>{q.get('pending', 0)}</td><td>{q.get('sent', 0) + q.get('lost', 0)}</td>"
            f"<td>{q.get('done', 0)}</td><td>{q.get('failed', 0)}</td></tr>"
        )
    last_stmt = select(Ticket).order_by(Ticket.created_at.desc()).limit(sessions)
    if scope is not None:
        last_stmt = last_stmt.where(Ticket.company_id.in_(list(names)))
    last = s.scalars(last_stmt)
    srows = []
    for t in last:
        srows.append(
            f"<tr><td>{escape(names.get(t.company_id, '?'))}</td><td>{_when(t.created_at)}</td>"
            f"<td>{_when(t.closed_at)}</td><td>{escape(t.state)}</td><td>{t.exchanges}</td>"
            f"<td>{t.requests_ok}</td><td>{t.requests_failed}</td><td>{t.reconciled}</td>"
            f"<td>{escape(t.last_error or '')}</td></tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>QuickBooks bridge status</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style></head>"
        "<body><h1>QuickBooks Web Connector bridge</h1><h2>Queue per company</h2>"
        "<table><tr><th>Company</th><th>Web Connector user</th><th>Jobs queued</th><th>Jobs running</th>"
        "<th>Requests waiting</th><th>Requests unacknowledged</th><th>Done</th><th>Failed</th></tr>"
        f"{''.join(rows)}</table><h2>Last synchronization sessions</h2>"
        "<table><tr><th>Company</th><th>Started</th><th>Ended</th><th>State</th><th>Exchanges</th>"
        "<th>Succeeded</th><th>Failed</th><th>Reconciled</th><th>Last error</th></tr>"
        f"{''.join(srows)}</table></body></html>"
    )


def gauges(
    s: Session, *, companies: frozenset[str] | None = None
) -> list[tuple[str, str, dict[str, str], float]]:
    """Store gauges; per-company series only for `companies` (None = all), the totals for everyone."""
    names = dict(s.execute(select(Company.id, Company.name)).all())
    out: list[tuple[str, str, dict[str, str], float]] = []
    for company_id, states in _queue(s).items():
        if companies is not None and names.get(company_id) not in companies:
            continue
        for state, n in states.items():
            out.append(
                (
                    "qbwc_bridge_requests",
                    "Job requests by company and state.",
                    {"company": names.get(company_id, "?"), "state": state},
                    n,
                )
            )
    for state, n in s.execute(select(Job.state, func.count()).group_by(Job.state)):
        out.append(("qbwc_bridge_jobs", "Jobs by state.", {"state": state}, n))
    for state, n in s.execute(select(Exchange.state, func.count()).group_by(Exchange.state)):
        out.append(("qbwc_bridge_exchanges", "Web Connector exchanges by state.", {"state": state}, n))
    open_tickets = s.scalar(select(func.count()).select_from(Ticket).where(Ticket.state == "open"))
    out.append(("qbwc_bridge_open_sessions", "Web Connector sessions currently open.", {}, open_tickets))
    return out
