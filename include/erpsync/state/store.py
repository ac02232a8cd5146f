"""The state store API: run history, identities and hashes, cursors, quarantine, pruning.

One `StateStore` per database URL. SQLite is the embedded default (`ERPSYNC_STATE_URL`, else a file
under `$AIRFLOW_HOME`), PostgreSQL the production choice; the same code and migrations serve both.
Every write is an upsert keyed the way a retry would repeat it, so a retried task never doubles a
row: identities by (flow, source key), runs by (flow, run id), open quarantine entries by
(flow, source key, stage, rule, column), and a quarantine entry's attempts grow once per run.

Import this module inside tasks only: it loads SQLAlchemy.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.orm import Session

from erpsync.errors import ConfigError
from erpsync.state.models import Cursor, QuarantineEntry, RecordIdentity, Run, Unmapped

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "Identity",
    "PruneResult",
    "QuarantineRecord",
    "StateStore",
    "default_state_url",
    "upgrade",
]

DEFAULT_RETENTION_DAYS = 30.0
_IN_CHUNK = 500  # keys per IN (...) clause: well under SQLite's and PostgreSQL's parameter limits
RUN_COUNTS = ("created", "updated", "skipped", "failed", "quarantined")

_engines: dict[str, Engine] = {}
_migrated: set[str] = set()
_lock = threading.Lock()


def default_state_url() -> str:
    """Return `ERPSYNC_STATE_URL`, or a SQLite file in `$AIRFLOW_HOME` (read at run time)."""
    configured = os.environ.get("ERPSYNC_STATE_URL")
    if configured:
        return configured
    home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'erpsync_state.db'}"


def retention_days() -> float:
    """Return how long quarantine payloads are kept (`ERPSYNC_QUARANTINE_RETENTION_DAYS`, default 30)."""
    raw = os.environ.get("ERPSYNC_QUARANTINE_RETENTION_DAYS")
    if raw is None:
        return DEFAULT_RETENTION_DAYS
    try:
        days = float(raw)
    except ValueError:
        raise ConfigError(
            f"ERPSYNC_QUARANTINE_RETENTION_DAYS must be a number of days, got {raw!r}"
        ) from None
    if days < 0:
        raise ConfigError(f"ERPSYNC_QUARANTINE_RETENTION_DAYS must not be negative, got {raw!r}")
    return days


def _engine(url: str) -> Engine:
    with _lock:
        if url not in _engines:
            if url.startswith("sqlite"):
                # Several task processes share the file: wait for a writer instead of failing at once.
                engine = create_engine(url, connect_args={"timeout": 30})

                @event.listens_for(engine, "connect")
                def _pragmas(dbapi_conn, _record):
                    cur = dbapi_conn.cursor()
                    cur.execute("PRAGMA foreign_keys=ON")
                    cur.close()

            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        return _engines[url]


_PG_MIGRATION_LOCK = 0x65727073  # "erps": one advisory lock id for every process migrating the store


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` by running the Alembic migrations.

    Safe when several workers start at once: PostgreSQL serialises them on an advisory lock held
    for the migration's transaction, SQLite on a lock file beside the database; the later ones
    find the schema current and do nothing.
    """
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    engine = _engine(url)
    with _migration_file_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@contextmanager
def _migration_file_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Identity:
    """What the store knows about one source record: its target id and the hash last written."""

    source_key: str
    target_id: str | None
    content_hash: str


@dataclass(frozen=True)
class QuarantineRecord:
    """One refused row at one stage: the rule, the column and value that failed, and the row itself."""

    source_key: str
    stage: str
    rule: str
    column: str = ""
    value: Any = None
    message: str | None = None
    payload: dict[str, Any] | None = None


@dataclass(frozen=True)
class PruneResult:
    runs_deleted: int
    payloads_cleared: int
    resolved_deleted: int


@dataclass(frozen=True)
class FlowUnmapping:
    """One flow's un-mapped pairs, bound to a run (what `erpsync.plan.Planner` takes as `unmapping`)."""

    store: StateStore
    flow: str
    run_id: str | None = None

    def unmapped(self, keys: Iterable[Any]) -> dict[str, dict[str, Any]]:
        return self.store.unmapped(self.flow, keys)

    def unmap(self, pairs: Mapping[str, Any]) -> int:
        return self.store.record_unmapped(self.flow, pairs, run_id=self.run_id)

    def remap(self, keys: Iterable[Any]) -> int:
        return self.store.remap(self.flow, keys)


