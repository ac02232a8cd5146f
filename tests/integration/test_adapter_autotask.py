"""The Autotask adapter against the Autotask simulator over HTTPS (sandbox CA), through the real hook.

One simulator per test (function scope) where a test counts calls or needs the tenant without the UDFs;
the connection comes from `AIRFLOW_CONN_AUTOTASK_DEFAULT`, as in production.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from erpsync.adapters import get_adapter
from erpsync.adapters.autotask import COMPANY_UDF, CONTACT_UDF, AutotaskAdapter
from erpsync.adapters.base import SystemAdapter
from erpsync.hooks import autotask as at_hook

pytestmark = pytest.mark.integration


@pytest.fixture
def sim(tmp_path, monkeypatch):
    from erpsync.sandbox.autotask.testing import running_autotask

    at_hook._ZONES.clear()
    with running_autotask(tmp_path / "at", threshold_latency_scale=0) as running:
        data = running.connection()
        data["extra"] = {**data["extra"], "ledger_path": str(tmp_path / "ledger.sqlite")}
        monkeypatch.setenv("AIRFLOW_CONN_AUTOTASK_DEFAULT", json.dumps(data))
        yield running
    at_hook._ZONES.clear()


@pytest.fixture
def adapter(sim):
    a = get_adapter("autotask", conn_id="autotask_default")
    yield a
    a.hook.close()


def _udfs(sim, entity: str) -> list[str]:
    import httpx

    with httpx.Client(base_url=sim.zone_url + "V1.0/", headers=sim.headers(), verify=sim.ca_bundle) as c:
        return [f["name"] for f in c.get(f"{entity}/entityInformation/userDefinedFields").json()["fields"]]


def _company_row(key: str, name: str, sim, **fields) -> dict:
    return {
        "_source_key": key,
        "udf.SalesforceCompanyID": key,
        "companyName": name,
        "companyType": 1,
        "ownerResourceID": sim.info["default_account_manager_id"],
        "phone": "+31 20 555 0100",
        **fields,
    }


def test_registered_and_implements_the_protocol(adapter):
    assert isinstance(adapter, AutotaskAdapter)
    assert isinstance(adapter, SystemAdapter)


def test_describe_creates_the_missing_identity_udfs_once(sim, adapter):
    assert COMPANY_UDF not in _udfs(sim, "Companies")
    meta = adapter.describe("Companies")
    assert COMPANY_UDF in _udfs(sim, "Companies")
    assert CONTACT_UDF not in _udfs(sim, "Companies")
    assert {"udf.SalesforceCompanyID", "parent.SalesforceCompanyID", "companyName"} <= set(meta.fields)
    assert meta.fields["companyName"].length == 100 and meta.fields["companyName"].required
    assert meta.id_field == "id" and meta.modified_field == "lastTrackedModifiedDateTime"
    contacts = adapter.describe("Contacts")
    assert CONTACT_UDF in _udfs(sim, "Contacts")
    assert "company.SalesforceCompanyID" in contacts.fields
    # A second adapter (the next task) finds them and creates nothing.
    again = AutotaskAdapter("autotask_default")
    again.describe("Companies")
    assert "create_udf" not in again.call_log.summary()["by_method"]
    assert _udfs(sim, "Companies").count(COMPANY_UDF) == 1


def test_picklists_read_as_tables_of_active_values(adapter):
    segments = next(adapter.read("Companies.marketSegmentID"))
    assert set(segments.columns) == {"value", "label"}
    labels = dict(zip(segments["label"], segments["value"], strict=True))
    assert labels["Technology"] == 14
    assert "Transportation" not in labels  # inactive: cannot be set on a record
    types = next(adapter.read("Companies.companyType"))
    assert "Customer" in set(types["label"])


def test_resources_read_whole_for_the_account_manager_lookup(adapter):
    frame = pd.concat(adapter.read("Resources", columns=["firstName", "lastName", "isActive", "userName"]))
    names = set(zip(frame["firstName"], frame["lastName"], strict=True))
    assert ("Angela", "Richer") in names and ("eva", "smit") in names


def test_create_then_update_by_identity_then_read_back(sim, adapter):
    rows = pd.DataFrame([_company_row("001AA", "Adapter Test BV", sim, city="Delft", state="Zuid-Holland")])
    res = adapter.upsert("Companies", rows, identity="udf.SalesforceCompanyID")
    assert res.loc[0, "action"] == "created", res.to_dict("records")
    new_id = res.loc[0, "target_id"]
    found = adapter.read_by_keys(
        "Companies", "udf.SalesforceCompanyID", ["001AA"], columns=["companyName", "udf.SalesforceCompanyID"]
    )
    assert found.to_dict("records") == [
        {"id": int(new_id), "companyName": "Adapter Test BV", "udf.SalesforceCompanyID": "001AA"}
    ]
    # Without a target id the identity finds the record: updated, not created twice.
    again = pd.DataFrame([_company_row("001AA", "Adapter Test B.V.", sim)])
    res2 = adapter.upsert("Companies", again, identity="udf.SalesforceCompanyID")
    assert (res2.loc[0, "action"], res2.loc[0, "target_id"]) == ("updated", new_id)
    assert (
        adapter.read_by_keys("Companies", "id", [new_id], columns=["companyName", "city"]).iloc[0].to_dict()
        == {"id": int(new_id), "companyName": "Adapter Test B.V.", "city": "Delft"}  # empty leaves alone
    )


def test_match_fields_read_case_insensitively_by_name(sim, adapter):
    frame = adapter.read_by_keys(
        "Companies",
        "companyName",
        ["noorderlicht ict"],
        columns=["companyName", "address1", "city", "state"],
        casefold=True,
    )
    assert len(frame) >= 1 and set(frame["companyName"].str.casefold()) == {"noorderlicht ict"}


def test_parents_are_written_before_children_and_resolved_through_their_identity(sim, adapter):
    rows = pd.DataFrame(
        [
            _company_row("001CHILD", "Child BV", sim, **{"parent.SalesforceCompanyID": "001PARENT"}),
            _company_row("001PARENT", "Parent Holding", sim),
        ]
    )
    res = adapter.upsert("Companies", rows, identity="udf.SalesforceCompanyID")
    assert list(res["action"]) == ["created", "created"], res.to_dict("records")
    child_id, parent_id = res["target_id"]
    assert int(parent_id) < int(child_id)  # the parent went first
    back = adapter.read_by_keys(
        "Companies", "id", [child_id], columns=["parentCompanyID", "parent.SalesforceCompanyID"]
    )
    assert back.iloc[0]["parentCompanyID"] == int(parent_id)
    assert back.iloc[0]["parent.SalesforceCompanyID"] == "001PARENT"


def test_parent_cycles_are_refused_and_unknown_parents_wait(sim, adapter):
    rows = pd.DataFrame(
        [
            _company_row("001A", "Cycle A", sim, **{"parent.SalesforceCompanyID": "001B"}),
            _company_row("001B", "Cycle B", sim, **{"parent.SalesforceCompanyID": "001A"}),
            _company_row("001C", "Orphan C", sim, **{"parent.SalesforceCompanyID": "001NOWHERE"}),
            _company_row("001D", "Fine D", sim),
        ]
    )
    res = adapter.upsert("Companies", rows, identity="udf.SalesforceCompanyID")
    assert list(res["error_code"][:3]) == ["PARENT_CYCLE", "PARENT_CYCLE", "PARENT_NOT_FOUND"]
    assert "cycle" in res.loc[0, "error"] and (
        "001A -> 001B" in res.loc[0, "error"] or "001B -> 001A" in res.loc[0, "error"]
    )
    assert res.loc[3, "action"] == "created"
    assert adapter.read_by_keys("Companies", "udf.SalesforceCompanyID", ["001A", "001B", "001C"]).empty


def test_contacts_go_under_their_company_found_by_its_salesforce_id(sim, adapter):
    adapter.upsert(
        "Companies",
        pd.DataFrame([_company_row("001CO", "Contact Home BV", sim)]),
        identity="udf.SalesforceCompanyID",
    )
    contacts = pd.DataFrame(
        [
            {
                "_source_key": "003X",
                "udf.SalesforceContactID": "003X",
                "company.SalesforceCompanyID": "001CO",
                "firstName": "Ada",
                "lastName": "Lovelace",
                "isActive": 1,
            },
            {
                "_source_key": "003Y",
                "udf.SalesforceContactID": "003Y",
                "company.SalesforceCompanyID": "001NOTHERE",
                "firstName": "Alan",
                "lastName": "Turing",
                "isActive": 1,
            },
        ]
    )
    res = adapter.upsert("Contacts", contacts, identity="udf.SalesforceContactID")
    assert res.loc[0, "action"] == "created"
    assert (res.loc[1, "action"], res.loc[1, "error_code"]) == ("failed", "COMPANY_NOT_FOUND")
    # The match rule's read: by company (its Salesforce id), then first and last name.
    found = adapter.read_by_keys(
        "Contacts",
        "company.SalesforceCompanyID",
        ["001CO"],
        columns=["company.SalesforceCompanyID", "firstName", "lastName", "udf.SalesforceContactID"],
    )
    assert found.drop(columns="id").to_dict("records") == [
        {
            "company.SalesforceCompanyID": "001CO",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "udf.SalesforceContactID": "003X",
        }
    ]


def test_reads_by_key_are_batched_by_500(sim, adapter):
    adapter.describe("Companies")
    before = adapter.hook.api_calls
    adapter.read_by_keys("Companies", "udf.SalesforceCompanyID", [f"001K{i:05d}" for i in range(1200)])
    assert adapter.hook.api_calls - before == 3  # 500 + 500 + 200


def test_window_read_filters_on_the_modification_time(sim, adapter):
    from datetime import UTC, datetime

    adapter.upsert(
        "Companies",
        pd.DataFrame([_company_row("001W", "Window BV", sim)]),
        identity="udf.SalesforceCompanyID",
    )
    recent = pd.concat(
        adapter.read(
            "Companies",
            window=adapter_window(datetime(2024, 1, 1, tzinfo=UTC)),
            columns=["companyName", "udf.SalesforceCompanyID"],
        )
    )
    assert "Window BV" in set(recent["companyName"])
    assert "Noorderlicht ICT" not in set(recent["companyName"])  # seeded in 2023


def adapter_window(start):
    from erpsync.adapters.base import ReadWindow

    return ReadWindow(start, None)
