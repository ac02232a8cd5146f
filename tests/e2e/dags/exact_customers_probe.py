"""Test-only DAG: stage Salesforce-shaped orders (from the run's conf), then ensure their customers in Exact."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from erpsync.operators.exact_customers import EnsureExactCustomersOperator


@dag(
    dag_id="exact_customers_probe",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 0},
    tags=["test"],
)
def exact_customers_probe():
    @task
    def stage(dag_run=None, run_id=None) -> dict:
        import pandas as pd

        from erpsync.chunks import ChunkWriter
        from erpsync.staging import run_staging_dir

        writer = ChunkWriter(run_staging_dir("exact_customers_probe", run_id), "extract")
        writer.write(pd.DataFrame((dag_run.conf or {}).get("orders", [])))
        return writer.close().to_xcom()

    EnsureExactCustomersOperator(
        task_id="ensure_customers",
        manifest=stage(),
        source_filter={"Status": ["Activated"]},
        conn_id="{{ dag_run.conf.get('conn_id', 'exact_online_default') }}",
    )


exact_customers_probe()