@dataclass
class StateStore:
    """Access to one state database; cheap to build, connects on first use.

    :param url: SQLAlchemy URL; defaults to `default_state_url()`.
    :param migrate: run the migrations to head on first use in this process (once per URL).
    :param retention_days: days a quarantined row's value and payload are kept.
    """

    url: str = field(default_factory=default_state_url)
    migrate: bool = True
    retention_days: float = field(default_factory=retention_days)

    def __post_init__(self) -> None:
        if not self.url:
            raise ConfigError("the state store URL is empty; set ERPSYNC_STATE_URL or pass a URL")

    def __repr__(self) -> str:  # never print a password
        from sqlalchemy.engine import make_url

        return f"StateStore({make_url(self.url).render_as_string(hide_password=True)!r})"

    @property
    def engine(self) -> Engine:
        engine = _engine(self.url)
        if self.migrate and self.url not in _migrated:
            upgrade(self.url)
            _migrated.add(self.url)
        return engine

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ---- runs -------------------------------------------------------------------------------

    def start_run(
        self,
        *,
        flow: str,
        run_id: str,
        interval_start: datetime | None = None,
        interval_end: datetime | None = None,
        started_at: datetime | None = None,
    ) -> None:
        """Open (or reopen, on a retry or a cleared run) the history row of one run."""
        now = started_at or datetime.now(UTC)
        with self.session() as s, s.begin():
            run = s.scalar(select(Run).where(Run.flow == flow, Run.run_id == run_id))
            if run is None:
                s.add(
                    Run(
                        flow=flow,
                        run_id=run_id,
                        interval_start=interval_start,
                        interval_end=interval_end,
                        status="running",
                        started_at=now,
                        **dict.fromkeys(RUN_COUNTS, 0),
                    )
                )
            else:
                run.status, run.finished_at = "running", None
                run.interval_start, run.interval_end = interval_start, interval_end

    def finish_run(
        self,
        *,
        flow: str,
        run_id: str,
        status: str,
        counts: Mapping[str, int],
        report: dict[str, Any] | None = None,
        finished_at: datetime | None = None,
    ) -> None:
        """Close the run's history row with its counts, status, duration and report summary."""
        now = finished_at or datetime.now(UTC)
        with self.session() as s, s.begin():
            run = s.scalar(select(Run).where(Run.flow == flow, Run.run_id == run_id))
            if run is None:  # the run row is missing (store reset mid-run): record what we know
                run = Run(flow=flow, run_id=run_id, started_at=now, **dict.fromkeys(RUN_COUNTS, 0))
                s.add(run)
            run.status, run.finished_at, run.report = status, now, report
            run.duration_seconds = round((now - run.started_at).total_seconds(), 3)
            for name in RUN_COUNTS:
                setattr(run, name, int(counts.get(name, 0)))

    def get_run(self, flow: str, run_id: str) -> dict[str, Any] | None:
        with self.session() as s:
            run = s.scalar(select(Run).where(Run.flow == flow, Run.run_id == run_id))
            return _row_dict(run) if run else None

    def list_runs(self, flow: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        with self.session() as s:
            q = select(Run).order_by(Run.started_at.desc()).limit(limit)
            if flow:
                q = q.where(Run.flow == flow)
            return [_row_dict(r) for r in s.scalars(q)]

    # ---- identities ------------------------------------------------------------------------

    def get_identities(self, flow: str, keys: Iterable[Any]) -> dict[str, Identity]:
        """Return the known identities of `keys` (missing keys are absent from the result)."""
        t = RecordIdentity.__table__
        out: dict[str, Identity] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks([str(k) for k in keys]):
                q = select(t.c.source_key, t.c.target_id, t.c.content_hash).where(
                    t.c.flow == flow, t.c.source_key.in_(chunk)
                )
                for key, target_id, content_hash in conn.execute(q):
                    out[key] = Identity(key, target_id, content_hash)
        return out

    def record_identities(
        self, flow: str, rows: Iterable[Identity], *, run_id: str | None = None, now: datetime | None = None
    ) -> int:
        """Upsert identities and hashes of rows just written; return how many were recorded.

        One INSERT ... ON CONFLICT per chunk on SQLite and PostgreSQL (about ten times faster than
        loading rows into the session); a known target id is kept when the new one is empty.
        """
        now = now or datetime.now(UTC)
        rows = {str(r.source_key): r for r in rows}
        if not rows:
            return 0
        engine = self.engine
        dialect = engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - other databases take the portable path
            return self._record_identities_orm(flow, rows, run_id=run_id, now=now)
        t = RecordIdentity.__table__
        stmt = insert(t)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.flow, t.c.source_key],
            set_={
                "target_id": func.coalesce(stmt.excluded.target_id, t.c.target_id),
                "content_hash": stmt.excluded.content_hash,
                "last_written_at": stmt.excluded.last_written_at,
                "last_run_id": stmt.excluded.last_run_id,
            },
        )
        with engine.begin() as conn:
            for chunk in _chunks(list(rows), 1000):
                conn.execute(
                    stmt,
                    [
                        {
                            "flow": flow,
                            "source_key": key,
                            "target_id": _str_or_none(rows[key].target_id),
                            "content_hash": rows[key].content_hash,
                            "first_written_at": now,
                            "last_written_at": now,
                            "last_run_id": run_id,
                        }
                        for key in chunk
                    ],
                )
        return len(rows)

    def _record_identities_orm(self, flow: str, rows: dict[str, Identity], *, run_id, now) -> int:
        with self.session() as s, s.begin():
            for chunk in _chunks(list(rows)):
                existing = {
                    r.source_key: r
                    for r in s.scalars(
                        select(RecordIdentity).where(
                            RecordIdentity.flow == flow, RecordIdentity.source_key.in_(chunk)
                        )
                    )
                }
                for key in chunk:
                    new, old = rows[key], existing.get(key)
                    if old is None:
                        s.add(
                            RecordIdentity(
                                flow=flow,
                                source_key=key,
                                target_id=_str_or_none(new.target_id),
                                content_hash=new.content_hash,
                                first_written_at=now,
                                last_written_at=now,
                                last_run_id=run_id,
                            )
                        )
                    else:
                        old.target_id = _str_or_none(new.target_id) or old.target_id
                        old.content_hash, old.last_written_at, old.last_run_id = new.content_hash, now, run_id
        return len(rows)

    def forget_identities(self, flow: str, keys: Iterable[Any]) -> int:
        """Drop identities (e.g. after a record was un-linked in the target); return how many."""
        n = 0
        with self.session() as s, s.begin():
            for chunk in _chunks([str(k) for k in keys]):
                res = s.execute(
                    delete(RecordIdentity).where(
                        RecordIdentity.flow == flow, RecordIdentity.source_key.in_(chunk)
                    )
                )
                n += res.rowcount or 0
        return n

    # ---- un-mapped pairs ------------------------------------------------------------------

    def unmapped(self, flow: str, keys: Iterable[Any] | None = None) -> dict[str, dict[str, Any]]:
        """Return source key -> {target_id, unmapped_at, run_id} of the un-mapped pairs (all, or of `keys`)."""
        t = Unmapped.__table__
        out: dict[str, dict[str, Any]] = {}
        q = select(t.c.source_key, t.c.target_id, t.c.unmapped_at, t.c.run_id).where(t.c.flow == flow)
        with self.session() as s:
            chunks = [None] if keys is None else list(_chunks([str(k) for k in keys]))
            for chunk in chunks:
                stmt = q if chunk is None else q.where(t.c.source_key.in_(chunk))
                for row in s.execute(stmt):
                    out[row.source_key] = {
                        "target_id": row.target_id,
                        "unmapped_at": row.unmapped_at,
                        "run_id": row.run_id,
                    }
        return out

    def record_unmapped(
        self, flow: str, pairs: Mapping[str, Any], *, run_id: str | None = None, now: datetime | None = None
    ) -> int:
        """Remember source key -> target id pairs a user un-linked in the target; return how many are new.

        The stored identity of each key is dropped too: the pair is no longer a link, and a later
        re-mapping starts from the target's identity or the match rules, not from a stale target id.
        """
        now = now or datetime.now(UTC)
        added = 0
        with self.session() as s, s.begin():
            for key, target_id in pairs.items():
                if s.get(Unmapped, (flow, str(key))) is None:
                    s.add(
                        Unmapped(
                            flow=flow,
                            source_key=str(key),
                            target_id=_str_or_none(target_id),
                            unmapped_at=now,
                            run_id=run_id,
                        )
                    )
                    added += 1
            for chunk in _chunks([str(k) for k in pairs]):
                s.execute(
                    delete(RecordIdentity).where(
                        RecordIdentity.flow == flow, RecordIdentity.source_key.in_(chunk)
                    )
                )
        return added

    def unmapping(self, flow: str, *, run_id: str | None = None) -> FlowUnmapping:
        """Return the un-mapped pairs of one flow as the planner uses them."""
        return FlowUnmapping(self, flow, run_id)

    def remap(self, flow: str, keys: Iterable[Any]) -> int:
        """Let un-mapped source keys be linked (by identity or match rules) or created again; return how many."""
        n = 0
        with self.session() as s, s.begin():
            for chunk in _chunks([str(k) for k in keys]):
                res = s.execute(delete(Unmapped).where(Unmapped.flow == flow, Unmapped.source_key.in_(chunk)))
                n += res.rowcount or 0
        return n

    # ---- cursors ---------------------------------------------------------------------------

    def get_cursor(self, flow: str, source: str) -> str | None:
        with self.session() as s:
            c = s.get(Cursor, (flow, source))
            return c.value if c else None

    def set_cursor(self, flow: str, source: str, value: str, *, run_id: str | None = None) -> None:
        """Move the cursor forward to `value`; never backwards (a late retry of an old run is harmless)."""
        with self.session() as s, s.begin():
            c = s.get(Cursor, (flow, source))
            now = datetime.now(UTC)
            if c is None:
                s.add(Cursor(flow=flow, source=source, value=value, updated_at=now, run_id=run_id))
            elif _cursor_order(value) > _cursor_order(c.value):
                c.value, c.updated_at, c.run_id = value, now, run_id

    # ---- quarantine ------------------------------------------------------------------------

    def quarantine(
        self,
        flow: str,
        records: Iterable[QuarantineRecord],
        *,
        run_id: str,
        now: datetime | None = None,
    ) -> int:
        """Open (or refresh) quarantine entries; return how many records were given.

        A record already open for the same stage, rule and column is refreshed: last seen, value,
        payload and expiry move on, and attempts grow by one per run (not per task try).
        """
        now = now or datetime.now(UTC)
        expires = now + timedelta(days=self.retention_days)
        records = list(records)
        by_key: dict[str, list[QuarantineRecord]] = {}
        for r in records:
            by_key.setdefault(str(r.source_key), []).append(r)
        with self.session() as s, s.begin():
            for chunk in _chunks(list(by_key)):
                open_entries = {
                    (e.source_key, e.stage, e.rule, e.column): e
                    for e in s.scalars(
                        select(QuarantineEntry).where(
                            QuarantineEntry.flow == flow,
                            QuarantineEntry.resolved_at.is_(None),
                            QuarantineEntry.source_key.in_(chunk),
                        )
                    )
                }
                for key in chunk:
                    for r in by_key[key]:
                        ident = (key, r.stage, r.rule, r.column or "")
                        value = None if r.value is None else _short(str(r.value), 2000)
                        e = open_entries.get(ident)
                        if e is None:
                            e = QuarantineEntry(
                                flow=flow,
                                source_key=key,
                                stage=r.stage,
                                rule=r.rule,
                                column=r.column or "",
                                first_seen=now,
                                attempts=1,
                                first_run_id=run_id,
                                last_run_id=run_id,
                            )
                            s.add(e)
                            open_entries[ident] = e
                        elif e.last_run_id != run_id:
                            e.attempts += 1
                            e.last_run_id = run_id
                        e.last_seen, e.value, e.message = now, value, r.message
                        e.payload, e.payload_expires_at = r.payload, expires
        return len(records)

    def open_quarantine_keys(self, flow: str, stage: str | None = None) -> list[str]:
        """Return the source keys with at least one open entry (retried by the next extract)."""
        with self.session() as s:
            q = select(QuarantineEntry.source_key).where(
                QuarantineEntry.flow == flow, QuarantineEntry.resolved_at.is_(None)
            )
            if stage:
                q = q.where(QuarantineEntry.stage == stage)
            return sorted(set(s.scalars(q)))

    def quarantine_entries(self, flow: str, *, open_only: bool = True) -> list[dict[str, Any]]:
        with self.session() as s:
            q = select(QuarantineEntry).where(QuarantineEntry.flow == flow).order_by(QuarantineEntry.id)
            if open_only:
                q = q.where(QuarantineEntry.resolved_at.is_(None))
            return [_row_dict(e) for e in s.scalars(q)]

    def resolve_quarantine(
        self, flow: str, *, stage: str, keys: Iterable[Any], run_id: str, now: datetime | None = None
    ) -> int:
        """Close the open entries of `stage` for keys that passed that stage in this run."""
        now = now or datetime.now(UTC)
        n = 0
        with self.session() as s, s.begin():
            for chunk in _chunks(sorted({str(k) for k in keys})):
                res = s.execute(
                    update(QuarantineEntry)
                    .where(
                        QuarantineEntry.flow == flow,
                        QuarantineEntry.stage == stage,
                        QuarantineEntry.resolved_at.is_(None),
                        QuarantineEntry.source_key.in_(chunk),
                    )
                    .values(resolved_at=now, resolved_run_id=run_id)
                )
                n += res.rowcount or 0
        return n

    def quarantine_by_rule(self, flow: str, *, run_id: str | None = None) -> list[dict[str, Any]]:
        """Count open entries by stage, rule and column (only those seen in `run_id`, if given)."""
        with self.session() as s:
            q = (
                select(
                    QuarantineEntry.stage,
                    QuarantineEntry.rule,
                    QuarantineEntry.column,
                    func.count(QuarantineEntry.id),
                )
                .where(QuarantineEntry.flow == flow, QuarantineEntry.resolved_at.is_(None))
                .group_by(QuarantineEntry.stage, QuarantineEntry.rule, QuarantineEntry.column)
                .order_by(func.count(QuarantineEntry.id).desc(), QuarantineEntry.rule)
            )
            if run_id:
                q = q.where(QuarantineEntry.last_run_id == run_id)
            return [{"stage": st, "rule": ru, "column": co, "rows": int(n)} for st, ru, co, n in s.execute(q)]

    def resolved_count(self, flow: str, run_id: str) -> int:
        with self.session() as s:
            q = select(func.count(func.distinct(QuarantineEntry.source_key))).where(
                QuarantineEntry.flow == flow, QuarantineEntry.resolved_run_id == run_id
            )
            return int(s.scalar(q) or 0)

    # ---- pruning ---------------------------------------------------------------------------

    def prune(self, *, older_than_days: float, now: datetime | None = None) -> PruneResult:
        """Delete runs and resolved entries older than the cutoff; clear expired payloads and values."""
        if older_than_days < 0:
            raise ConfigError(f"--older-than must not be negative, got {older_than_days}")
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(days=older_than_days)
        with self.session() as s, s.begin():
            runs = s.execute(delete(Run).where(Run.started_at < cutoff)).rowcount or 0
            cleared = (
                s.execute(
                    update(QuarantineEntry)
                    .where(QuarantineEntry.payload_expires_at < now)
                    .values(payload=None, value=None, payload_expires_at=None)
                ).rowcount
                or 0
            )
            resolved = (
                s.execute(
                    delete(QuarantineEntry).where(
                        QuarantineEntry.resolved_at.is_not(None), QuarantineEntry.resolved_at < cutoff
                    )
                ).rowcount
                or 0
            )
        return PruneResult(runs_deleted=runs, payloads_cleared=cleared, resolved_deleted=resolved)


def _cursor_order(value: str) -> tuple:
    """Order cursor values as instants when they are ISO timestamps, else as text (sync tokens)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return (1, value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (0, moment.timestamp(), value)


def _chunks(items: list[str], size: int = _IN_CHUNK) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _row_dict(obj: Any) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}


def _str_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
