"""EnsureExactCustomersOperator in a real Airflow (dag.test) against the Exact simulator over sockets:
the first run creates a company debtor with its contact and a person debtor and reports a bad row;
the rerun creates nothing; a changed address is updated."""

from __future__ import annotations

import uuid

import pytest

from erpsync.sandbox.exact.testing import running_exact

DIV = 1001234


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    with running_exact(
        tmp_path_factory.mktemp("exact-e2e"), minutely_limit=100_000, daily_limit=1_000_000, error_budget=0,
        item_count=20,
    ) as running:  # fmt: skip
        yield running


def _order(n, email, *, company=None, city="Utrecht", status="Activated"):
    return {
        "Id": f"801E2E{n:03d}",
        "Status": status,
        "BillToContact.Email": email,
        "BillToContact.FirstName": "Noor",
        "BillToContact.LastName": f"Bakker {n}",
        "BillToContact.Phone": None,
        "Account.Name": company,
        "BillingStreet": "Oudegracht 10",
        "BillingCity": city,
        "BillingPostalCode": "3511 AB",
        "BillingCountry": "NL",
    }


def _xcom(run, task_id):
    return run.get_task_instance(task_id).xcom_pull(task_ids=task_id)


def test_customer_step_in_airflow_creates_then_finds_then_updates(test_dag, exact, monkeypatch, tmp_path):
    monkeypatch.setenv(
        "AIRFLOW_CONN_EXACT_E2E",
        exact.connection_json(
            refresh_token=exact.new_consent(), token_store_url=f"sqlite:///{tmp_path / 't.db'}"
        ),
    )
    dag = test_dag("exact_customers_probe", "exact_customers_probe.py")
    tag = uuid.uuid4().hex[:6]
    company, person = f"inkoop.{tag}@bedrijf.example", f"noor.{tag}@mail.example"
    orders = [
        _order(1, company, company=f"Bedrijf {tag} BV"),
        _order(2, person),
        _order(3, company.upper(), company=f"Bedrijf {tag} BV"),  # the same customer again
        _order(4, "geen-email", company="Kapot BV"),
        _order(5, f"draft.{tag}@x.example", status="Draft"),
    ]
    run = dag.test(run_conf={"orders": orders, "conn_id": "exact_e2e"})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    out = _xcom(run, "ensure_customers")
    assert (out["created"], out["updated"], out["unchanged"], out["failed"]) == (2, 0, 0, 1), out
    assert out["orders_filtered"] == 1 and out["customers"] == 3
    assert len(out["errors"]) == 1 and "'geen-email' is not an e-mail address" in out["errors"][0]
    div = exact.simulator.store.divisions[DIV]
    accounts = {a["Email"].casefold(): a for a in div.tables["crm/Accounts"].values() if a.get("Email")}
    firm, private = accounts[company], accounts[person]
    assert firm["Name"] == f"Bedrijf {tag} BV" and private["Name"] == "Noor Bakker 2"
    assert firm["MainContact"] and div.tables["crm/Contacts"][firm["MainContact"]]["LastName"] == "Bakker 3"
    assert f"draft.{tag}@x.example" not in accounts

    again = dag.test(run_conf={"orders": orders, "conn_id": "exact_e2e"})
    out = _xcom(again, "ensure_customers")
    assert again.state == "success" and (out["created"], out["updated"], out["unchanged"]) == (0, 0, 2)

    moved = [_order(2, person, city="Zwolle")]
    third = dag.test(run_conf={"orders": moved, "conn_id": "exact_e2e"})
    out = _xcom(third, "ensure_customers")
    assert (out["created"], out["updated"]) == (0, 1) and div.tables["crm/Accounts"][private["ID"]][
        "City"
    ] == "Zwolle"
    assert div.tables["crm/Accounts"][private["ID"]]["Code"] == private["Code"]
