"""Test-only DAG: plan -> deferrable QuickBooks upsert -> verify for the accounts-to-customers flow.

The mapped manifest, the state store URL and the bridge connection id come from the run's conf, so
the test decides where the data lives; everything else is the real flow's mapping and operators.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from erpsync.operators import PlanOperator, VerifyOperator
from erpsync.operators.quickbooks_upsert import QuickBooksUpsertOperator

QB_ADAPTER = "erpsync.adapters.quickbooks:QuickBooksAdapter"
CONN = "qbwc_bridge_e2e"

with DAG(
    "qb_upsert_probe",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["test"],
    params={"dry_run": False},
    default_args={"retries": 0},
):
    common = {"flow": "sf_accounts_to_qb_customers", "state_url": "{{ dag_run.conf['state_url'] }}"}
    target = {"adapter": QB_ADAPTER, "conn_id": CONN, "adapter_kwargs": {"long_poll": 5, "wait_timeout": 120}}
    plan = PlanOperator(task_id="plan", manifest="{{ dag_run.conf['mapped'] | tojson }}", **common, **target)
    upsert = QuickBooksUpsertOperator(
        task_id="upsert",
        manifest=plan.output,
        qbwc_bridge_conn_id=CONN,
        poll_interval=0.2,
        long_poll=5,
        rows_per_job=2,  # small batches, so the tests cross a batch boundary
        retries=1,  # a failed wait (see the re-attach test) is retried at once
        retry_delay=timedelta(0),
        **common,
    )
    VerifyOperator(task_id="verify", manifest=upsert.output, **common, **target)
