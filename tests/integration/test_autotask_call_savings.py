"""What the Autotask flow no longer asks twice, and what it still always asks, counted at the simulator.

Each adapter below stands for one task of a run (a new adapter and hook, the same ledger file), as in
the DAG: plan, then upsert, then verify.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from erpsync.adapters.autotask import AutotaskAdapter
from erpsync.errors import ConfigError
from erpsync.hooks import autotask as at_hook


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
def task(sim):
    """A function building the adapter of 'the next task' (closed afterwards)."""
    built = []

    def make(**hook_kwargs) -> AutotaskAdapter:
        hook = at_hook.AutotaskHook("autotask_default", **hook_kwargs)
        built.append(AutotaskAdapter("autotask_default", hook=hook))
        return built[-1]

    yield make
    for adapter in built:
        adapter.hook.close()


def _queries(sim, entity: str) -> int:
    return sim.admin("GET", "stats")["calls"].get(f"POST {entity}/query", 0)


def _contact(key: str, company: str, first: str) -> dict:
    return {
        "_source_key": key,
        "udf.SalesforceContactID": key,
        "company.SalesforceCompanyID": company,
        "firstName": first,
        "lastName": "Tester",
        "isActive": 1,
    }


@pytest.fixture
def company(sim, task):
    """One company holding Salesforce id 001HOME, written by a setup task."""
    setup = task()
    res = setup.upsert(
        "Companies",
        pd.DataFrame(
            [
                {
                    "_source_key": "001HOME",
                    "udf.SalesforceCompanyID": "001HOME",
                    "companyName": "Savings Home BV",
                    "companyType": 1,
                    "ownerResourceID": sim.info["default_account_manager_id"],
                    "phone": "+31 20 555 0100",
                }
            ]
        ),
        identity="udf.SalesforceCompanyID",
    )
    assert res.loc[0, "action"] == "created"
    setup.describe("Contacts")  # creates the contact UDF now (creating a UDF empties every cache)
    return int(res.loc[0, "target_id"])


def _plan_read(task) -> None:
    """What the plan does for a changed contact of 001HOME: read its company's identity by id."""
    plan = task()
    plan._ids_by_identity("Companies", "Salesforce Company ID", ["001HOME"])


def test_upsert_takes_the_reference_the_plan_just_read_and_verify_still_reads_it(sim, task, company):
    _plan_read(task)
    before = _queries(sim, "Companies")
    upsert = task()
    res = upsert.upsert(
        "Contacts", pd.DataFrame([_contact("003A", "001HOME", "Ann")]), identity="udf.SalesforceContactID"
    )
    assert res.loc[0, "action"] == "created"
    assert _queries(sim, "Companies") == before  # the company's id came from the plan's read
    assert upsert.hook.cache_hits.get("ids") == 1
    # Verify reads the written contact and its company's identity back from Autotask.
    verify = task()
    found = verify.read_by_keys(
        "Contacts", "udf.SalesforceContactID", ["003A"], columns=["company.SalesforceCompanyID"]
    )
    assert found["company.SalesforceCompanyID"].tolist() == ["001HOME"]
    assert _queries(sim, "Companies") == before + 1


def test_a_pair_gone_stale_between_plan_and_upsert_is_caught_by_verify(sim, task, company):
    """A user clears the company's UDF after the plan read it: the upsert may still write under that
    company (minutes-old pair), but verify reads the reference fresh and sees the difference."""
    _plan_read(task)
    with sim.api() as api:
        resp = api.patch(
            "Companies",
            json={"id": company, "userDefinedFields": [{"name": "Salesforce Company ID", "value": None}]},
        )
    assert resp.status_code == 200, resp.text
    upsert = task()
    res = upsert.upsert(
        "Contacts", pd.DataFrame([_contact("003B", "001HOME", "Bob")]), identity="udf.SalesforceContactID"
    )
    assert res.loc[0, "action"] == "created"  # under the company the plan saw holding 001HOME
    verify = task()
    found = verify.read_by_keys(
        "Contacts", "udf.SalesforceContactID", ["003B"], columns=["company.SalesforceCompanyID"]
    )
    assert len(found) == 1 and pd.isna(found["company.SalesforceCompanyID"].iloc[0]), found


def test_pairs_older_than_the_identity_ttl_are_read_again(sim, task, company):
    _plan_read(task)
    before = _queries(sim, "Companies")
    later = task(clock=lambda: time.time() + 301)  # past the 5 minutes
    res = later.upsert(
        "Contacts", pd.DataFrame([_contact("003C", "001HOME", "Cas")]), identity="udf.SalesforceContactID"
    )
    assert res.loc[0, "action"] == "created"
    assert _queries(sim, "Companies") == before + 1 and not later.hook.cache_hits.get("ids")


def test_a_create_always_looks_its_identity_up_fresh(sim, task, company):
    """Never posted twice: the identity read before a create is never taken from a cache."""
    upsert = task()
    upsert.upsert(
        "Contacts", pd.DataFrame([_contact("003D", "001HOME", "Dee")]), identity="udf.SalesforceContactID"
    )
    before = _queries(sim, "Contacts")
    again = task()
    res = again.upsert(
        "Contacts", pd.DataFrame([_contact("003D", "001HOME", "Dee")]), identity="udf.SalesforceContactID"
    )
    assert res.loc[0, "action"] == "updated"  # found by its UDF, not created again
    assert _queries(sim, "Contacts") == before + 1


def test_lookups_read_resources_once_per_task_and_countries_once_a_day(sim, task):
    first = task()
    first.describe("Resources")
    first.describe("Countries")
    before = (_queries(sim, "Resources"), _queries(sim, "Countries"))
    names = next(iter(first.read("Resources", columns=["firstName", "lastName", "isActive"])))
    users = next(iter(first.read("Resources", columns=["userName", "isActive"])))
    countries = next(iter(first.read("Countries", columns=["name"])))
    assert len(names) == len(users) > 0 and set(users.columns) == {"id", "userName", "isActive"}
    assert len(countries) > 0
    assert (_queries(sim, "Resources"), _queries(sim, "Countries")) == (before[0] + 1, before[1] + 1)
    # The next run's map task: Resources again (people change), Countries from the ledger.
    nxt = task(clock=lambda: time.time() + 1200)
    list(nxt.read("Resources", columns=["firstName", "lastName", "isActive"]))
    assert next(iter(nxt.read("Countries", columns=["name"]))).equals(countries)
    assert (_queries(sim, "Resources"), _queries(sim, "Countries")) == (before[0] + 2, before[1] + 1)
    with pytest.raises(ConfigError, match="has no field"):
        list(nxt.read("Resources", columns=["noSuchField"]))
