"""The record activity log: what each run read from the source and sent to the target, per record.

Kept `ERPSYNC_ACTIVITY_RETENTION_DAYS` days (default 30; 0 turns the log off). Every write deletes
the flow's older rows and every read leaves them out, so nothing older is ever shown or kept longer
than until the flow's next run (or `erpsync prune`). Values are the mapping's fields only, each cut
to 500 characters.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select

from erpsync.errors import ConfigError
from erpsync.state.models import RecordActivity

__all__ = ["Activity", "activity_retention_days", "log_activity", "prune_activity", "read_activity"]

DEFAULT_ACTIVITY_DAYS = 30.0
_VALUE_LIMIT = 500


def activity_retention_days() -> float:
    """Days the activity log keeps a row (`ERPSYNC_ACTIVITY_RETENTION_DAYS`, default 30, 0 = off)."""
    raw = os.environ.get("ERPSYNC_ACTIVITY_RETENTION_DAYS")
    if raw is None or raw.strip() == "":
        return DEFAULT_ACTIVITY_DAYS
    try:
        days = float(raw)
    except ValueError:
        raise ConfigError(f"ERPSYNC_ACTIVITY_RETENTION_DAYS must be a number of days, got {raw!r}") from None
    if days < 0:
        raise ConfigError(f"ERPSYNC_ACTIVITY_RETENTION_DAYS must not be negative, got {raw!r}")
    return days


@dataclass(frozen=True)
class Activity:
    """One record's outcome in one run."""

    source_key: str
    action: str
    target_id: str | None = None
    source_fields: Mapping[str, Any] | None = None
    sent_fields: Mapping[str, Any] | None = None
    error: str | None = None


def _clean(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not values:
        return None
    out = {}
    for k, v in values.items():
        if v is None or isinstance(v, bool | int | float):
            out[str(k)] = None if isinstance(v, float) and v != v else v  # NaN -> null
        else:
            text = str(v)
            out[str(k)] = text if len(text) <= _VALUE_LIMIT else text[: _VALUE_LIMIT - 1] + "…"
    return out


def log_activity(
    store, flow: str, rows: Iterable[Activity], *, run_id: str, now: datetime | None = None
) -> int:
    """Append one row per record (a retried task replaces its own rows) and prune the flow's old ones."""
    days = activity_retention_days()
    rows = list(rows)
    t = RecordActivity.__table__
    if days == 0:  # the log is off: keep nothing, not even what an earlier setting kept
        with store.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.flow == flow))
        return 0
    now = now or datetime.now(UTC)
    with store.engine.begin() as conn:
        conn.execute(delete(t).where(t.c.flow == flow, t.c.at < now - timedelta(days=days)))
        keys = [str(r.source_key) for r in rows]
        for i in range(0, len(keys), 500):  # a retried try writes the same keys again: keep one row
            conn.execute(
                delete(t).where(t.c.flow == flow, t.c.run_id == run_id, t.c.source_key.in_(keys[i : i + 500]))
            )
        if rows:
            conn.execute(
                insert(t),
                [
                    {
                        "flow": flow,
                        "source_key": str(r.source_key),
                        "run_id": run_id,
                        "at": now,
                        "action": r.action,
                        "target_id": None if r.target_id in (None, "") else str(r.target_id),
                        "source_fields": _clean(r.source_fields),
                        "sent_fields": _clean(r.sent_fields),
                        "error": r.error,
                    }
                    for r in rows
                ],
            )
    return len(rows)


def read_activity(
    store, flow: str, *, source_key: str | None = None, limit: int = 200, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The flow's newest activity rows within the retention period (never older ones)."""
    days = activity_retention_days()
    if days == 0:
        return []
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=days)
    t = RecordActivity.__table__
    q = (
        select(t)
        .where(t.c.flow == flow, t.c.at >= cutoff)
        .order_by(t.c.at.desc(), t.c.id.desc())
        .limit(limit)
    )
    if source_key is not None:
        q = q.where(t.c.source_key == str(source_key))
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    for r in rows:  # SQLite hands back naive datetimes from Core selects
        if r["at"] is not None and r["at"].tzinfo is None:
            r["at"] = r["at"].replace(tzinfo=UTC)
    return rows


def prune_activity(store, *, now: datetime | None = None) -> int:
    """Delete every flow's rows older than the retention period; return how many."""
    now = now or datetime.now(UTC)
    t = RecordActivity.__table__
    with store.engine.begin() as conn:
        res = conn.execute(delete(t).where(t.c.at < now - timedelta(days=activity_retention_days())))
    return res.rowcount or 0
