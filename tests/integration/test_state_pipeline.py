"""The steps end to end without Airflow, on a real state store (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from erpsync.adapters.memory import MemoryAdapter
from erpsync.errors import RetriableSourceError
from erpsync.mapping import load_flow
from erpsync.operators import _steps as steps
from erpsync.state import StateStore
from tests.e2e.dags_for_tests.sync_fixture import FLOW, T0, make_world, seed_accounts


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request, tmp_path):
    # PostgreSQL's database lives for the session: a flow of its own keeps tests apart.
    paths = make_world(tmp_path, flow=f"{FLOW}_{uuid.uuid4().hex[:6]}")
    if request.param == "postgresql":
        paths["state"] = request.getfixturevalue("postgres_url")
    return paths


def _context(world, tmp_path, run_id, start, *, try_number=1, store=None) -> steps.StepContext:
    return steps.StepContext(
        flow=world["flow"],
        dag_id="pipeline",
        run_id=run_id,
        staging=tmp_path / "staging" / run_id,
        store=store or StateStore(world["state"]),
        interval_start=start,
        interval_end=start + timedelta(days=1),
        try_number=try_number,
    )


def _run(world, tmp_path, run_id, start, *, until="report", crash_after=None, store=None):
    """Run the pipeline for the interval [start, start + 1 day) and return the manifests."""
    mapping = load_flow(world["flow"], world["mappings"])
    ctx = _context(world, tmp_path, run_id, start, store=store)
    source, target = MemoryAdapter(world["source"]), MemoryAdapter(world["target"])
    out = {"extract": steps.extract_step(ctx, mapping, source)}
    out["check_source"] = steps.check_step(ctx, mapping, out["extract"], side="source")
    out["map"] = steps.map_step(ctx, mapping, out["check_source"])
    out["check_target"] = steps.check_step(ctx, mapping, out["map"], side="target")
    out["plan"] = steps.plan_step(ctx, mapping, out["check_target"], target)
    if until == "plan":
        return out
    if crash_after is not None:
        target.crash_after("Customer", crash_after)
    out["upsert"] = steps.upsert_step(ctx, mapping, out["plan"], target, batch_size=2)
    out["verify"] = steps.verify_step(ctx, mapping, out["upsert"], target)
    xcoms = {k: (v.to_xcom() if hasattr(v, "to_xcom") else v) for k, v in out.items()}
    out["report"] = steps.report_step(ctx, mapping, xcoms)
    return out


def test_first_run_creates_rerun_writes_nothing_one_change_one_update(world, tmp_path):
    seed_accounts(world["source"], 5)
    run = f"r{uuid.uuid4().hex[:6]}"
    first = _run(world, tmp_path, run + "-1", T0)
    assert first["plan"].extra["counts"]["create"] == 5
    assert first["upsert"].extra["counts"]["created"] == 5
    assert first["verify"]["checked"] == 5 and first["verify"]["differences"] == 0
    target = MemoryAdapter(world["target"])
    assert len(target.write_log("Customer")) == 5
    assert sorted(c["Email"] for c in target.all("Customer"))[0] == "owner0@example.test"

    # Same interval again (a rerun / backfill): nothing planned, nothing written.
    again = _run(world, tmp_path, run + "-2", T0)
    assert again["plan"].extra["counts"]["skip"] == 5
    assert sum(again["plan"].extra["counts"][a] for a in ("create", "update")) == 0
    assert len(target.write_log("Customer")) == 5
    assert not [c for c in target.call_log.calls if c["method"] == "upsert"]

    # One field of one account changes the next day: exactly one update, of that record.
    source = MemoryAdapter(world["source"])
    source.change(
        "Account", "00100002", {"BillingCity": "Amsterdam"}, modified=T0 + timedelta(days=1, hours=1)
    )
    third = _run(world, tmp_path, run + "-3", T0 + timedelta(days=1))
    assert third["extract"].rows == 1
    assert third["plan"].extra["counts"] == {
        "create": 0,
        "update": 1,
        "skip": 0,
        "conflict": 0,
        "unplaceable": 0,
    }
    log = target.write_log("Customer")
    assert len(log) == 6 and log[-1]["action"] == "updated"
    updated = target.get("Customer", log[-1]["id"])
    assert updated["City"] == "Amsterdam" and updated["Notes"] == "created by test 2"
    assert third["report"]["counts"]["updated"] == 1
    runs = StateStore(world["state"]).list_runs(world["flow"])
    assert {r["run_id"]: r["status"] for r in runs if r["run_id"].startswith(run)} == {
        run + "-1": "success",
        run + "-2": "success",
        run + "-3": "success",
    }


def test_bad_row_is_quarantined_retried_and_leaves_once_fixed(world, tmp_path):
    seed_accounts(world["source"], 3)
    source = MemoryAdapter(world["source"])
    source.seed("Account", [{"Id": "001BAD", "Name": "Bad mail", "Email": "not-an-email"}], modified=T0)
    run = f"q{uuid.uuid4().hex[:6]}"
    store = StateStore(world["state"])
    first = _run(world, tmp_path, run + "-1", T0, store=store)
    assert first["upsert"].extra["counts"]["created"] == 3
    open_entries = store.quarantine_entries(world["flow"])
    mine = [e for e in open_entries if e["source_key"] == "001BAD"]
    assert len(mine) == 1 and mine[0]["stage"] == "check_source" and mine[0]["column"] == "Email"
    assert mine[0]["value"] == "not-an-email" and mine[0]["payload"]["Name"] == "Bad mail"
    assert first["report"]["counts"]["quarantined"] == 1
    assert first["report"]["quarantine"][0]["rule"].startswith("regex")

    # Next day, still bad and not modified: extract retries it anyway, it stays (attempts 2).
    second = _run(world, tmp_path, run + "-2", T0 + timedelta(days=1), store=store)
    assert second["extract"].extra["retried"] == 1
    assert [
        e["attempts"] for e in store.quarantine_entries(world["flow"]) if e["source_key"] == "001BAD"
    ] == [2]

    # Fixed in the source (outside the next interval, so only the quarantine retry finds it).
    source.change("Account", "001BAD", {"Email": "fixed@example.test"}, modified=T0 - timedelta(days=3))
    third = _run(world, tmp_path, run + "-3", T0 + timedelta(days=2), store=store)
    assert third["upsert"].extra["counts"]["created"] == 1
    assert [e for e in store.quarantine_entries(world["flow"]) if e["source_key"] == "001BAD"] == []
    assert third["report"]["resolved"] == 1
    target = MemoryAdapter(world["target"])
    assert any(c["SalesforceId"] == "001BAD" for c in target.all("Customer"))


def test_crash_midway_through_upsert_repeats_no_write_on_retry(world, tmp_path):
    """Batch 1 (2 rows) lands, batch 2 dies after one row: the retried task writes only the rest."""
    seed_accounts(world["source"], 5)
    run = f"c{uuid.uuid4().hex[:6]}"
    mapping = load_flow(world["flow"], world["mappings"])
    planned = _run(world, tmp_path, run, T0, until="plan")["plan"]
    target = MemoryAdapter(world["target"])
    target.crash_after("Customer", 3)
    first_try = _context(world, tmp_path, run, T0, try_number=1)
    with pytest.raises(RetriableSourceError, match="dropped"):
        steps.upsert_step(first_try, mapping, planned.to_xcom(), target, batch_size=2)
    assert len(target.write_log("Customer")) == 3
    recorded = first_try.store.get_identities(world["flow"], [f"001{i:05d}" for i in range(5)])
    assert len(recorded) == 2, "only the finished batch was recorded"

    second_try = _context(world, tmp_path, run, T0, try_number=2)
    result = steps.upsert_step(
        second_try, mapping, planned.to_xcom(), MemoryAdapter(world["target"]), batch_size=2
    )
    log = target.write_log("Customer")
    assert len(log) == 5, "the retry wrote only the two rows never written"
    assert len({w["id"] for w in log}) == 5 and {w["action"] for w in log} == {"created"}
    assert result.extra["counts"]["created"] == 2
    assert result.extra["counts"]["already_written"] == 3  # 2 from the state store, 1 found in the target
    assert steps.verify_step(second_try, mapping, result, target)["differences"] == 0

    # A third try (say, the task cleared by hand) finds everything recorded and writes nothing.
    third = steps.upsert_step(
        _context(world, tmp_path, run, T0, try_number=3), mapping, planned.to_xcom(), target, batch_size=2
    )
    assert third.extra["counts"]["already_written"] == 5 and len(target.write_log("Customer")) == 5


def test_verify_fails_loudly_with_the_differences(world, tmp_path):
    seed_accounts(world["source"], 3)
    out = _run(world, tmp_path, "v1", T0)
    target = MemoryAdapter(world["target"])
    written = target.all("Customer")
    # Someone edits the target between upsert and verify: verify names record, field and values.
    target.change("Customer", written[0]["ListID"], {"City": "Rotterdam"})
    ctx = _context(world, tmp_path, "v1", T0)
    mapping = load_flow(world["flow"], world["mappings"])
    with pytest.raises(steps.VerificationError) as exc:
        steps.verify_step(ctx, mapping, out["upsert"], target)
    message = str(exc.value)
    assert "1 difference(s)" in message
    assert (
        f"Customer {written[0]['ListID']} (source {written[0]['SalesforceId']}): City is 'Rotterdam', expected 'Utrecht'"
        in message
    )


def test_verify_sample_checks_a_bounded_stable_subset(world, tmp_path):
    seed_accounts(world["source"], 6)
    out = _run(world, tmp_path, "s1", T0)
    ctx = _context(world, tmp_path, "s1", T0)
    mapping = load_flow(world["flow"], world["mappings"])
    target = MemoryAdapter(world["target"])
    first = steps.verify_step(ctx, mapping, out["upsert"], target, sample=2)
    second = steps.verify_step(ctx, mapping, out["upsert"], target, sample=2)
    assert first["checked"] == second["checked"] == 2
    reads = [c for c in target.call_log.calls if c["method"] == "read_by_keys"]
    assert reads[0]["rows"] == 2
    for customer in target.all("Customer"):
        target.change("Customer", customer["ListID"], {"City": "X"})
    with pytest.raises(steps.VerificationError) as exc:
        steps.verify_step(ctx, mapping, out["upsert"], target, max_listed=3)
    assert "6 difference(s)" in str(exc.value) and "... and 3 more" in str(exc.value)


def test_full_refresh_reads_everything_and_writes_nothing_unchanged(world, tmp_path):
    seed_accounts(world["source"], 4)
    _run(world, tmp_path, "f1", T0)
    mapping = load_flow(world["flow"], world["mappings"])
    later = _context(world, tmp_path, "f2", T0 + timedelta(days=30))  # an interval with no changes
    source = MemoryAdapter(world["source"])
    assert steps.extract_step(later, mapping, source).rows == 0
    full = steps.extract_step(later, mapping, source, full_refresh=True)
    assert full.rows == 4 and full.extra["window"] is None and full.extra["full_refresh"] is True
    checked = steps.check_step(later, mapping, full, side="source")
    plan = steps.plan_step(
        later, mapping, steps.map_step(later, mapping, checked), MemoryAdapter(world["target"])
    )
    assert plan.extra["counts"]["skip"] == 4


def test_manual_run_without_interval_continues_from_the_cursor(world, tmp_path):
    seed_accounts(world["source"], 3)
    store = StateStore(world["state"])
    first = _run(world, tmp_path, "m1", T0, store=store)
    cursor = store.get_cursor(world["flow"], "Account")
    assert cursor == first["extract"].extra["max_cursor"] and cursor.startswith("2026-05-01T00:00:00")
    source = MemoryAdapter(world["source"])
    source.change("Account", "00100001", {"Name": "Renamed"}, modified=T0 + timedelta(days=10))
    mapping = load_flow(world["flow"], world["mappings"])
    now = T0 + timedelta(days=11)
    manual = steps.StepContext(
        flow=world["flow"],
        dag_id="pipeline",
        run_id="m2",
        staging=tmp_path / "m2",
        store=store,
        interval_start=now,
        interval_end=now,  # a manual run of an unscheduled DAG: empty interval
    )
    extracted = steps.extract_step(manual, mapping, source)
    # The window starts at the cursor inclusive: rows stamped exactly at the cursor are read again
    # (a row written in the same instant as the last one seen is never missed) and plan skips them.
    assert extracted.extra["window"] == [cursor, now.isoformat()]
    assert extracted.rows == 3
    mapped = steps.map_step(manual, mapping, extracted)
    plan = steps.plan_step(manual, mapping, mapped, MemoryAdapter(world["target"]))
    assert (plan.extra["counts"]["update"], plan.extra["counts"]["skip"]) == (1, 2)


@pytest.mark.parametrize("max_retries, created, quarantined", [(2, 4, 0), (0, 2, 2)])
def test_transient_row_refusals_are_retried_then_quarantined(
    world, tmp_path, max_retries, created, quarantined
):
    """Locked records are resent within the task; what is still refused goes to quarantine."""
    seed_accounts(world["source"], 4)
    planned = _run(world, tmp_path, "t1", T0, until="plan")["plan"]
    target = MemoryAdapter(world["target"])
    target.refuse_transiently("Customer", 2)
    ctx = _context(world, tmp_path, "t1", T0)
    mapping = load_flow(world["flow"], world["mappings"])
    out = steps.upsert_step(
        ctx, mapping, planned, target, batch_size=4, max_retries=max_retries, retry_wait=0.01
    )
    assert out.extra["counts"]["created"] == created and out.extra["counts"]["failed"] == quarantined
    entries = ctx.store.quarantine_entries(world["flow"])
    assert len(entries) == quarantined
    assert all(e["stage"] == "upsert" and e["rule"] == "UNABLE_TO_LOCK_ROW" for e in entries)
    assert [c["rows"] for c in target.call_log.calls if c["method"] == "upsert"] == [4, 2][
        : 1 + (max_retries > 0)
    ]


def test_source_rows_without_a_key_are_left_out_and_reported(world, tmp_path):
    seed_accounts(world["source"], 2)
    source = MemoryAdapter(world["source"])
    source.seed("Account", [{"Id": "TMP1", "Name": "No key", "Email": "x@y.test"}], modified=T0)
    # Simulate a system that hands out a row with an empty key (a broken export, a formula field).
    record = source.get("Account", "TMP1")
    source._db.execute("UPDATE records SET data = ? WHERE id = 'TMP1'", (json.dumps({**record, "Id": ""}),))
    out = _run(world, tmp_path, "nk", T0)
    assert out["extract"].rows == 2 and out["extract"].extra["rows_without_key"] == 1
    assert out["upsert"].extra["counts"]["created"] == 2
    assert "1 source row(s) had no Id and were left out" in out["report"]["warnings"]
    assert out["report"]["status"] == "success"
