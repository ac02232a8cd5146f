"""The generic operators in a real Airflow: dag.test() runs extract -> ... -> report over two
file-backed systems, and the state store carries what one run learned into the next."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from erpsync.adapters.memory import MemoryAdapter
from erpsync.state import StateStore
from tests.e2e.dags_for_tests.sync_fixture import FLOW, T0, make_world, seed_accounts
from tests.e2e.dags_for_tests.sync_memory_dag import build_sync_dag

STEPS = ["validate", "extract", "check_source", "map", "check_target", "plan", "upsert", "verify", "report"]


def _register(dag):
    """Put a DAG defined outside dags/ into the metadata DB so dag.test() can run it (airflow.md 4.1)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag


@pytest.fixture
def world(tmp_path, airflow_db):
    flow = f"{FLOW}_{uuid.uuid4().hex[:6]}"
    paths = make_world(tmp_path, flow=flow)
    dag = _register(build_sync_dag(f"sync_{flow}", paths))
    return paths, dag


def _run(dag, day: int, **conf):
    """Run the interval [T0 + day, T0 + day + 1): a manual run covers the last complete day."""
    run = dag.test(logical_date=T0 + timedelta(days=day + 1), run_conf=conf or None)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    return run, states


def _xcom(run, task_id):
    return run.get_task_instance(task_id).xcom_pull(task_ids=task_id)


def test_sync_dag_creates_then_skips_then_updates_and_quarantines(world):
    paths, dag = world
    seed_accounts(paths["source"], 4)
    source, target = MemoryAdapter(paths["source"]), MemoryAdapter(paths["target"])
    source.seed("Account", [{"Id": "001BAD", "Name": "Bad mail", "Email": "nope"}], modified=T0)

    # Day 1: four creates, one row quarantined by the source rule, report written.
    run, states = _run(dag, 0)
    assert run.state == "success", states
    assert set(states) == set(STEPS) and set(states.values()) == {"success"}
    assert len(target.write_log("Customer")) == 4
    report = _xcom(run, "report")
    assert report["counts"]["created"] == 4 and report["counts"]["quarantined"] == 1
    md = Path(report["files"]["markdown"]).read_text()
    assert "| check_source | regex:Email | Email | 1 |" in md and "4 created" in md
    assert Path(report["files"]["html"]).read_text().startswith("<!doctype html>")
    manifest = _xcom(run, "extract")
    assert manifest["rows"] == 5 and all(Path(u).is_file() for u in (c["uri"] for c in manifest["chunks"]))
    store = StateStore(paths["state"])
    assert [e["source_key"] for e in store.quarantine_entries(paths["flow"])] == ["001BAD"]

    # The same day again: nothing to write.
    run, states = _run(dag, 0)
    assert run.state == "success", states
    assert len(target.write_log("Customer")) == 4
    assert _xcom(run, "plan")["extra"]["counts"]["skip"] == 4
    assert _xcom(run, "upsert")["extra"]["counts"] == {
        "created": 0,
        "updated": 0,
        "failed": 0,
        "skipped": 4,
        "already_written": 0,
        "linked": 0,
    }

    # Day 2: one account's city changes and the bad e-mail is fixed: one update, one create.
    source.change("Account", "00100001", {"BillingCity": "Delft"}, modified=T0 + timedelta(days=1, hours=2))
    source.change("Account", "001BAD", {"Email": "fixed@example.test"}, modified=T0 - timedelta(days=5))
    run, states = _run(dag, 1)
    assert run.state == "success", states
    counts = _xcom(run, "report")["counts"]
    assert (counts["created"], counts["updated"], counts["quarantined"]) == (1, 1, 0)
    log = target.write_log("Customer")
    assert sorted(w["action"] for w in log[4:]) == ["created", "updated"]
    assert next(c for c in target.all("Customer") if c["SalesforceId"] == "00100001")["City"] == "Delft"
    assert store.quarantine_entries(paths["flow"]) == []
    assert _xcom(run, "report")["resolved"] == 1
    history = {r["run_id"]: r for r in store.list_runs(paths["flow"])}
    assert history[run.run_id]["status"] == "success" and history[run.run_id]["updated"] == 1


