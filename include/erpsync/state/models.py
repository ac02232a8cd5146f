"""Tables of the state store: run history, record identities, cursors and quarantine.

Only ids, content hashes, counts and timestamps live here, so the store holds as little personal
data as possible. The one exception is a quarantined row's value and payload, which a user needs to
see why a row was refused; both expire (`payload_expires_at`) and `erpsync prune` clears them.

The schema is created and changed only by the Alembic migrations in `erpsync.state.migrations`;
these classes must match them (tests/integration/test_state_store.py compares the two).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, Text, TypeDecorator, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "Cursor",
    "QuarantineEntry",
    "RecordActivity",
    "RecordIdentity",
    "Run",
    "UTCDateTime",
    "Unmapped",
]


class UTCDateTime(TypeDecorator):
    """Store aware datetimes as UTC and always hand back aware UTC values.

    SQLite has no time zone type and returns naive values; without this, comparing a stored
    timestamp with `datetime.now(UTC)` raises on SQLite and works on PostgreSQL.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the state store; pass an aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Run(Base):
    """One DAG run of one flow: its interval, counts, duration, status and a small report summary."""

    __tablename__ = "erpsync_runs"
    __table_args__ = (
        UniqueConstraint("flow", "run_id", name="uq_erpsync_runs_flow_run"),
        Index("ix_erpsync_runs_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    flow: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[str] = mapped_column(String(250))
    interval_start: Mapped[datetime | None]
    interval_end: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(20), default="running")
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    quarantined: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any] | None]


class RecordIdentity(Base):
    """Which target record a source record was written to, and the hash of what was written."""

    __tablename__ = "erpsync_record_identities"

    flow: Mapped[str] = mapped_column(String(200), primary_key=True)
    source_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    target_id: Mapped[str | None] = mapped_column(String(255))
    content_hash: Mapped[str] = mapped_column(String(64))
    first_written_at: Mapped[datetime]
    last_written_at: Mapped[datetime]
    last_run_id: Mapped[str | None] = mapped_column(String(250))


class Unmapped(Base):
    """A source record a user un-linked from its target record (by clearing the identity there).

    While the row exists the flow neither re-links the source key by its match rules nor creates it
    again; it goes when the user maps the pair again (the identity typed back, or `erpsync remap`).
    """

    __tablename__ = "erpsync_unmapped"

    flow: Mapped[str] = mapped_column(String(200), primary_key=True)
    source_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    target_id: Mapped[str | None] = mapped_column(String(255))
    unmapped_at: Mapped[datetime]
    run_id: Mapped[str | None] = mapped_column(String(250))


class Cursor(Base):
    """The high-water mark of a flow's source object (a modification timestamp, as text)."""

    __tablename__ = "erpsync_cursors"

    flow: Mapped[str] = mapped_column(String(200), primary_key=True)
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime]
    run_id: Mapped[str | None] = mapped_column(String(250))


class QuarantineEntry(Base):
    """A row refused at one stage by one rule; open until a later run lets it through (resolved)."""

    __tablename__ = "erpsync_quarantine"
    __table_args__ = (
        Index("ix_erpsync_quarantine_open", "flow", "resolved_at", "source_key"),
        Index("ix_erpsync_quarantine_expiry", "payload_expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    flow: Mapped[str] = mapped_column(String(200))
    source_key: Mapped[str] = mapped_column(String(255))
    stage: Mapped[str] = mapped_column(String(50))
    rule: Mapped[str] = mapped_column(String(200))
    column: Mapped[str] = mapped_column(String(200), default="")
    value: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None]
    payload_expires_at: Mapped[datetime | None]
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    first_run_id: Mapped[str | None] = mapped_column(String(250))
    last_run_id: Mapped[str | None] = mapped_column(String(250))
    resolved_at: Mapped[datetime | None]
    resolved_run_id: Mapped[str | None] = mapped_column(String(250))


class RecordActivity(Base):
    """One record written (or refused) by one run: the source fields read and the fields sent.

    Only the fields the mapping names, never whole payloads, and only for
    `ERPSYNC_ACTIVITY_RETENTION_DAYS` (see `erpsync.state.activity`): older rows are deleted.
    """

    __tablename__ = "erpsync_record_activity"
    __table_args__ = (
        Index("ix_erpsync_record_activity_flow_at", "flow", "at"),
        Index("ix_erpsync_record_activity_key", "flow", "source_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    flow: Mapped[str] = mapped_column(String(200))
    source_key: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str] = mapped_column(String(250))
    at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(20))
    target_id: Mapped[str | None] = mapped_column(String(255))
    source_fields: Mapped[dict[str, Any] | None]
    sent_fields: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
