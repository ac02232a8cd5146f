"""The deferrable QuickBooks upsert in a real Airflow `dag.test()` run (the trigger runs in line there):
plan (real PlanOperator over the QuickBooks adapter) -> QuickBooksUpsertOperator -> VerifyOperator, with
the bridge over real HTTP, the Web Connector simulator polling it and the company-file simulator."""

from __future__ import annotations

import pandas as pd
import pytest

from erpsync.chunks import ChunkWriter, read_chunks
from erpsync.mapping import load_flow
from erpsync.operators._steps import StepContext, map_step
from erpsync.state import StateStore
from tests.qb_live import live_quickbooks

FLOW = "sf_accounts_to_qb_customers"
CONN = "qbwc_bridge_e2e"


def account(i: int, **changes) -> dict:
    row = {
        "Id": f"001E2E{i:012d}",
        "Name": f"E2E Account {i}",
        "AccountNumber": f"A-{i}",
        "BillingStreet": f"Main Street {i}\nUnit {i}",
        "BillingCity": "Utrecht",
        "BillingState": "UT",
        "BillingPostalCode": "3511 AB",
        "BillingCountry": "Netherlands",
        "ShippingStreet": None,
        "ShippingCity": None,
        "ShippingState": None,
        "ShippingPostalCode": None,
        "ShippingCountry": None,
        "Phone": "+31 30 123 4567",
        "Fax": None,
        "Email": f"Owner{i}@Example.test",
        "Owner.FirstName": "Ada",
        "Owner.LastName": "Lovelace",
        "Type": "Customer - Direct",
        "Description": f"account {i}",
    }
    row.update(changes)
    return row


def mapped_manifest(tmp_path, state_url: str, accounts: list[dict], name: str) -> dict:
    """Map Salesforce-shaped accounts with the flow's real mapping (map_step), as the map task would."""
    staging = tmp_path / name
    writer = ChunkWriter(staging, "extract")
    writer.write(pd.DataFrame(accounts))
    ctx = StepContext(
        flow=FLOW, dag_id="qb_upsert_probe", run_id=name, staging=staging, store=StateStore(state_url)
    )
    lookups = {"sales_reps": pd.DataFrame(columns=["FirstName", "LastName", "Initial"])}
    return map_step(ctx, load_flow(FLOW), writer.close(), lookups=lookups).to_xcom()


@pytest.fixture
def live(tmp_path, monkeypatch):
    with live_quickbooks(tmp_path / "qb") as stack:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", stack.connection_json())
        yield stack


def run(dag, conf: dict):
    dr = dag.test(run_conf=conf)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    return dr, states


def xcom(dr, task_id: str):
    return dr.get_task_instance(task_id).xcom_pull(task_ids=task_id)


def test_deferred_upsert_lands_customers_then_a_rerun_writes_nothing(test_dag, live, tmp_path):
    dag = test_dag("qb_upsert_probe", "qb_upsert_probe.py")
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    accounts = [account(i) for i in range(3)]
    conf = {"state_url": state_url, "mapped": mapped_manifest(tmp_path, state_url, accounts, "map1")}

    dr, states = run(dag, conf)
    assert dr.state == "success", states
    upsert = xcom(dr, "upsert")
    assert upsert["stage"] == "upsert"
    assert upsert["extra"]["counts"]["created"] == 3 and upsert["extra"]["counts"]["failed"] == 0
    # write + dataext: two bridge jobs, each waited for in the trigger
    assert len(upsert["extra"]["jobs"]) == 2
    assert xcom(dr, "verify")["checked"] == 3 and xcom(dr, "verify")["differences"] == 0

    customers = {c["Name"]: c for c in live.customers()}
    for a in accounts:
        c = customers[a["Name"]]
        assert c["BillAddress"]["City"] == "Utrecht" and c["BillAddress"]["Addr2"] == f"Unit {a['Name'][-1]}"
        assert c["Email"] == a["Email"].lower() and c["SalesRepRef"]["FullName"] == "ADM"
        assert live.data_ext("SalesforceId", c["ListID"]) == a["Id"]

    # The ListID write-back file: Salesforce Id -> ListID.
    writeback = pd.concat(list(read_chunks(upsert["extra"]["writeback"])))
    assert dict(zip(writeback["_source_key"], writeback["target_id"], strict=True)) == {
        a["Id"]: customers[a["Name"]]["ListID"] for a in accounts
    }
    identities = StateStore(state_url).get_identities(FLOW, [a["Id"] for a in accounts])
    assert {k: v.target_id for k, v in identities.items()} == {
        a["Id"]: customers[a["Name"]]["ListID"] for a in accounts
    }

    adds, mods = live.customer_adds(), live.customer_mods()
    dr, states = run(dag, {**conf, "mapped": mapped_manifest(tmp_path, state_url, accounts, "map2")})
    assert dr.state == "success", states
    again = xcom(dr, "upsert")["extra"]
    assert again["counts"]["skipped"] == 3 and again["counts"]["created"] == again["counts"]["updated"] == 0
    assert again["jobs"] == []
    assert (live.customer_adds(), live.customer_mods()) == (adds, mods)
    assert len(live.customers()) == 3


def test_a_change_updates_one_customer_and_a_refused_row_is_quarantined_while_others_land(
    test_dag, live, tmp_path
):
    dag = test_dag("qb_upsert_probe", "qb_upsert_probe.py")
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    # A customer already uses the name the third account maps to (QuickBooks names are unique: 3100).
    live.qb.process(
        '<?xml version="1.0"?><?qbxml version="13.0"?><QBXML><QBXMLMsgsRq onError="stopOnError">'
        "<CustomerAddRq><CustomerAdd><Name>Already There</Name></CustomerAdd></CustomerAddRq>"
        "</QBXMLMsgsRq></QBXML>"
    )
    accounts = [account(0), account(1), account(2, Name="Already There", Email="x@there.test")]
    conf = {"state_url": state_url, "mapped": mapped_manifest(tmp_path, state_url, accounts, "m1")}
    dr, states = run(dag, conf)
    assert dr.state == "success", states
    counts = xcom(dr, "upsert")["extra"]["counts"]
    assert (counts["created"], counts["failed"]) == (2, 1)
    store = StateStore(state_url)
    [entry] = store.quarantine_entries(FLOW)
    assert entry["source_key"] == accounts[2]["Id"] and entry["stage"] == "upsert" and entry["rule"] == "3100"
    assert "Already There" in entry["message"] and "already in use" in entry["message"]

    mods = live.customer_mods()
    accounts[1] = account(1, BillingCity="Delft")
    dr, states = run(dag, {**conf, "mapped": mapped_manifest(tmp_path, state_url, accounts, "m2")})
    assert dr.state == "success", states
    counts = xcom(dr, "upsert")["extra"]["counts"]
    assert (counts["updated"], counts["skipped"], counts["failed"]) == (1, 1, 1)
    assert live.customer_mods() == mods + 1
    city = {c["Name"]: c["BillAddress"]["City"] for c in live.customers() if "BillAddress" in c}
    assert city["E2E Account 1"] == "Delft" and city["E2E Account 0"] == "Utrecht"
