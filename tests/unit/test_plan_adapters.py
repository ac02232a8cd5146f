"""The reference adapter behaves like a real target: ids, lengths, required fields, per-row errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from erpsync.adapters import (
    FieldMeta,
    ReadWindow,
    SystemAdapter,
    adapter_names,
    get_adapter,
    register_adapter,
)
from erpsync.adapters.memory import MemoryAdapter
from erpsync.errors import ConfigError, RetriableSourceError

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def system(tmp_path) -> MemoryAdapter:
    a = MemoryAdapter(tmp_path / "qb.db", name="quickbooks")
    a.define(
        "Customer",
        [
            FieldMeta("Name", length=41, required=True),
            FieldMeta("Email", length=100),
            FieldMeta("SalesforceId", external_id=True, length=18),
            FieldMeta("Balance", type="number", createable=False, updateable=False),
        ],
        id_field="ListID",
        modified_field="TimeModified",
    )
    return a


def test_is_a_system_adapter_and_resolves_by_name(tmp_path):
    a = get_adapter("memory", path=str(tmp_path / "x.db"), name="x")
    assert isinstance(a, SystemAdapter) and a.name == "x"
    register_adapter("custom_memory", "erpsync.adapters.memory:MemoryAdapter")
    assert isinstance(get_adapter("custom_memory"), MemoryAdapter)
    assert {"memory", "salesforce", "exact_online", "quickbooks"} <= set(adapter_names())
    with pytest.raises(ConfigError, match="unknown adapter 'nope'"):
        get_adapter("nope")
    with pytest.raises(ConfigError, match="cannot be imported"):
        get_adapter("erpsync.nothing:Here")


def test_upsert_assigns_ids_enforces_constraints_per_row(system):
    rows = pd.DataFrame(
        [
            {"_source_key": "s1", "Name": "Acme", "Email": "a@acme.test", "SalesforceId": "001A"},
            {"_source_key": "s2", "Name": "N" * 42, "Email": None, "SalesforceId": "001B"},
            {"_source_key": "s3", "Name": None, "Email": "x@y.test", "SalesforceId": "001C"},
        ]
    )
    res = system.upsert("Customer", rows, identity="SalesforceId")
    unknown = pd.DataFrame(
        [
            {"_source_key": "s4", "Name": "Ok", "SalesforceId": "001D", "Nope": 1},
        ]
    )
    infinite = system.upsert(
        "Customer",
        pd.DataFrame([{"_source_key": "s5", "Name": "Inf", "Email": float("inf")}]),
        identity="SalesforceId",
    )
    assert infinite.loc[0, "error_code"] == "NUMBER_OUTSIDE_VALID_RANGE"
    res = pd.concat([res, system.upsert("Customer", unknown, identity="SalesforceId")], ignore_index=True)
    assert res["_source_key"].tolist() == ["s1", "s2", "s3", "s4"]
    assert res["action"].tolist() == ["created", "failed", "failed", "failed"]
    assert res["error_code"].tolist()[1:] == ["STRING_TOO_LONG", "REQUIRED_FIELD_MISSING", "INVALID_FIELD"]
    assert "42 characters, at most 41" in res.loc[1, "error"]
    created_id = res.loc[0, "target_id"]
    assert created_id.startswith("CUS") and system.get("Customer", created_id)["Name"] == "Acme"

    # Same identity again: an update of that record, not a second one.
    again = system.upsert(
        "Customer",
        pd.DataFrame([{"_source_key": "s1", "Name": "Acme Ltd", "SalesforceId": "001A"}]),
        identity="SalesforceId",
    )
    assert again.loc[0, "action"] == "updated" and again.loc[0, "target_id"] == created_id
    assert len(system.all("Customer")) == 1
    assert [w["action"] for w in system.write_log("Customer")] == ["created", "updated"]
    # By target id; a read-only field refused on update; a vanished record refused.
    calls = [
        {"_source_key": "s1", "_target_id": created_id, "Email": "new@acme.test"},
        {"_source_key": "s1", "_target_id": created_id, "Balance": 3},
        {"_source_key": "s9", "_target_id": "CUS999999", "Email": "z@z.test"},
    ]
    res = pd.concat(
        [system.upsert("Customer", pd.DataFrame([c]), identity="SalesforceId") for c in calls],
        ignore_index=True,
    )
    assert res["action"].tolist() == ["updated", "failed", "failed"]
    assert res["error_code"].tolist()[1:] == ["INVALID_FIELD_FOR_INSERT_UPDATE", "ENTITY_IS_DELETED"]


def test_read_window_chunks_and_keys(system, tmp_path):
    system.seed("Customer", [{"Name": f"C{i}", "SalesforceId": f"S{i}"} for i in range(5)], modified=T0)
    system.seed("Customer", [{"Name": "late", "SalesforceId": "S9"}], modified=T0 + timedelta(hours=2))
    chunks = list(system.read("Customer", window=ReadWindow(T0, T0 + timedelta(hours=1)), chunk_rows=2))
    assert [len(c) for c in chunks] == [2, 2, 1]
    everything = pd.concat(system.read("Customer", columns=["Name"]))
    assert everything.columns.tolist() == ["Name"] and len(everything) == 6
    found = system.read_by_keys("Customer", "SalesforceId", ["S1", "S9", "missing"], columns=["Name"])
    assert sorted(found["Name"]) == ["C1", "late"] and "ListID" in found.columns
    with pytest.raises(ConfigError, match="has no field"):
        list(system.read("Customer", columns=["Bogus"]))
    with pytest.raises(ConfigError, match="has no object 'Invoice'"):
        system.describe("Invoice")
    # A second handle on the same file (another task process) sees the same system.
    other = MemoryAdapter(tmp_path / "qb.db")
    assert len(other.all("Customer")) == 6
    summary = system.call_log.summary()
    assert summary["by_method"]["read"] >= 4 and summary["total"] == len(system.call_log.calls)


def test_injected_crash_fails_midway_and_survives_processes(system, tmp_path):
    MemoryAdapter(tmp_path / "qb.db").crash_after("Customer", 2)
    rows = pd.DataFrame(
        [{"_source_key": f"s{i}", "Name": f"N{i}", "SalesforceId": f"X{i}"} for i in range(4)]
    )
    with pytest.raises(RetriableSourceError, match="dropped while writing Customer"):
        system.upsert("Customer", rows, identity="SalesforceId")
    assert len(system.all("Customer")) == 2, "the first two rows were written before the crash"
    res = system.upsert("Customer", rows, identity="SalesforceId")
    assert res["action"].tolist() == ["updated", "updated", "created", "created"]
