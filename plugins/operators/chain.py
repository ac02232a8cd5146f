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

from collections.abc import Sequence
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
    """
    common = {"flow": flow, "mappings_dir": mappings_dir, "state_url": state_url}
    src, tgt = _adapter_args(source, "source"), _adapter_args(target, "target")
    on_source = {"pool": source_pool} if source_pool else {}
    on_target = {"pool": target_pool} if target_pool else {}
    tasks: dict[str, Any] = {}
    if validate:
        systems = {
            source_system or source["adapter"]: source,
            target_system or target["adapter"]: target,
            **(lookup_adapters or {}),
        }
        tasks["validate"] = ValidateOperator(task_id="validate", systems=systems, **common)
    tasks["extract"] = ExtractOperator(task_id="extract", **common, **src, **on_source)
    tasks["check_source"] = QualityCheckOperator(
        task_id="check_source", manifest=tasks["extract"].output, side="source", **common
    )
    tasks["map"] = MapOperator(
        task_id="map", manifest=tasks["check_source"].output, lookup_adapters=lookup_adapters, **common
    )
    tasks["check_target"] = QualityCheckOperator(
        task_id="check_target", manifest=tasks["map"].output, side="target", **common
    )
    tasks["plan"] = PlanOperator(
        task_id="plan", manifest=tasks["check_target"].output, requires=requires, **common, **tgt, **on_target
    )
    tasks["upsert"] = UpsertOperator(
        task_id="upsert", manifest=tasks["plan"].output, **common, **tgt, **on_target
    )
    tasks["verify"] = VerifyOperator(
        task_id="verify", manifest=tasks["upsert"].output, sample=verify_sample, **common, **tgt, **on_target
    )
    tasks["report"] = ReportOperator(
        task_id="report", steps={t: t for t in TASK_IDS if t in tasks and t != "report"}, **common
    )
    if validate:
        tasks["validate"] >> tasks["extract"]
    tasks["verify"] >> tasks["report"]
    return tasks
