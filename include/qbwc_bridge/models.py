"""Tables of the bridge store (SQLAlchemy 2 declarative). Alembic (migrations/) is the only schema path.

Times are stored as float epoch seconds: SQLite keeps no time zone, PostgreSQL would, and the bridge
only ever compares and displays them, so one portable representation avoids a whole class of bugs.
Everything a Web Connector session needs between two SOAP calls lives here (not in process memory),
which is what lets several bridge replicas on one PostgreSQL serve the same clients.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["ApiToken", "Base", "Company", "Exchange", "Job", "JobRequest", "LoginThrottle", "Ticket"]


class Base(DeclarativeBase):
    pass


class Company(Base):
    """One QuickBooks company file, reached through one Web Connector user."""

    __tablename__ = "companies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    #: scrypt$n$r$p$salt$hash (see passwords.py); never the password itself.
    password_hash: Mapped[str] = mapped_column(String(255))
    #: Stable GUIDs written into the .qwc; changing them makes QBWC ask to replace the application.
    owner_id: Mapped[str] = mapped_column(String(38))
    file_id: Mapped[str] = mapped_column(String(38))
    #: Full path QBWC should open ("" = whatever file is open in QuickBooks).
    company_file: Mapped[str] = mapped_column(String(500), default="")
    description: Mapped[str] = mapped_column(String(200), default="")
    run_every_minutes: Mapped[int] = mapped_column(Integer, default=15)
    created_at: Mapped[float] = mapped_column(Float)
    #: Highest qbXML version the company file reported (HCP answer / sendRequestXML), once known.
    qbxml_version: Mapped[str | None] = mapped_column(String(8), nullable=True)


class ApiToken(Base):
    """A jobs-API bearer token created with `qbwc-bridge token create` (only its SHA-256 is kept)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    #: JSON list of company names the token may touch; NULL = every company.
    companies: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Comma-separated rights: read, write, delete (ListDelRq/TxnDelRq need delete).
    rights: Mapped[str] = mapped_column(String(40), default="read,write")
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Job(Base):
    """An ordered list of qbXML requests for one company, enqueued by a DAG task."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("company_id", "idempotency_key", name="uq_jobs_company_idempotency_key"),
        Index("ix_jobs_company_state", "company_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: SHA-256 of the enqueue body: the same key with a different body is a conflict, not a replay.
    body_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))
    on_error: Mapped[str] = mapped_column(String(10))
    request_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Name of the API token that enqueued the job (for the audit trail; never the secret).
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    #: When its requests' qbXML (customer data) was removed after the retention period (retention.py).
    payload_pruned_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class JobRequest(Base):
    """One qbXML request of a job and, once answered, its result."""

    __tablename__ = "job_requests"
    __table_args__ = (
        Index("ix_job_requests_queue", "company_id", "state", "id"),
        Index("ix_job_requests_job", "job_id", "position"),
        Index("ix_job_requests_job_state", "job_id", "state"),
        Index("ix_job_requests_exchange", "exchange_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    request_xml: Mapped[str] = mapped_column(Text)
    #: The caller's requestID attribute, if any (echoed back in results).
    caller_request_id: Mapped[str | None] = mapped_column(String(50), nullable=True)
    #: The requestID the bridge sends; unique, so responses route back whatever else is in the batch.
    qb_request_id: Mapped[str] = mapped_column(String(50), unique=True)
    #: pending -> sent -> done | failed; sent -> lost (unacknowledged) -> pending | done | failed |
    #: in_doubt (probes could not tell whether it was applied: an operator decides); cancelled.
    state: Mapped[str] = mapped_column(String(12))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status_severity: Mapped[str | None] = mapped_column(String(10), nullable=True)
    status_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    list_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    txn_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    edit_sequence: Mapped[str | None] = mapped_column(String(20), nullable=True)
    response_xml: Mapped[str | None] = mapped_column(Text, nullable=True)
    record_count: Mapped[int] = mapped_column(Integer, default=0)
    #: Iterator paging: the QuickBooks iteratorID is only valid inside the session (ticket) that began it.
    iterator_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    iterator_ticket: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    exchange_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Send alone next time: the batch it was in was rejected as a whole (HRESULT parse error).
    solo: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[float] = mapped_column(Float)
    #: Reconciliation probes answered with something other than a clear "found" / "absent".
    probe_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Exchange(Base):
    """One sendRequestXML document: persisted as `sent` before it leaves, `acked` once answered."""

    __tablename__ = "exchanges"
    __table_args__ = (Index("ix_exchanges_company_state", "company_id", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    ticket: Mapped[str] = mapped_column(String(64))
    #: qbXML newMessageSetID (max 23 characters): QuickBooks keeps the outcome for error recovery.
    message_set_id: Mapped[str] = mapped_column(String(23))
    #: For a recovery exchange: the lost message set it asks about.
    old_message_set_id: Mapped[str | None] = mapped_column(String(23), nullable=True)
    #: work | recovery
    kind: Mapped[str] = mapped_column(String(10))
    #: sent | acked | lost | reconciled
    state: Mapped[str] = mapped_column(String(12))
    request_count: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    #: For a recovery exchange: JSON {probe requestID: job_request id} of the probe queries in it.
    probes: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    acked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Ticket(Base):
    """One Web Connector session (authenticate ... closeConnection) and its running totals."""

    __tablename__ = "tickets"
    __table_args__ = (Index("ix_tickets_company_state", "company_id", "state"),)

    #: SHA-256 (hex) of the ticket handed to the Web Connector; the ticket itself is never stored.
    ticket: Mapped[str] = mapped_column(String(64), primary_key=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), nullable=True)
    #: open | closed | superseded | idle (authenticate answered "none") | busy (answered "busy")
    state: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    client_version: Mapped[str | None] = mapped_column(String(40), nullable=True)
    hcp_response: Mapped[str | None] = mapped_column(Text, nullable=True)
    qbxml_version: Mapped[str | None] = mapped_column(String(8), nullable=True)
    country: Mapped[str | None] = mapped_column(String(4), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The exchange sent in this session and not yet answered, if any.
    pending_exchange_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Requests outstanding when the session started: the denominator of percent-done.
    baseline: Mapped[int] = mapped_column(Integer, default=0)
    exchanges: Mapped[int] = mapped_column(Integer, default=0)
    requests_ok: Mapped[int] = mapped_column(Integer, default=0)
    requests_failed: Mapped[int] = mapped_column(Integer, default=0)
    reconciled: Mapped[int] = mapped_column(Integer, default=0)


class LoginThrottle(Base):
    """Failed Web Connector logins per user and per client address, shared by every replica."""

    __tablename__ = "login_throttle"

    #: "user:<name>" or "addr:<ip>".
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    #: No login for this key is checked before this time (epoch seconds).
    blocked_until: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
