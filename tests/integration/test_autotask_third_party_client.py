"""A published Autotask REST client nobody here wrote (py-autotask, PyPI) talks to the simulator.

It proves the simulator's wire (three headers, `{zone}/v1.0/...` paths in any casing, `{"items": ...}`,
`{"itemId": n}`) is the one real clients expect, and that what it writes the hook reads back.
py-autotask's zone discovery is fixed to the real `webservices.autotask.net`, so it gets the zone URL.
"""

from __future__ import annotations

import json

import pytest

from erpsync.hooks import autotask as at
from erpsync.hooks.autotask import AutotaskHook


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from erpsync.sandbox.autotask.testing import running_autotask

    with running_autotask(tmp_path_factory.mktemp("autotask"), threshold_latency_scale=0) as running:
        yield running


def test_py_autotask_reads_and_writes_what_the_hook_sees(sim, monkeypatch, tmp_path):
    from py_autotask import AutotaskClient
    from py_autotask.auth import AutotaskAuth
    from py_autotask.types import AuthCredentials

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim.ca_bundle)  # requests' way to trust the sandbox CA
    creds = AuthCredentials(
        username=sim.username,
        integration_code=sim.integration_code,
        secret=sim.secret,
        api_url=sim.zone_url.rstrip("/"),
    )
    client = AutotaskClient(AutotaskAuth(creds))
    conn = sim.connection()
    conn["extra"]["ledger_path"] = str(tmp_path / "ledger.sqlite")
    monkeypatch.setenv("AIRFLOW_CONN_AUTOTASK_DEFAULT", json.dumps(conn))
    hook = AutotaskHook()
    try:
        created = client.create_entity(
            "Companies",
            {
                "companyName": "Third Party Client BV",
                "companyType": 1,
                "ownerResourceID": sim.info["default_account_manager_id"],
                "phone": "+31 30 555 0199",
            },
        )
        row = hook.get("Companies", created.item_id)
        assert row is not None and row["companyName"] == "Third Party Client BV"

        answer = client.query("Companies", {"filter": [at.begins_with("companyName", "Third Party")]})
        assert [item["id"] for item in answer.items] == [created.item_id]
        everything = client.query("Companies", {"filter": [at.everything()]})
        assert {item["id"] for item in everything.items} == {r["id"] for r in hook.query("Companies")}
    finally:
        hook.close()
        client.close()
