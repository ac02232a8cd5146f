"""A sync DAG built from the generic operators over two file-backed systems (tests only).

Not in dags/: tests build it with `build_sync_dag` and register it themselves (airflow.md 4.1).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from erpsync.dag_defaults import default_args
from erpsync.flows import interval_schedule, sync_params
from erpsync.operators import (
    ExtractOperator,
    MapOperator,
    PlanOperator,
    QualityCheckOperator,
    ReportOperator,
    UpsertOperator,
    ValidateOperator,
    VerifyOperator,
)
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
        common = {"flow": world["flow"], "mappings_dir": world["mappings"], "state_url": world["state"]}
        source = {"adapter": "memory", "adapter_kwargs": {"path": world["source"], "name": "salesforce"}}
        target = {"adapter": "memory", "adapter_kwargs": {"path": world["target"], "name": "quickbooks"}}
        validate = ValidateOperator(
            task_id="validate",
            systems={
                "salesforce": {"adapter": "memory", "options": source["adapter_kwargs"]},
                "quickbooks": {"adapter": "memory", "options": target["adapter_kwargs"]},
            },
            **common,
        )
        extract = ExtractOperator(task_id="extract", **common, **source)
        validate >> extract
        check_source = QualityCheckOperator(
            task_id="check_source", manifest=extract.output, side="source", **common
        )
        mapped = MapOperator(task_id="map", manifest=check_source.output, **common)
        check_target = QualityCheckOperator(
            task_id="check_target", manifest=mapped.output, side="target", **common
        )
        plan = PlanOperator(task_id="plan", manifest=check_target.output, **common, **target)
        upsert = UpsertOperator(task_id="upsert", manifest=plan.output, **common, **target)
        verify = VerifyOperator(task_id="verify", manifest=upsert.output, **common, **target)
        report = ReportOperator(
            task_id="report",
            steps={
                t: t for t in ("extract", "check_source", "map", "check_target", "plan", "upsert", "verify")
            },
            **common,
        )
        verify >> report
    return dag
