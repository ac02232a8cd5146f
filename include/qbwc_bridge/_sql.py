"""The statements every Web Connector call runs, built once at import and executed with parameters.

Building a SQLAlchemy statement and its cache key costs about twice what running it costs on SQLite
(~40 µs against ~20 µs), and a session runs a dozen of them per exchange. These are Core statements
on the tables (no ORM identity map, no autoflush): callers flush pending ORM changes first.
"""

from __future__ import annotations

from functools import lru_cache
from operator import attrgetter, itemgetter

from sqlalchemy import Update, bindparam, exists, func, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement

from erpsync.qbwc_bridge.models import Company, Exchange, Job, JobRequest, Ticket

COMPANIES = Company.__table__
TICKETS = Ticket.__table__
EXCHANGES = Exchange.__table__
REQUESTS = JobRequest.__table__
JOBS = Job.__table__

#: Requests still owed an answer: waiting, on the wire, or sent and not acknowledged.
ACTIVE_REQUEST_STATES = ("pending", "sent", "lost")

_c, _t, _e, _r, _j = COMPANIES.c, TICKETS.c, EXCHANGES.c, REQUESTS.c, JOBS.c

LOGIN = select(_c.id, _c.password_hash, _c.company_file).where(_c.username == bindparam("username"))
COMPANY_FILE_IDS = select(_c.name, _c.owner_id, _c.file_id, _c.qbxml_version).where(_c.id == bindparam("id"))
SET_COMPANY_VERSION = (
    update(COMPANIES).where(_c.id == bindparam("b_id")).values(qbxml_version=bindparam("b_version"))
)
#: PostgreSQL: every write transaction of a Web Connector call takes this lock first (authenticate,
#: send, receive, close...), so the calls of one company run one at a time, in every replica, and
#: never interleave with another session's. NO KEY UPDATE: inserts referencing the company (jobs,
#: requests) take KEY SHARE and do not wait for it. SQLite's single write lock already serializes.
LOCK_COMPANY = select(_c.id).where(_c.id == bindparam("id")).with_for_update(key_share=True)
OPEN_TICKETS = select(_t.ticket, _t.pending_exchange_id, _t.expires_at).where(
    _t.company_id == bindparam("company_id"), _t.state == "open"
)
#: Documents of the company still awaiting an answer: once no session is open, none can come.
SENT_EXCHANGES = (
    select(_e.id).where(_e.company_id == bindparam("company_id"), _e.state == "sent").order_by(_e.id)
)
SUPERSEDE = (
    update(TICKETS)
    .where(_t.ticket.in_(bindparam("b_tickets", expanding=True)))
    .values(state="superseded", closed_at=bindparam("b_now"), pending_exchange_id=None)
)
INSERT_TICKET = insert(TICKETS)
EXPIRED_JOBS = select(_j.id).where(
    _j.company_id == bindparam("company_id"),
    _j.state.in_(("queued", "in_progress")),
    _j.expires_at < bindparam("now"),
)

#: Every ticket column but the HCP answer (kilobytes, written once per session, never read back).
TICKET = select(*(c for c in _t if c.name != "hcp_response")).where(_t.ticket == bindparam("ticket"))


@lru_cache(maxsize=64)
def ticket_update(columns: tuple[str, ...]) -> Update:
    """UPDATE of these ticket columns (parameters `b_<column>`, `b_ticket`); a call changes a few."""
    return (
        update(TICKETS)
        .where(_t.ticket == bindparam("b_ticket"))
        .values({c: bindparam(f"b_{c}") for c in columns})
    )


OUTSTANDING = select(func.count()).where(
    _r.company_id == bindparam("company_id"), _r.state.in_(ACTIVE_REQUEST_STATES)
)
#: Requests of the company on the wire or being reconciled, per state (why nothing is sendable now).
UNSETTLED_BY_STATE = (
    select(_r.state, func.count())
    .where(_r.company_id == bindparam("company_id"), _r.state.in_(("sent", "lost")))
    .group_by(_r.state)
)
OLDEST_LOST_WORK = (
    select(_e.id)
    .where(_e.company_id == bindparam("company_id"), _e.state == "lost", _e.kind == "work")
    .order_by(_e.id)
    .limit(1)
)
#: The next requests to send, with their job's error mode: one SELECT per document.
PENDING_BATCH = (
    select(
        _r.id,
        _r.job_id,
        _r.kind,
        _r.request_xml,
        _r.qb_request_id,
        _r.solo,
        _r.iterator_id,
        _r.iterator_ticket,
        _j.on_error,
        _j.state.label("job_state"),
    )
    .join(JOBS, _j.id == _r.job_id)
    .where(_r.company_id == bindparam("company_id"), _r.state == "pending")
    .order_by(_r.id)
    .limit(bindparam("limit"))
)
INSERT_EXCHANGE = insert(EXCHANGES)
#: Exactly the document's requests, and only while still pending: the caller checks the row count.
#: (Not an id range: on PostgreSQL an enqueue committing late can put a pending row inside it.)
MARK_SENT = (
    update(REQUESTS)
    .where(
        _r.id.in_(bindparam("b_ids", expanding=True)),
        _r.company_id == bindparam("b_company_id"),
        _r.state == "pending",
    )
    .values(
        state="sent",
        exchange_id=bindparam("b_exchange_id"),
        attempts=_r.attempts + 1,
        updated_at=bindparam("b_now"),
    )
)
START_JOBS = (
    update(JOBS)
    .where(_j.id.in_(bindparam("b_ids", expanding=True)), _j.state == "queued")
    .values(state="in_progress", updated_at=bindparam("b_now"))
)
EXCHANGE = select(_e.id, _e.kind, _e.state).where(_e.id == bindparam("id"))
ACK_EXCHANGE = (
    update(EXCHANGES)
    .where(_e.id == bindparam("b_id"))
    .values(state=bindparam("b_state"), acked_at=bindparam("b_acked_at"))
)

