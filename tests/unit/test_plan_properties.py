"""Properties of plan + write over arbitrary rows: a rerun writes nothing; one changed update field
gives exactly one update; a change only in a create-only field gives none."""

from __future__ import annotations

import itertools

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erpsync.adapters import FieldMeta
from erpsync.adapters.memory import MemoryAdapter
from erpsync.plan import Planner, PlanSpec
from erpsync.state import Identity, StateStore

FIELDS = ["Name", "Email", "Notes", "ExtId"]
_flows = itertools.count()
_store = StateStore("sqlite:///:memory:")

values = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=False, width=32),
)
rows = st.lists(
    st.fixed_dictionaries({"Name": values, "Email": values, "Notes": values}), min_size=1, max_size=12
)


def _frame(data: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"_source_key": f"k{i}", "ExtId": f"k{i}", **r} for i, r in enumerate(data)],
        columns=["_source_key", *FIELDS],
    )


def _apply(spec: PlanSpec, target: MemoryAdapter, plan: pd.DataFrame) -> int:
    """Write the plan's creates and updates the way the upsert step does; return rows written."""
    written = 0
    for action in ("create", "update"):
        part = plan[plan["_action"] == action]
        if part.empty:
            continue
        payload = part[["_source_key", *spec.payload_columns(action)]].copy()
        if action == "update":
            payload.insert(1, "_target_id", part["_target_id"].to_numpy())
        res = target.upsert(spec.target_object, payload, identity=spec.identity)
        assert (res["action"] != "failed").all(), res
        _store.record_identities(
            spec.flow,
            [
                Identity(k, t, h)
                for k, t, h in zip(part["_source_key"], res["target_id"], part["_hash"], strict=True)
            ],
        )
        written += len(part)
    return written


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=rows, pick=st.integers(0, 11), new_value=st.text(min_size=1, max_size=6))
def test_rerun_is_free_and_one_change_is_one_update(data, pick, new_value):
    flow = f"prop{next(_flows)}"
    spec = PlanSpec(
        flow=flow, target_object="Customer", identity="ExtId", fields=FIELDS, update_fields=["Name", "Email"]
    )
    target = MemoryAdapter()
    target.define("Customer", [FieldMeta(f) for f in FIELDS], id_field="ListID")

    def plan(df):
        return Planner(spec, target, lambda keys: _store.get_identities(flow, keys)).plan(df)

    df = _frame(data)
    first = plan(df)
    assert set(first["_action"]) == {"create"}
    assert _apply(spec, target, first) == len(df)

    again = plan(df)
    assert set(again["_action"]) == {"skip"}, again[["_source_key", "_action", "_reason"]]

    i = pick % len(df)
    create_only = df.astype(object)
    create_only.loc[i, "Notes"] = f"{new_value}!"
    assert set(plan(create_only)["_action"]) == {"skip"}

    changed = df.astype(object)
    old = changed.loc[i, "Name"]
    changed.loc[i, "Name"] = new_value if str(old) != new_value else new_value + "x"
    result = plan(changed)
    assert result["_action"].tolist().count("update") == 1
    assert result.loc[i, "_action"] == "update"
    assert _apply(spec, target, result) == 1
    assert set(plan(changed)["_action"]) == {"skip"}
