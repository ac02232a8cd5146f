"""A sync DAG built from the generic operators over two file-backed systems (tests only).

Not in dags/: tests build it with `build_sync_dag` and register it themselves (airflow.md 4.1).
It is wired by `sync_tasks`, exactly as the real flow DAGs are.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from erpsync.dag_defaults import default_args
from erpsync.flows import interval_schedule, sync_params
from erpsync.operators import sync_tasks
from tests.e2e.dags_for_tests.sync_fixture import T0


def build_sync_dag(dag_id: str, world: dict[str, str]) -> DAG:
    """validate -> extract -> check_source -> map -> check_target -> plan -> upsert -> verify -> report."""
    with DAG(
        dag_id,
        schedule=interval_schedule("0 0 * * *"),
        start_date=T0,
        catchup=False,
        max_active_runs=1,
        params=sync_params(batch_size=2, threshold=0.5),
        default_args=default_args(retries=1, retry_delay=timedelta(0), max_retry_delay=timedelta(0)),
        tags=["erpsync", "test"],
    ) as dag:
        sync_tasks(
            flow=world["flow"],
            source={"adapter": "memory", "options": {"path": world["source"], "name": "salesforce"}},
            target={"adapter": "memory", "options": {"path": world["target"], "name": "quickbooks"}},
            source_system="salesforce",
            target_system="quickbooks",
            mappings_dir=world["mappings"],
            state_url=world["state"],
        )
    return dag
