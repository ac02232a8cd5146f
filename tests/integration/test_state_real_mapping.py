"""The shipped sf_accounts_to_qb_customers mapping through every step, over file-backed systems:
lookups read from the target, a mapping rejection and a target refusal are quarantined at their
stage while the other rows go through, and both leave quarantine once fixed in the source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from erpsync.adapters import FieldMeta
from erpsync.adapters.memory import MemoryAdapter
from erpsync.mapping import default_mappings_dir, load_flow
from erpsync.operators import _steps as steps
from erpsync.state import StateStore

FLOW = "sf_accounts_to_qb_customers"
DAY = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def systems(tmp_path):
    mapping = load_flow(FLOW, default_mappings_dir())
    sf = MemoryAdapter(tmp_path / "sf.db", name="salesforce")
    sf.define(
        "Account", [FieldMeta(f) for f in mapping.source.fields if f != "Id"], modified_field="SystemModstamp"
    )
    qb = MemoryAdapter(tmp_path / "qb.db", name="quickbooks")
    lengths = {name: spec.max_length for name, spec in mapping.fields.items()}
    lengths["AccountNumber"] = 10  # this company file allows less than the mapping: upsert refuses
    qb.define("Customer", [FieldMeta(n, length=lengths[n]) for n in mapping.fields], id_field="ListID")
    qb.define(
        "SalesRep", [FieldMeta("FirstName"), FieldMeta("LastName"), FieldMeta("Initial")], id_field="ListID"
    )
    qb.seed("SalesRep", [{"FirstName": "Jane", "LastName": "Doe", "Initial": "JD"}])
    return mapping, sf, qb, StateStore(f"sqlite:///{tmp_path / 'state.db'}")


def _account(i, **over):
    row = {
        "Id": f"0015g{i:013d}",
        "Name": f"Customer {i} B.V.",
        "AccountNumber": f"A-{i}",
        "BillingStreet": f"Main street {i}\nBuilding B",
        "BillingCity": "Utrecht",
        "BillingState": "UT",
        "Phone": "+31 30 123 4567",
        "Email": f"info{i}@customer.test",
        "Owner.FirstName": "Jane",
        "Owner.LastName": "Doe",
        "Type": "Customer - Direct",
        "Description": "key account",
    }
    return {**row, **over}


def _run(tmp_path, mapping, sf, qb, store, run_id, day):
    ctx = steps.StepContext(
        flow=FLOW,
        dag_id=FLOW,
        run_id=run_id,
        staging=tmp_path / run_id,
        store=store,
        interval_start=day,
        interval_end=day + timedelta(days=1),
    )
    out = {"extract": steps.extract_step(ctx, mapping, sf)}
    out["check_source"] = steps.check_step(ctx, mapping, out["extract"], side="source")
    lookups = steps.load_lookups(mapping, {"quickbooks": qb})
    out["map"] = steps.map_step(ctx, mapping, out["check_source"], lookups=lookups)
    out["check_target"] = steps.check_step(ctx, mapping, out["map"], side="target")
    out["plan"] = steps.plan_step(ctx, mapping, out["check_target"], qb)
    out["upsert"] = steps.upsert_step(ctx, mapping, out["plan"], qb)
    out["verify"] = steps.verify_step(ctx, mapping, out["upsert"], qb)
    out["report"] = steps.report_step(
        ctx, mapping, {k: getattr(v, "to_xcom", lambda v=v: v)() for k, v in out.items()}
    )
    return out


def test_shipped_mapping_runs_and_quarantines_per_stage(tmp_path, systems):
    mapping, sf, qb, store = systems
    sf.seed(
        "Account",
        [
            _account(1),
            _account(2, **{"Owner.FirstName": "Nobody", "Type": "Something new"}),
            _account(3, Phone="+31 30 123 4567 ext. 8899"),  # 25 characters: the mapping rejects it
            _account(4, AccountNumber="ACCOUNT-000000004"),  # longer than the company file allows
        ],
        modified=DAY + timedelta(hours=1),
    )
    out = _run(tmp_path, mapping, sf, qb, store, "day1", DAY)
    customers = {c["dataext.SalesforceId"]: c for c in qb.all("Customer")}
    assert sorted(customers) == [_account(1)["Id"], _account(2)["Id"]]
    first, second = customers[_account(1)["Id"]], customers[_account(2)["Id"]]
    assert first["SalesRepRef.FullName"] == "JD" and second["SalesRepRef.FullName"] == "ADM"
    assert first["CustomerTypeRef.FullName"] == "Commercial" and second["CustomerTypeRef.FullName"] == "Other"
    assert first["BillAddress.Addr1"] == "Main street 1" and first["BillAddress.Addr2"] == "Building B"

    entries = {e["source_key"]: e for e in store.quarantine_entries(FLOW)}
    assert entries[_account(3)["Id"]]["stage"] == "map" and entries[_account(3)["Id"]]["column"] == "Phone"
    refused = entries[_account(4)["Id"]]
    assert refused["stage"] == "upsert" and refused["rule"] == "STRING_TOO_LONG"
    assert "AccountNumber: 17 characters, at most 10 allowed" in refused["message"]
    assert out["upsert"].extra["counts"]["failed"] == 1
    report = out["report"]
    assert report["counts"]["created"] == 2 and report["counts"]["failed"] == 1
    assert report["counts"]["quarantined"] == 2
    assert {(q["stage"], q["rule"]) for q in report["quarantine"]} == {
        ("map", entries[_account(3)["Id"]]["rule"]),
        ("upsert", "STRING_TOO_LONG"),
    }

    # Both are fixed in Salesforce; the next run retries them from quarantine and lets them through.
    sf.change("Account", _account(3)["Id"], {"Phone": "+31 30 123 4568"}, modified=DAY + timedelta(hours=2))
    sf.change("Account", _account(4)["Id"], {"AccountNumber": "A-4"}, modified=DAY + timedelta(hours=2))
    out = _run(tmp_path, mapping, sf, qb, store, "day2", DAY + timedelta(days=1))
    assert out["extract"].extra["retried"] == 2
    assert out["upsert"].extra["counts"]["created"] == 2
    assert store.quarantine_entries(FLOW) == []
    assert out["report"]["resolved"] == 2
    assert len(qb.write_log("Customer")) == 4
