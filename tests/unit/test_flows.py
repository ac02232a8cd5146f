"""Shared DAG building blocks: interval schedules, validated params, pools."""

from __future__ import annotations

import pytest

from erpsync.flows import POOLS, interval_schedule, sync_params


def test_interval_schedule_gives_a_real_data_interval():
    import pendulum
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = coerce_to_core_timetable(interval_schedule("0 * * * *"))  # what the scheduler runs
    info = timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(
            pendulum.datetime(2026, 3, 1, 5), pendulum.datetime(2026, 3, 1, 6)
        ),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    assert info.data_interval.start == pendulum.datetime(2026, 3, 1, 6)
    assert info.data_interval.end == pendulum.datetime(2026, 3, 1, 7)


def test_params_reject_bad_values():
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(sync_params(statuses=["Activated"]))
    params.validate()
    with pytest.raises(Exception, match=r"quarantine_threshold|greater than the maximum"):
        bad = ParamsDict(sync_params())
        bad["quarantine_threshold"] = 1.5
    with pytest.raises(Exception, match=r"statuses|should be non-empty|minItems|too short"):
        bad = ParamsDict(sync_params(statuses=["Activated"]))
        bad["statuses"] = []


def test_pools_have_positive_slots():
    assert POOLS and all(p["slots"] >= 1 for p in POOLS.values())
