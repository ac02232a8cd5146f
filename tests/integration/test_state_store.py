"""The state store on SQLite and on a real PostgreSQL, built by the Alembic migrations."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from erpsync.errors import ConfigError
from erpsync.state import Identity, QuarantineRecord, StateStore, upgrade


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> StateStore:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    return StateStore(url, retention_days=7)


@pytest.fixture
def flow() -> str:
    # PostgreSQL's throwaway database lives for the whole session: each test gets its own flow.
    return f"flow_{uuid.uuid4().hex[:8]}"


def test_migrations_build_exactly_the_models(store):
    """The migrated schema matches the SQLAlchemy models (no drift between the two)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    from erpsync.state.models import Base

    engine = store.engine  # runs the migrations
    tables = set(inspect(engine).get_table_names())
    assert {"erpsync_runs", "erpsync_record_identities", "erpsync_cursors", "erpsync_quarantine"} <= tables
    assert "erpsync_alembic_version" in tables
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": "erpsync_alembic_version"}
        )
        diffs = [d for d in compare_metadata(ctx, Base.metadata) if "alembic_version" not in str(d)]
    # The session's PostgreSQL database is shared: other components' tables (the Exact token store,
    # the bridge) are not the state store's business, only drift in our own tables is.
    foreign = {d[1].name for d in diffs if d[0] == "remove_table" and d[1].name not in Base.metadata.tables}
    ours = [
        d for d in diffs if "erpsync_" in str(d) and not (d[0] == "remove_table" and d[1].name in foreign)
    ]
    assert ours == [], ours


def test_upgrade_twice_is_harmless(store, flow):
    upgrade(store.url)
    upgrade(store.url)
    store.start_run(flow=flow, run_id="r")
    assert store.get_run(flow, "r")["status"] == "running"


def test_run_history_round_trip(store, flow):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    store.start_run(flow=flow, run_id="r1", interval_start=start, interval_end=start + timedelta(hours=1))
    store.start_run(flow=flow, run_id="r1", interval_start=start, interval_end=start + timedelta(hours=1))
    store.finish_run(
        flow=flow,
        run_id="r1",
        status="success",
        counts={"created": 3, "updated": 1, "skipped": 5, "failed": 0, "quarantined": 2},
        report={"api_calls": 4},
    )
    runs = store.list_runs(flow)
    assert len(runs) == 1, "a retried start must not add a second run row"
    run = runs[0]
    assert (run["created"], run["updated"], run["skipped"], run["quarantined"]) == (3, 1, 5, 2)
    assert run["status"] == "success" and run["report"] == {"api_calls": 4}
    assert run["interval_start"] == start and run["duration_seconds"] >= 0


def test_identities_upsert_and_lookup_in_chunks(store, flow):
    rows = [Identity(f"k{i}", f"T{i}", f"h{i}") for i in range(1200)]  # more than one IN chunk
    assert store.record_identities(flow, rows, run_id="r1") == 1200
    store.record_identities(flow, [Identity("k5", None, "new")], run_id="r2")
    got = store.get_identities(flow, [f"k{i}" for i in range(1300)])
    assert len(got) == 1200
    assert got["k5"] == Identity("k5", "T5", "new"), "a missing target id keeps the known one"
    assert got["k1199"].target_id == "T1199"
    assert store.get_identities("other_flow", ["k1"]) == {}
    assert store.forget_identities(flow, ["k1", "k2"]) == 2
    assert "k1" not in store.get_identities(flow, ["k1"])


def test_cursor_only_moves_forward(store, flow):
    assert store.get_cursor(flow, "Account") is None
    store.set_cursor(flow, "Account", "2026-01-02T00:00:00+00:00", run_id="r2")
    store.set_cursor(flow, "Account", "2026-01-01T00:00:00+00:00", run_id="r1")
    assert store.get_cursor(flow, "Account") == "2026-01-02T00:00:00+00:00"
    # Instants compare as instants, whatever their precision or offset.
    store.set_cursor(flow, "Account", "2026-01-02T01:59:59.5+02:00", run_id="r3")  # 23:59:59.5 the day before
    assert store.get_cursor(flow, "Account") == "2026-01-02T00:00:00+00:00"
    store.set_cursor(flow, "Account", "2026-01-02T00:00:00.000001+00:00", run_id="r4")
    assert store.get_cursor(flow, "Account") == "2026-01-02T00:00:00.000001+00:00"


