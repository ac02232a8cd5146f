"""The planner: skip by hash, find by identity, then by match rules; conflicts and unplaceable rows."""

from __future__ import annotations

import pandas as pd
import pytest

from erpsync.adapters import FieldMeta
from erpsync.adapters.memory import MemoryAdapter
from erpsync.errors import ConfigError
from erpsync.plan import Planner, PlanSpec, content_hashes, normalize
from erpsync.state import Identity, StateStore

FIELDS = ["Name", "CompanyName", "Email", "Addr1", "City", "State", "Notes", "SalesforceId"]


@pytest.fixture
def spec() -> PlanSpec:
    return PlanSpec(
        flow="accounts",
        target_object="Customer",
        identity="SalesforceId",
        fields=FIELDS,
        update_fields=["Name", "Email", "Addr1", "City", "State"],
        match=[["Email"], ["CompanyName", "Addr1", "City", "State"]],
    )


@pytest.fixture
def target(tmp_path) -> MemoryAdapter:
    a = MemoryAdapter(tmp_path / "target.db")
    a.define("Customer", [FieldMeta(f) for f in FIELDS], id_field="ListID")
    return a


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path / 'state.db'}")


def _row(key, **values) -> dict:
    base = dict.fromkeys(FIELDS)
    base.update(values)
    return {"_source_key": key, **base}


def _planner(spec, target, store) -> Planner:
    return Planner(spec, target, lambda keys: store.get_identities(spec.flow, keys))


def _actions(plan: pd.DataFrame) -> dict[str, str]:
    return dict(zip(plan["_source_key"], plan["_action"], strict=True))


def test_identity_then_rules_then_create(spec, target, store):
    target.seed(
        "Customer",
        [
            {"ListID": "T1", "Name": "Old", "SalesforceId": "001A"},
            {"ListID": "T2", "Name": "Bee", "Email": "ops@bee.test"},
            {
                "ListID": "T3",
                "CompanyName": "Cee Ltd",
                "Addr1": "1 Main St",
                "City": "Utrecht",
                "State": "UT",
            },
            {"ListID": "T4", "Email": "dup@x.test"},
            {"ListID": "T5", "Email": "dup@x.test"},
            {"ListID": "T6", "Email": "taken@x.test", "SalesforceId": "001Z"},
        ],
    )
    df = pd.DataFrame(
        [
            _row("001A", SalesforceId="001A", Name="New name"),
            _row("001B", SalesforceId="001B", Name="Bee", Email=" OPS@bee.test "),
            _row(
                "001C",
                SalesforceId="001C",
                CompanyName="cee ltd",
                Addr1="1  main st",
                City="UTRECHT",
                State="ut",
            ),
            _row("001D", SalesforceId="001D", Email="dup@x.test"),
            _row("001E", SalesforceId="001E", Email="taken@x.test"),
            _row("001F", SalesforceId="001F", Name="Fresh"),
            _row("001G", SalesforceId=None, Name="No identity"),
        ]
    )
    plan = _planner(spec, target, store).plan(df)
    by_key = plan.set_index("_source_key")
    assert _actions(plan) == {
        "001A": "update",
        "001B": "update",
        "001C": "update",
        "001D": "conflict",
        "001E": "conflict",
        "001F": "create",
        "001G": "unplaceable",
    }
    assert by_key.loc["001A", "_target_id"] == "T1"
    assert by_key.loc["001B", "_target_id"] == "T2" and "matched on Email" in by_key.loc["001B", "_reason"]
    assert by_key.loc["001C", "_target_id"] == "T3"
    assert "2 target records match on Email: T4, T5" in by_key.loc["001D", "_reason"]
    assert "linked to SalesforceId=001Z" in by_key.loc["001E", "_reason"]
    assert "no value for SalesforceId" in by_key.loc["001G", "_reason"]
    assert plan["Name"].tolist()[0] == "New name", "the target fields travel with the plan"
    assert len(plan) == len(df), "no row is dropped"


def test_skip_unchanged_hash_without_calling_the_target(spec, target, store):
    df = pd.DataFrame(
        [_row("001A", SalesforceId="001A", Name="A"), _row("001B", SalesforceId="001B", Name="B")]
    )
    hashes = content_hashes(df, spec.hash_fields)
    store.record_identities(spec.flow, [Identity("001A", "T1", hashes[0]), Identity("001B", "T2", "stale")])
    planner = _planner(spec, target, store)
    plan = planner.plan(df)
    assert _actions(plan) == {"001A": "skip", "001B": "create"}
    reads = [c for c in target.call_log.calls if c["method"] == "read_by_keys"]
    assert reads and all(c["rows"] == 0 for c in reads)
    # The next chunk with only unchanged rows makes no call at all.
    before = len(target.call_log.calls)
    assert _actions(planner.plan(df.iloc[:1].assign(_source_key="001A"))) == {"001A": "conflict"}
    assert len(target.call_log.calls) == before


def test_create_only_change_plans_no_write(spec, store, target):
    row = _row("001A", SalesforceId="001A", Name="A", Notes="enriched later")
    h = content_hashes(pd.DataFrame([row]), spec.hash_fields)[0]
    store.record_identities(spec.flow, [Identity("001A", "T1", h)])
    changed = pd.DataFrame([{**row, "Notes": "different", "CompanyName": "X"}])
    assert _actions(_planner(spec, target, store).plan(changed)) == {"001A": "skip"}


