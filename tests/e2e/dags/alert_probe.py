"""Test-only DAG: one step that fails with a record count, one that reports changes."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from erpsync.alerts import SyncAlertNotifier


@dag(dag_id="alert_probe", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["test"])
def alert_probe():
    @task(retries=0, on_failure_callback=[SyncAlertNotifier(kind="failure")])
    def upsert(dag_run=None):
        from erpsync.errors import FatalSourceError

        if (dag_run.conf or {}).get("fail"):
            raise FatalSourceError("QuickBooks refused the batch", details={"records": 42})
        return {"created": 1}

    @task(retries=0, on_success_callback=[SyncAlertNotifier(kind="summary")])
    def report(result: dict, dag_run=None) -> dict:
        changed = (dag_run.conf or {}).get("changed", 0)
        return {"counts": {"created": changed, "updated": 0, "skipped": 5}}

    report(upsert())


alert_probe()