def test_upsert_crash_is_retried_by_airflow_without_repeating_a_write(world):
    paths, dag = world
    seed_accounts(paths["source"], 5)
    target = MemoryAdapter(paths["target"])
    target.crash_after("Customer", 3)  # the first try dies inside its second batch of two
    run, states = _run(dag, 0)
    assert run.state == "success", states
    upsert = run.get_task_instance("upsert")
    assert upsert.try_number == 2, "the first try failed and Airflow retried it"
    log = target.write_log("Customer")
    assert len(log) == 5 and {w["action"] for w in log} == {"created"}
    assert len({w["id"] for w in log}) == 5
    assert _xcom(run, "upsert")["extra"]["counts"]["already_written"] == 3
    assert _xcom(run, "verify")["differences"] == 0


def test_dry_run_plans_but_writes_nothing(world):
    paths, dag = world
    seed_accounts(paths["source"], 3)
    run, states = _run(dag, 0, dry_run=True)
    assert run.state == "success", states
    assert MemoryAdapter(paths["target"]).write_log("Customer") == []
    report = _xcom(run, "report")
    assert report["status"] == "dry_run" and report["counts"]["would_create"] == 3


def test_too_many_bad_rows_fail_the_check_and_the_report_says_which_step(world):
    paths, dag = world
    seed_accounts(paths["source"], 1)
    MemoryAdapter(paths["source"]).seed(
        "Account", [{"Id": f"001BAD{i}", "Name": "Bad", "Email": "no-at-sign"} for i in range(2)], modified=T0
    )
    run, states = _run(dag, 0)  # 2 of 3 rows fail, above the mapping's threshold of 50%
    assert run.state == "failed"
    assert states["check_source"] == "failed" and states["map"] == "upstream_failed"
    assert states["report"] == "failed"
    assert run.get_task_instance("check_source").try_number == 1, "a threshold failure is not retried"
    store = StateStore(paths["state"])
    assert sorted(e["source_key"] for e in store.quarantine_entries(paths["flow"])) == ["001BAD0", "001BAD1"]
    history = store.list_runs(paths["flow"])
    assert history[0]["status"] == "failed"
    assert "step check_source did not finish" in " ".join(history[0]["report"]["problems"])
    assert MemoryAdapter(paths["target"]).write_log("Customer") == []


def test_validate_at_the_head_stops_a_flow_the_target_cannot_take(world):
    from erpsync.adapters import FieldMeta

    paths, dag = world
    seed_accounts(paths["source"], 2)
    MemoryAdapter(paths["target"]).define(
        "Customer",
        [FieldMeta("Name", length=30, required=True), FieldMeta("Email"), FieldMeta("SalesforceId")],
        id_field="ListID",
    )
    run, states = _run(dag, 0)
    assert run.state == "failed"
    assert states["validate"] == "failed" and states["extract"] == "upstream_failed"
    assert run.get_task_instance("validate").try_number == 1, "a red flow is not retried"
    assert MemoryAdapter(paths["target"]).write_log("Customer") == []
    history = StateStore(paths["state"]).list_runs(paths["flow"])
    assert history and history[0]["status"] == "failed"


def test_disabled_flow_skips_every_step(world):
    paths, dag = world
    seed_accounts(paths["source"], 2)
    mapping = Path(paths["mappings"], f"{paths['flow']}.yaml")
    mapping.write_text(mapping.read_text().replace("enabled: true", "enabled: false"))
    run, states = _run(dag, 0)
    assert run.state == "success", states
    assert set(states.values()) == {"skipped"}
    assert MemoryAdapter(paths["target"]).write_log("Customer") == []