def test_target_already_holding_values_is_adopted_not_rewritten(spec, target, store):
    target.seed("Customer", [{"ListID": "T1", "Name": "A", "SalesforceId": "001A", "Email": "a@a.test"}])
    df = pd.DataFrame([_row("001A", SalesforceId="001A", Name="A", Email="a@a.test", Notes="x")])
    plan = _planner(spec, target, store).plan(df)
    assert (
        plan.loc[0, "_action"] == "skip"
        and bool(plan.loc[0, "_record"])
        and plan.loc[0, "_target_id"] == "T1"
    )


def test_two_source_rows_cannot_claim_one_target_record(spec, target, store):
    target.seed("Customer", [{"ListID": "T1", "Email": "shared@x.test"}])
    planner = _planner(spec, target, store)
    first = planner.plan(pd.DataFrame([_row("k1", SalesforceId="k1", Email="shared@x.test", Name="1")]))
    second = planner.plan(pd.DataFrame([_row("k2", SalesforceId="k2", Email="SHARED@x.test", Name="2")]))
    assert first.loc[0, "_action"] == "update"
    assert second.loc[0, "_action"] == "conflict"
    assert "already matched by source key k1" in second.loc[0, "_reason"]
    assert planner.counts == {"create": 0, "update": 1, "skip": 0, "conflict": 1, "unplaceable": 0}


def test_contact_without_company_is_unplaceable(target, store):
    target.define("Contact", [FieldMeta(f) for f in ["CompanyID", "FirstName", "LastName", "ExtId"]])
    spec = PlanSpec(
        flow="contacts",
        target_object="Contact",
        identity="ExtId",
        fields=["CompanyID", "FirstName", "LastName", "ExtId"],
        update_fields=["FirstName", "LastName"],
        match=[["CompanyID", "FirstName", "LastName"]],
        requires=["CompanyID"],
    )
    df = pd.DataFrame(
        [
            {"_source_key": "c1", "ExtId": "c1", "CompanyID": None, "FirstName": "Ann", "LastName": "Lee"},
            {"_source_key": "c2", "ExtId": "c2", "CompanyID": "29", "FirstName": "Bo", "LastName": "Ek"},
        ]
    )
    plan = Planner(spec, target, lambda keys: store.get_identities(spec.flow, keys)).plan(df)
    assert _actions(plan) == {"c1": "unplaceable", "c2": "create"}
    assert plan.loc[0, "_reason"] == "no value for CompanyID: cannot place the row in Contact"


def test_payload_columns_keep_create_only_fields_out_of_updates(spec):
    assert spec.payload_columns("create") == FIELDS
    assert spec.payload_columns("update") == ["SalesforceId", "Name", "Email", "Addr1", "City", "State"]
    assert spec.payload_columns("skip") == []


def test_spec_refuses_rules_on_unmapped_fields():
    with pytest.raises(ConfigError, match=r"unmapped target field\(s\) \['Phone', 'X'\]"):
        PlanSpec(
            flow="f", target_object="T", identity="X", fields=["A"], update_fields=["A"], match=[["Phone"]]
        )


@pytest.mark.parametrize(
    "a, b",
    [(1, 1.0), (float("nan"), None), (pd.NA, None), (pd.Timestamp("2026-01-01"), "2026-01-01T00:00:00")],
)
def test_normalize_makes_equal_content_equal(a, b):
    assert normalize(a) == normalize(b)


def test_target_reads_go_in_bounded_batches(spec, target, store, monkeypatch):
    import erpsync.plan as plan_module

    monkeypatch.setattr(plan_module, "KEY_BATCH", 2)
    target.seed("Customer", [{"ListID": f"T{i}", "SalesforceId": f"k{i}", "Name": "old"} for i in range(5)])
    df = pd.DataFrame([_row(f"k{i}", SalesforceId=f"k{i}", Name="new") for i in range(5)])
    plan = _planner(spec, target, store).plan(df)
    assert set(plan["_action"]) == {"update"}
    reads = [c for c in target.call_log.calls if c["method"] == "read_by_keys"]
    assert len(reads) == 3, "five identities in calls of at most two"


def test_nested_values_normalize_for_hashes_and_comparison():
    import numpy as np

    lines = np.array([{"Qty": np.float64(2.0), "Item": "A"}], dtype=object)
    assert normalize(lines) == [{"Item": "A", "Qty": 2}]
    a = pd.DataFrame({"_source_key": ["1"], "Lines": [lines]})
    b = pd.DataFrame({"_source_key": ["1"], "Lines": [[{"Item": "A", "Qty": 2}]]})
    assert content_hashes(a, ["Lines"]) == content_hashes(b, ["Lines"])


def test_a_match_rule_on_the_identity_is_not_read_twice(target, store):
    spec = PlanSpec(
        flow="f",
        target_object="Customer",
        identity="SalesforceId",
        fields=FIELDS,
        update_fields=["Name"],
        match=[["SalesforceId"], ["Email"]],
    )
    plan = _planner(spec, target, store).plan(pd.DataFrame([_row("k1", SalesforceId="k1", Email="a@b.test")]))
    assert plan.loc[0, "_action"] == "create"
    fields_read = [c for c in target.call_log.calls if c["method"] == "read_by_keys"]
    assert len(fields_read) == 2, "one read by identity, one by e-mail"
