"""Build a sync DAG from its parts: validate -> extract -> check -> map -> check -> plan -> upsert ->
verify -> report, grouped as source / transform / target, with the flow's pools, params and alerts.

DAG files stay thin (which systems, which schedule, which extra steps) and everything they share lives
here. Parse-time cheap: only operator classes are imported; adapters, hooks, pandas and GX load inside
the tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, TaskGroup, TriggerRule

from erpsync.alerts import SyncAlertNotifier
from erpsync.dag_defaults import default_args
from erpsync.flows import POOLS
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

__all__ = ["FlowParts", "SystemRef", "build_flow_dag"]

#: Adapter registry names per system (module:Class strings work too).
ADAPTERS = {
    "salesforce": "salesforce",
    "exact_online": "exact_online",
    "quickbooks": "quickbooks",
}


@dataclass(frozen=True)
class SystemRef:
    """One system as a flow uses it: its adapter, Airflow connection and API pool."""

    system: str
    conn_id: str
    pool: str
    adapter: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def operator_kwargs(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter or ADAPTERS[self.system],
            "conn_id": self.conn_id,
            "adapter_kwargs": dict(self.options) or None,
            "pool": self.pool,
        }

    def validate_spec(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter or ADAPTERS[self.system],
            "conn_id": self.conn_id,
            "options": self.options,
        }


SALESFORCE = SystemRef("salesforce", "salesforce_default", "salesforce_api")
EXACT_ONLINE = SystemRef("exact_online", "exact_online_default", "exact_online_api")
QUICKBOOKS = SystemRef("quickbooks", "qbwc_bridge_default", "qbwc_bridge")


@dataclass
class FlowParts:
    """Extra steps a flow adds to the standard pipeline.

    :param before_map: called with the source-check task inside the transform group; returns the task
        the map step must wait for (e.g. the orders flow creating missing Exact customers).
    :param upsert: builds the upsert task from (plan task, common kwargs); default UpsertOperator.
    :param after_upsert: called with the upsert task inside the target group; returns tasks that must
        finish before verify (e.g. writing the QuickBooks ListID back to Salesforce).
    """

    before_map: Callable[[Any], Any] | None = None
    upsert: Callable[[Any, dict[str, Any]], Any] | None = None
    after_upsert: Callable[[Any], Sequence[Any]] | None = None


def build_flow_dag(
    *,
    dag_id: str,
    doc_md: str,
    schedule: Any,
    source: SystemRef,
    target: SystemRef,
    params: dict[str, Any],
    lookups: Sequence[SystemRef] = (),
    outlets: Sequence[Any] = (),
    parts: FlowParts | None = None,
    start_date: datetime = datetime(2026, 1, 1),
    tags: Sequence[str] = (),
) -> DAG:
    """Return the DAG of one flow (the mapping file is `include/mappings/<dag_id>.yaml`)."""
    parts = parts or FlowParts()
    unknown = {ref.pool for ref in (source, target, *lookups)} - set(POOLS)
    if unknown:
        raise ValueError(f"{dag_id}: pools {sorted(unknown)} are not declared in erpsync.flows.POOLS")
    systems = {ref.system: ref.validate_spec() for ref in (source, target, *lookups)}
    lookup_adapters = {ref.system: ref.validate_spec() for ref in lookups} or None
    failure_alerts = [SyncAlertNotifier(kind="failure")]
    with DAG(
        dag_id,
        description=doc_md.strip().splitlines()[0].lstrip("# "),
        doc_md=doc_md,
        schedule=schedule,
        start_date=start_date,
        catchup=False,
        max_active_runs=1,
        params=params,
        default_args=default_args(on_failure_callback=failure_alerts),
        tags=["erpsync", source.system, target.system, *tags],
    ) as dag:
        common = {"flow": dag_id}
        validate = ValidateOperator(task_id="validate", systems=systems, **common)

        with TaskGroup("source", tooltip=f"Read changed {source.system} rows and check them"):
            extract = ExtractOperator(task_id="extract", **common, **source.operator_kwargs())
            check_source = QualityCheckOperator(
                task_id="check", manifest=extract.output, side="source", **common
            )

        with TaskGroup("transform", tooltip="Map to the target's fields, check, plan the writes"):
            ready = parts.before_map(check_source) if parts.before_map else check_source
            mapped = MapOperator(
                task_id="map", manifest=check_source.output, lookup_adapters=lookup_adapters, **common
            )
            if ready is not check_source:
                ready >> mapped
            check_target = QualityCheckOperator(
                task_id="check", manifest=mapped.output, side="target", **common
            )
            plan = PlanOperator(
                task_id="plan", manifest=check_target.output, **common, **target.operator_kwargs()
            )

        with TaskGroup("target", tooltip=f"Write to {target.system} and read it back"):
            target_kwargs = {**common, **target.operator_kwargs(), "outlets": list(outlets)}
            if parts.upsert:
                upsert = parts.upsert(plan, target_kwargs)
            else:
                upsert = UpsertOperator(task_id="upsert", manifest=plan.output, **target_kwargs)
            verify = VerifyOperator(
                task_id="verify", manifest=upsert.output, **common, **target.operator_kwargs()
            )
            for task in parts.after_upsert(upsert) if parts.after_upsert else ():
                task >> verify

        report = ReportOperator(
            task_id="report",
            steps={
                "extract": extract.task_id,
                "check_source": check_source.task_id,
                "map": mapped.task_id,
                "check_target": check_target.task_id,
                "plan": plan.task_id,
                "upsert": upsert.task_id,
                "verify": verify.task_id,
            },
            trigger_rule=TriggerRule.ALL_DONE,
            on_success_callback=[SyncAlertNotifier(kind="summary")],
            on_failure_callback=[],  # the failing step has alerted already
            retry_delay=timedelta(seconds=10),
            **common,
        )
        validate >> extract
        verify >> report
    return dag
