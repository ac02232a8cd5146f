"""Operators check their arguments cheaply at construction (no I/O) and take keyword arguments only."""

from __future__ import annotations

import itertools

import pytest

from erpsync.operators import (
    ExtractOperator,
    PlanOperator,
    QualityCheckOperator,
    ReportOperator,
    UpsertOperator,
    VerifyOperator,
)
from erpsync.operators.sync import _as_bool


def test_constructing_reads_nothing(monkeypatch):
    """No connection, no file, no state store is touched when a DAG file builds the operators."""
    monkeypatch.setenv("ERPSYNC_STATE_URL", "postgresql+psycopg://nobody@nowhere.invalid/none")
    op = ExtractOperator(task_id="extract", flow="f", adapter="salesforce", conn_id="salesforce_default")
    assert op.template_fields[:3] == ("flow", "mappings_dir", "state_url")
    assert {"conn_id", "adapter_kwargs", "full_refresh", "chunk_rows"} <= set(op.template_fields)
    assert ReportOperator(task_id="report", flow="f", steps={"extract": "extract"}).trigger_rule == "all_done"


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ExtractOperator(task_id="t", flow="", adapter="memory"), "flow must be a non-empty string"),
        (lambda: ExtractOperator(task_id="t", flow="f", adapter=""), "adapter must be a registry name"),
        (
            lambda: ExtractOperator(task_id="t", flow="f", adapter="m", adapter_kwargs=[1]),
            "adapter_kwargs must be a dict",
        ),
        (
            lambda: QualityCheckOperator(task_id="t", flow="f", manifest={}, side="middle"),
            "side must be 'source'",
        ),
        (
            lambda: QualityCheckOperator(task_id="t", flow="f", manifest=None, side="source"),
            "manifest is required",
        ),
        (lambda: PlanOperator(task_id="t", flow="f", adapter="m", manifest=None), "manifest is required"),
        (
            lambda: UpsertOperator(task_id="t", flow="f", adapter="m", manifest={}, batch_size=0),
            "batch_size must be at least 1",
        ),
        (
            lambda: UpsertOperator(task_id="t", flow="f", adapter="m", manifest={}, max_retries=-1),
            "max_retries",
        ),
        (
            lambda: VerifyOperator(task_id="t", flow="f", adapter="m", manifest={}, sample=0),
            "sample must be a positive",
        ),
        (lambda: ReportOperator(task_id="t", flow="f", steps={}), "steps must map step names"),
    ],
)
def test_bad_arguments_fail_at_parse_time_with_the_task_id(build, message):
    with pytest.raises(ValueError, match=message) as exc:
        build()
    assert str(exc.value).startswith("t:")


def test_positional_arguments_are_refused():
    with pytest.raises(TypeError):
        ExtractOperator("extract", "f", "memory")  # type: ignore[misc]


@pytest.mark.parametrize("value, expected", [(True, True), ("False", False), ("yes", True), ("", False)])
def test_template_rendered_booleans(value, expected):
    assert _as_bool(value, "dry_run") is expected


def test_unreadable_boolean_is_a_config_error():
    from erpsync.errors import ConfigError

    with pytest.raises(ConfigError, match="dry_run must be true or false, got 'maybe'"):
        _as_bool("maybe", "dry_run")


def test_sync_tasks_wires_the_standard_chain():
    from airflow.sdk import DAG

    from erpsync.operators import TASK_IDS, sync_tasks

    with DAG("wiring", schedule=None) as dag:
        tasks = sync_tasks(
            flow="f",
            source={"adapter": "salesforce", "conn_id": "salesforce_default"},
            target={"adapter": "quickbooks", "conn_id": "qbwc_bridge_default"},
            source_pool="salesforce_api",
            target_pool="qbwc_bridge",
        )
    assert tuple(tasks) == TASK_IDS and set(dag.task_ids) == set(TASK_IDS)
    for up, down in itertools.pairwise(TASK_IDS):
        assert down in dag.get_task(up).downstream_task_ids, f"{up} -> {down} missing"
    assert tasks["extract"].pool == "salesforce_api" and tasks["upsert"].pool == "qbwc_bridge"
    assert tasks["validate"].systems["quickbooks"]["conn_id"] == "qbwc_bridge_default"
    assert tasks["report"].steps["upsert"] == "upsert" and tasks["report"].trigger_rule == "all_done"
    with (
        pytest.raises(ValueError, match="source must be a dict with an 'adapter' name"),
        DAG("bad", schedule=None),
    ):
        sync_tasks(flow="f", source={"conn_id": "x"}, target={"adapter": "memory"})
