"""The record activity log (issue 15): kept for the configured days, never shown or kept older,
one row per record and run even when a task is retried, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from erpsync.errors import ConfigError
from erpsync.state import StateStore
from erpsync.state.activity import (
    Activity,
    activity_retention_days,
    log_activity,
    prune_activity,
    read_activity,
)
from tests.pg import schema_url

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        return StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    return StateStore(schema_url(request.getfixturevalue("postgres_url"), "act"))


def _row(key: str, name: str) -> Activity:
    return Activity(key, "updated", "T-" + key, {"Code": key, "Description": name}, {"Name": name})


def test_rows_older_than_the_retention_are_neither_shown_nor_kept(store, monkeypatch):
    monkeypatch.setenv("ERPSYNC_ACTIVITY_RETENTION_DAYS", "7")
    log_activity(store, "flow_a", [_row("A", "old")], run_id="r1", now=NOW - timedelta(days=8))
    log_activity(store, "flow_a", [_row("B", "recent")], run_id="r2", now=NOW - timedelta(days=6))
    log_activity(store, "flow_b", [_row("C", "other flow, old")], run_id="r1", now=NOW - timedelta(days=8))

    shown = read_activity(store, "flow_a", now=NOW)
    assert [r["source_key"] for r in shown] == ["B"]
    assert shown[0]["sent_fields"] == {"Name": "recent"}
    assert shown[0]["source_fields"] == {"Code": "B", "Description": "recent"}

    # A write prunes its own flow's old rows; prune_activity (erpsync prune) every flow's.
    log_activity(store, "flow_a", [_row("D", "now")], run_id="r3", now=NOW)
    assert _all_keys(store) == {"B", "C", "D"}
    assert prune_activity(store, now=NOW) == 1
    assert _all_keys(store) == {"B", "D"}


def test_a_retried_task_keeps_one_row_per_record_and_run(store):
    log_activity(store, "flow_a", [_row("A", "try 1")], run_id="r1", now=NOW)
    log_activity(store, "flow_a", [_row("A", "try 2")], run_id="r1", now=NOW)
    log_activity(store, "flow_a", [_row("A", "next run")], run_id="r2", now=NOW)
    rows = read_activity(store, "flow_a", source_key="A", now=NOW)
    assert sorted((r["run_id"], r["sent_fields"]["Name"]) for r in rows) == [
        ("r1", "try 2"),
        ("r2", "next run"),
    ]


def test_long_values_are_cut_and_zero_days_turns_the_log_off(store, monkeypatch):
    log_activity(store, "flow_a", [_row("A", "x" * 2000)], run_id="r1", now=NOW)
    (row,) = read_activity(store, "flow_a", now=NOW)
    assert len(row["sent_fields"]["Name"]) == 500 and row["sent_fields"]["Name"].endswith("…")

    monkeypatch.setenv("ERPSYNC_ACTIVITY_RETENTION_DAYS", "0")
    assert log_activity(store, "flow_a", [_row("B", "off")], run_id="r2", now=NOW) == 0
    assert read_activity(store, "flow_a", now=NOW) == []


@pytest.mark.parametrize("raw", ["a week", "-1"])
def test_a_bad_retention_setting_is_a_clear_error(monkeypatch, raw):
    monkeypatch.setenv("ERPSYNC_ACTIVITY_RETENTION_DAYS", raw)
    with pytest.raises(ConfigError, match="ERPSYNC_ACTIVITY_RETENTION_DAYS"):
        activity_retention_days()


def _all_keys(store) -> set[str]:
    from sqlalchemy import select

    from erpsync.state.models import RecordActivity

    with store.session() as s:
        return set(s.scalars(select(RecordActivity.source_key)))
