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

from airflow.sdk import DAG, TaskGroup

from erpsync.alerts import SyncAlertNotifier
from erpsync.dag_defaults import default_args
from erpsync.flows import POOLS
from erpsync.operators import sync_tasks

__all__ = ["FlowParts", "FlowStage", "SystemRef", "build_flow_dag"]


@dataclass(frozen=True)
class SystemRef:
    """One system as a flow uses it: its adapter, Airflow connection and API pool."""

    system: str
    conn_id: str
    pool: str
    adapter: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def operator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for an adapter-backed operator of a flow's own (e.g. a write-back step)."""
        return {
            "adapter": self.adapter or self.system,  # the registry names adapters after their system
            "conn_id": self.conn_id,
            "adapter_kwargs": dict(self.options) or None,
            "pool": self.pool,
        }

    def adapter_ref(self) -> dict[str, Any]:
        """The {"adapter", "conn_id", "options"} reference the operators resolve inside a task."""
        return {
            "adapter": self.adapter or self.system,  # the registry names adapters after their system
            "conn_id": self.conn_id,
            "options": dict(self.options) or None,
        }


SALESFORCE = SystemRef("salesforce", "salesforce_default", "salesforce_api")
EXACT_ONLINE = SystemRef("exact_online", "exact_online_default", "exact_online_api")
QUICKBOOKS = SystemRef("quickbooks", "qbwc_bridge_default", "qbwc_bridge")
AUTOTASK = SystemRef("autotask", "autotask_default", "autotask_api")


@dataclass
class FlowParts:
    """Extra steps a flow adds to the standard pipeline.

    :param before_map: called with the source-check task inside the transform group; returns the task
        whose manifest the map step reads (the orders flow's seed steps: status, order exists,
        products, customers).
    :param upsert: builds the upsert task from (plan task, keyword arguments); default UpsertOperator.
    :param after_upsert: called with the upsert task inside the target group; returns tasks that must
        finish before verify (e.g. writing the QuickBooks ListID back to Salesforce).
    """

    before_map: Callable[[Any], Any] | None = None
    upsert: Callable[[Any, dict[str, Any]], Any] | None = None
    after_upsert: Callable[[Any], Sequence[Any]] | None = None


@dataclass(frozen=True)
class FlowStage:
    """A second flow run in the same DAG after the first one's report (the Autotask contacts after
    the companies), in a task group named `group`, with its own mapping `include/mappings/<flow>.yaml`.
    """

    flow: str
    group: str
    source: SystemRef
    target: SystemRef
    lookups: Sequence[SystemRef] = ()
    parts: FlowParts | None = None


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
    then: Sequence[FlowStage] = (),
    notifier: type[SyncAlertNotifier] = SyncAlertNotifier,
) -> DAG:
    """Return the DAG of one flow (the mapping file is `include/mappings/<dag_id>.yaml`).

    :param notifier: the failure-alert and summary notifier class (`erpsync.notifications.FlowNotifier`
        adds the flow's own recipients and the every-run setting, read from its params).
    :param then: further flows run one after the other once this one's report succeeded, each in its
        own task group (companies first, then contacts).
    """
    parts = parts or FlowParts()
    refs = [source, target, *lookups, *(r for st in then for r in (st.source, st.target, *st.lookups))]
    unknown = {ref.pool for ref in refs} - set(POOLS)
    if unknown:
        raise ValueError(f"{dag_id}: pools {sorted(unknown)} are not declared in erpsync.flows.POOLS")
    with DAG(
        dag_id,
        description=doc_md.strip().splitlines()[0].lstrip("# "),
        doc_md=doc_md,
        schedule=schedule,
        start_date=start_date,
        catchup=False,
        max_active_runs=1,
        params=params,
        default_args=default_args(on_failure_callback=[notifier(kind="failure")]),
        tags=["erpsync", source.system, target.system, *tags],
    ) as dag:
        tasks = _flow_tasks(dag_id, source, target, lookups, parts, outlets, notifier)
        for stage in then:
            with TaskGroup(stage.group, tooltip=f"flow {stage.flow}"):
                stage_tasks = _flow_tasks(
                    stage.flow,
                    stage.source,
                    stage.target,
                    stage.lookups,
                    stage.parts or FlowParts(),
                    (),
                    notifier,
                )
            tasks["report"] >> stage_tasks.get("validate", stage_tasks["extract"])
            tasks = stage_tasks
    return dag


def _flow_tasks(flow, source, target, lookups, parts, outlets, notifier) -> dict[str, Any]:
    return sync_tasks(
        flow=flow,
        source=source.adapter_ref(),
        target=target.adapter_ref(),
        source_system=source.system,
        target_system=target.system,
        lookup_adapters={ref.system: ref.adapter_ref() for ref in lookups} or None,
        source_pool=source.pool,
        target_pool=target.pool,
        grouped=True,
        before_map=parts.before_map,
        upsert=parts.upsert,
        after_upsert=parts.after_upsert,
        outlets=outlets,
        report_kwargs={
            "on_success_callback": [notifier(kind="summary")],
            "on_failure_callback": [],  # the failing step has alerted already
            "retry_delay": timedelta(seconds=10),
        },
    )
