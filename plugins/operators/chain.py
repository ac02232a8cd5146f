"""Wire one flow's tasks in the standard order, so each DAG file stays a few lines.

    validate -> extract -> check_source -> map -> check_target -> plan -> upsert -> verify -> report

Call `sync_tasks(...)` inside a DAG context. Cheap at parse time: it only builds operators.

    with DAG("sf_accounts_to_qb_customers", ...):
        sync_tasks(
            flow="sf_accounts_to_qb_customers",
            source={"adapter": "salesforce", "conn_id": "salesforce_default"},
            target={"adapter": "quickbooks", "conn_id": "qbwc_bridge_default"},
            source_pool="salesforce_api",
            target_pool="qbwc_bridge",
        )
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from erpsync.operators.sync import (
    ExtractOperator,
    MapOperator,
    PlanOperator,
    QualityCheckOperator,
    ReportOperator,
    UpsertOperator,
    ValidateOperator,
    VerifyOperator,
)

__all__ = ["TASK_IDS", "sync_tasks"]

TASK_IDS = (
    "validate",
    "extract",
    "check_source",
    "map",
    "check_target",
    "plan",
    "upsert",
    "verify",
    "report",
)


def _adapter_args(ref: dict[str, Any], role: str) -> dict[str, Any]:
    if not isinstance(ref, dict) or not isinstance(ref.get("adapter"), str):
        raise ValueError(f"{role} must be a dict with an 'adapter' name, got {ref!r}")
    return {"adapter": ref["adapter"], "conn_id": ref.get("conn_id"), "adapter_kwargs": ref.get("options")}


def sync_tasks(
    *,
    flow: str,
    source: dict[str, Any],
    target: dict[str, Any],
    source_system: str | None = None,
    target_system: str | None = None,
    lookup_adapters: dict[str, dict] | None = None,
    requires: Sequence[str] = (),
    verify_sample: int | None = None,
    mappings_dir: str | None = None,
    state_url: str | None = None,
    source_pool: str | None = None,
    target_pool: str | None = None,
    validate: bool = True,
    grouped: bool = False,
    before_map: Callable[[Any], Any] | None = None,
    upsert: Callable[[Any, dict[str, Any]], Any] | None = None,
    after_upsert: Callable[[Any], Sequence[Any]] | None = None,
    outlets: Sequence[Any] = (),
    report_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create the flow's tasks in the current DAG and chain them; return them by task id.

    :param source: {"adapter": name, "conn_id": ..., "options": {...}} of the system read.
    :param target: the same for the system written.
    :param source_system: the mapping's name for the source system (for validate; default the adapter name).
    :param target_system: the same for the target.
    :param lookup_adapters: system -> adapter ref for the mapping's lookups (see MapOperator).
    :param requires: target fields that must have a value to place a row (see PlanOperator).
    :param verify_sample: verify at most this many written records (None: all).
    :param source_pool: Airflow pool for tasks calling the source (extract).
    :param target_pool: Airflow pool for tasks calling the target (plan, upsert, verify).
    :param validate: start with a ValidateOperator (connections and mapping against the target).
    :param grouped: put the steps in task groups `source` (extract, check), `transform` (map, check,
        plan) and `target` (upsert, verify), as the flow DAGs show them in the UI.
    :param before_map: called with the source check inside the transform group; returns the task whose
        manifest the map step reads instead of the source check's (the orders flow's seed steps:
        status, order exists, products, customers); the report counts its skips and its calls.
    :param upsert: builds the upsert task from (plan task, keyword arguments); default UpsertOperator.
    :param after_upsert: called with the upsert task; returns tasks verify must wait for (write-back).
    :param outlets: assets the upsert step updates (an event only when it created or updated rows).
    :param report_kwargs: extra operator arguments for the report (callbacks, retry delay).
    """
    from airflow.sdk import TaskGroup

    common = {"flow": flow, "mappings_dir": mappings_dir, "state_url": state_url}
    src, tgt = _adapter_args(source, "source"), _adapter_args(target, "target")
    on_source = {"pool": source_pool} if source_pool else {}
    on_target = {"pool": target_pool} if target_pool else {}

    def group(name: str, tooltip: str) -> AbstractContextManager:
        return TaskGroup(name, tooltip=tooltip) if grouped else nullcontext()

    def tid(name: str) -> str:
        # Inside a group the id is prefixed (source.check): the short names keep ids unique.
        return name.split("_")[0] if grouped and name in ("check_source", "check_target") else name

    tasks: dict[str, Any] = {}
    if validate:
        systems = {
            source_system or source["adapter"]: source,
            target_system or target["adapter"]: target,
            **(lookup_adapters or {}),
        }
        tasks["validate"] = ValidateOperator(task_id="validate", systems=systems, **common)
    with group("source", "Read the changed source rows and check them"):
        tasks["extract"] = ExtractOperator(task_id="extract", **common, **src, **on_source)
        tasks["check_source"] = QualityCheckOperator(
            task_id=tid("check_source"), manifest=tasks["extract"].output, side="source", **common
        )
    with group("transform", "Map to the target's fields, check, plan the writes"):
        ready = before_map(tasks["check_source"]) if before_map else None
        # A flow's own step before map (the orders flow's seed steps) hands map the rows that go on.
        feed = ready if ready is not None else tasks["check_source"]
        tasks["map"] = MapOperator(
            task_id="map", manifest=feed.output, lookup_adapters=lookup_adapters, **common
        )
        if ready is not None:
            tasks["before_map"] = ready
        tasks["check_target"] = QualityCheckOperator(
            task_id=tid("check_target"), manifest=tasks["map"].output, side="target", **common
        )
        tasks["plan"] = PlanOperator(
            task_id="plan",
            manifest=tasks["check_target"].output,
            requires=requires,
            **common,
            **tgt,
            **on_target,
        )
    with group("target", "Write to the target and read it back"):
        upsert_kwargs = {**common, **tgt, **on_target, "outlets": list(outlets)}
        if upsert:
            tasks["upsert"] = upsert(tasks["plan"], upsert_kwargs)
        else:
            tasks["upsert"] = UpsertOperator(task_id="upsert", manifest=tasks["plan"].output, **upsert_kwargs)
        tasks["verify"] = VerifyOperator(
            task_id="verify",
            manifest=tasks["upsert"].output,
            sample=verify_sample,
            **common,
            **tgt,
            **on_target,
        )
        for task in after_upsert(tasks["upsert"]) if after_upsert else ():
            task >> tasks["verify"]
    tasks["report"] = ReportOperator(
        task_id="report",
        steps={
            t: tasks[t].task_id
            for t in (*TASK_IDS[:3], "before_map", *TASK_IDS[3:])
            if t in tasks and t != "report"
        },
        **common,
        **(report_kwargs or {}),
    )
    if validate:
        tasks["validate"] >> tasks["extract"]
    tasks["verify"] >> tasks["report"]
    return tasks