def test_quarantine_lifecycle(store, flow):
    bad = QuarantineRecord(
        "001", "check_source", "not_null", "Email", None, "Email is empty", payload={"Id": "001", "Name": "A"}
    )
    other = QuarantineRecord("002", "map", "truncate_or_reject", "Name", "x" * 50, "Name too long")
    store.quarantine(flow, [bad, other], run_id="r1")
    store.quarantine(flow, [bad], run_id="r1")  # a task retry in the same run
    store.quarantine(flow, [bad], run_id="r2")  # the next run still finds it bad
    entries = {e["source_key"]: e for e in store.quarantine_entries(flow)}
    assert entries["001"]["attempts"] == 2, "attempts count runs, not task tries"
    assert entries["001"]["payload"] == {"Id": "001", "Name": "A"}
    assert store.open_quarantine_keys(flow) == ["001", "002"]
    assert store.quarantine_by_rule(flow, run_id="r2") == [
        {"stage": "check_source", "rule": "not_null", "column": "Email", "rows": 1}
    ]
    # 001 passes check_source in r3: only that stage's entry closes.
    assert store.resolve_quarantine(flow, stage="check_source", keys=["001", "002"], run_id="r3") == 1
    assert store.open_quarantine_keys(flow) == ["002"]
    assert store.resolved_count(flow, "r3") == 1
    assert len(store.quarantine_entries(flow, open_only=False)) == 2


def test_prune_removes_old_runs_and_expired_payloads(store, flow):
    long_ago = datetime.now(UTC) - timedelta(days=40)
    store.start_run(flow=flow, run_id="old", started_at=long_ago)
    store.start_run(flow=flow, run_id="new")
    store.quarantine(
        flow,
        [QuarantineRecord("k1", "check_source", "regex", "Email", "a@b", payload={"Email": "a@b"})],
        run_id="old",
        now=long_ago,
    )
    store.quarantine(flow, [QuarantineRecord("k2", "check_source", "regex", "Email", "c@d")], run_id="new")
    store.quarantine(flow, [QuarantineRecord("k3", "map", "reject", "Name", "n")], run_id="old", now=long_ago)
    store.resolve_quarantine(flow, stage="map", keys=["k3"], run_id="old", now=long_ago)

    result = store.prune(older_than_days=30)
    assert result.runs_deleted >= 1 and result.payloads_cleared >= 1 and result.resolved_deleted >= 1
    assert [r["run_id"] for r in store.list_runs(flow)] == ["new"]
    entries = {e["source_key"]: e for e in store.quarantine_entries(flow, open_only=False)}
    assert set(entries) == {"k1", "k2"}
    assert entries["k1"]["payload"] is None and entries["k1"]["value"] is None, "expired personal data stays"
    assert entries["k1"]["rule"] == "regex", "the entry itself (ids, rule) is kept while open"
    assert entries["k2"]["value"] == "c@d"
    with pytest.raises(ConfigError, match="must not be negative"):
        store.prune(older_than_days=-1)


def test_naive_datetimes_are_refused(store, flow):
    with pytest.raises(Exception, match="naive datetime"):
        store.start_run(flow=flow, run_id="r", interval_start=datetime(2026, 1, 1))


def test_retention_setting_is_validated(monkeypatch):
    from erpsync.state.store import retention_days

    monkeypatch.setenv("ERPSYNC_QUARANTINE_RETENTION_DAYS", "soon")
    with pytest.raises(ConfigError, match="ERPSYNC_QUARANTINE_RETENTION_DAYS must be a number"):
        retention_days()
    monkeypatch.setenv("ERPSYNC_QUARANTINE_RETENTION_DAYS", "3.5")
    assert retention_days() == 3.5


def _open_and_write(url: str, n: int) -> int:
    store = StateStore(url)
    store.start_run(flow="concurrent", run_id=f"r{n}")
    return n


def test_many_processes_migrating_at_once_all_succeed(tmp_path):
    """Four workers open a brand-new SQLite store at the same moment: one migrates, all work."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert sorted(pool.starmap(_open_and_write, [(url, n) for n in range(4)])) == [0, 1, 2, 3]
    assert len(StateStore(url).list_runs("concurrent")) == 4


def test_migrating_postgresql_waits_for_the_advisory_lock(postgres_url):
    """While another session holds the store's migration lock, upgrade() waits; then it proceeds."""
    import threading

    from sqlalchemy import create_engine, text

    from erpsync.state.store import _PG_MIGRATION_LOCK

    engine = create_engine(postgres_url)
    done = threading.Event()
    with engine.begin() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        worker = threading.Thread(target=lambda: (upgrade(postgres_url), done.set()))
        worker.start()
        # Wait until PostgreSQL shows the upgrade queued on the advisory lock (a condition, not a pause).
        deadline = time.monotonic() + 120
        with engine.connect() as probe:
            while not probe.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = :k"
                ),
                {"k": _PG_MIGRATION_LOCK},
            ).scalar():
                assert time.monotonic() < deadline and not done.is_set(), "upgrade never waited for the lock"
                probe.rollback()
                threading.Event().wait(0.01)
        assert not done.is_set(), "upgrade ran while another process held the migration lock"
    worker.join(30)
    assert done.is_set(), "upgrade did not proceed once the lock was released"
    engine.dispose()
