"""`make demo` runs the Autotask flow: its connection reaches the sandbox tenant, and the summary shows the
companies stage and the contacts stage (two run reports under one DAG run) with their own counts.

Cheap pieces of the demo only (the whole demo starts Airflow standalone and takes minutes): the
connection the demo builds from `sandbox up`'s state file, against a running Autotask simulator over
HTTPS, and the summary read back from a real state store.
"""

from __future__ import annotations

import contextlib
import io
import json

from erpsync import demo


def test_the_demo_runs_the_autotask_flow():
    assert "sf_accounts_to_autotask" in demo.FLOWS
    assert demo.STAGES["sf_accounts_to_autotask"] == ["sf_contacts_to_autotask"]
    for dag_id in demo.FLOWS:
        assert (demo.PROJECT / "dags" / f"{dag_id}.py").is_file(), dag_id


def test_the_demo_autotask_connection_reaches_the_sandbox_tenant(tmp_path, monkeypatch):
    from erpsync.hooks import autotask as at_hook
    from erpsync.sandbox.autotask.testing import running_autotask

    with running_autotask(tmp_path / "at") as at:
        stack = demo.DemoStack(base_env={})
        # The state file `sandbox up` writes: systems[name] = {"url": ..., **service info}.
        stack.state = {"systems": {"autotask": {"url": at.url, **at.info}}, "ca_bundle": at.ca_bundle}
        conn = json.loads(stack.autotask_connection())
        assert conn["conn_type"] == "autotask" and conn["host"] == at.url
        monkeypatch.setenv("AIRFLOW_CONN_AUTOTASK_DEFAULT", stack.autotask_connection())
        at_hook._ZONES.clear()
        hook = at_hook.AutotaskHook(ledger_path=str(tmp_path / "ledger.db"))
        try:
            ok, message = hook.test_connection()
        finally:
            hook.close()
            at_hook._ZONES.clear()
        assert ok, message
        assert at.simulator.stats["GET ThresholdInformation"] >= 1


class _Api:
    def task_instances(self, dag_id, run_id):
        return [{"task_id": "contacts.upsert", "state": "success"}]


def test_the_summary_shows_both_autotask_stages(tmp_path, monkeypatch):
    from erpsync.state import StateStore

    monkeypatch.setattr(demo, "DEMO", tmp_path)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    run_id = "manual__demo"
    for flow, counts, calls in (
        ("sf_accounts_to_autotask", {"created": 7, "updated": 1, "skipped": 3, "quarantined": 2}, 40),
        ("sf_contacts_to_autotask", {"created": 11, "updated": 0, "skipped": 5, "quarantined": 4}, 23),
    ):
        store.start_run(flow=flow, run_id=run_id)
        store.finish_run(
            flow=flow,
            run_id=run_id,
            status="success",
            counts=counts,
            report={"counts": counts, "api_calls": calls},
        )
    run = {"dag_run_id": run_id, "state": "success", "start_date": None, "end_date": None}
    summary = demo.flow_summary(_Api(), "sf_accounts_to_autotask", run)
    assert (summary["created"], summary["quarantined"], summary["calls_used"]) == (7, 2, 40)
    contacts = summary["stages"]["sf_contacts_to_autotask"]
    assert (contacts["created"], contacts["skipped"], contacts["quarantined"]) == (11, 5, 4)

    stack = demo.DemoStack(base_env={})
    stack.api_port, stack.bridge_url, stack.status_token = 8080, "http://127.0.0.1:1", "t"
    monkeypatch.setattr(stack, "admin_password", lambda: "unused")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        demo.print_summary({"sf_accounts_to_autotask": summary}, stack)
    lines = out.getvalue().splitlines()
    companies = next(line for line in lines if line.startswith("sf_accounts_to_autotask"))
    assert companies.split()[1:7] == ["success", "7", "1", "3", "2", "40"], companies
    stage = next(line for line in lines if "then sf_contacts_to_autotask" in line)
    assert stage.split()[2:8] == ["success", "11", "0", "5", "4", "23"], stage