#: What an answer changes on its request; one executemany writes a whole batch.
ANSWER_COLUMNS = (
    "state",
    "status_code",
    "status_severity",
    "status_message",
    "list_id",
    "txn_id",
    "edit_sequence",
    "response_xml",
    "record_count",
    "iterator_id",
    "iterator_ticket",
)
ANSWERED_BATCH = select(
    *(_r[name] for name in sorted({"id", "job_id", "qb_request_id", "position", "attempts", *ANSWER_COLUMNS}))
).where(_r.exchange_id == bindparam("exchange_id"))
#: The ANSWER_COLUMNS of a row or loaded request, in that order, as a tuple.
answer_fields = attrgetter(*ANSWER_COLUMNS)
#: Parameters `b_<column>` for ANSWER_COLUMNS, `updated_at` and `id`: run with `executemany`.
BULK_ANSWER = (
    update(REQUESTS)
    .where(_r.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}") for name in (*ANSWER_COLUMNS, "updated_at")})
)


@lru_cache(maxsize=32)
def _driver_form(stmt: ClauseElement, dialect: Dialect):
    """(SQL text, positional getter or None, {position or name: bind processor}) for `stmt`."""
    compiled = stmt.compile(dialect=dialect)
    names = list(compiled.positiontup) if compiled.positional else None
    processors = dict(compiled._bind_processors)
    if names is not None:
        processors = {names.index(name): proc for name, proc in processors.items()}
        getter = itemgetter(*(name[2:] for name in names))
        return compiled.string, getter, processors
    return compiled.string, None, processors


def executemany(s: Session, stmt: ClauseElement, rows: list[dict]) -> None:
    """Run `stmt` (binds named `b_<column>`) once per row of `rows` (keyed by `<column>`).

    Hands the driver the statement compiled once and plain parameter tuples: SQLAlchemy's own
    executemany builds a parameter dict per row through the compiler (~10 µs each, 100 per exchange).
    Core only, like every statement here: callers flush pending ORM changes first.
    """
    if not rows:
        return
    conn = s.connection()
    sql, getter, processors = _driver_form(stmt, conn.dialect)
    if getter is not None:
        params = [getter(row) for row in rows]
        if processors:  # e.g. SQLite's float coercion of updated_at
            converted = []
            for p in params:
                p = list(p)
                for i, process in processors.items():
                    p[i] = process(p[i])
                converted.append(tuple(p))
            params = converted
    else:
        params = [{f"b_{k}": v for k, v in row.items()} for row in rows]
        if processors:
            params = [{k: processors[k](v) if k in processors else v for k, v in p.items()} for p in params]
    conn.exec_driver_sql(sql, params)


#: Jobs to settle, with two index probes each (job_id/state index) instead of counting their requests.
SETTLE_JOBS = select(
    _j.id,
    _j.state,
    _j.request_count,
    _j.finished_at,
    _j.error,
    exists().where(_r.job_id == _j.id, _r.state.in_(ACTIVE_REQUEST_STATES)).label("active"),
    exists().where(_r.job_id == _j.id, _r.state.in_(("done", "failed", "sent", "lost"))).label("touched"),
).where(_j.id.in_(bindparam("ids", expanding=True)), _j.state.not_in(("cancelled", "expired")))
#: A job cancelled or expired by another transaction after SETTLE_JOBS read it keeps that state.
SETTLE = (
    update(JOBS)
    .where(_j.id == bindparam("b_id"), _j.state.not_in(("cancelled", "expired")))
    .values(
        state=bindparam("b_state"),
        finished_at=bindparam("b_finished_at"),
        error=bindparam("b_error"),
        updated_at=bindparam("b_updated_at"),
    )
)
