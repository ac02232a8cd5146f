"""`erpsync validate` against the Salesforce and Autotask simulators over HTTPS: a plain validate only
reads and reports the Autotask flow's missing UDFs; `--fix` creates the two UDFs, and after that both
flows validate green without creating anything again."""

from __future__ import annotations

import pytest

FLOWS = ["--flow", "sf_accounts_to_autotask", "--flow", "sf_contacts_to_autotask"]


@pytest.fixture
def systems(tmp_path, monkeypatch):
    from erpsync.hooks import autotask as at_hook
    from erpsync.sandbox.autotask.testing import running_autotask
    from erpsync.sandbox.salesforce.testing import running_salesforce

    at_hook._ZONES.clear()
    with running_salesforce(tmp_path / "sf") as sf, running_autotask(tmp_path / "at") as at:
        monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", sf.connection_json("password"))
        monkeypatch.setenv(
            "AIRFLOW_CONN_AUTOTASK_DEFAULT", at.connection_json(ledger_path=str(tmp_path / "ledger.db"))
        )
        yield at
    at_hook._ZONES.clear()


def udf_names(at) -> dict[str, set[str]]:
    """The Salesforce UDFs the tenant defines (its seed has others: Lead Source, N-central ...)."""
    with at.api() as api:
        out = {}
        for entity in ("Companies", "Contacts"):
            resp = api.get(f"{entity}/entityInformation/userDefinedFields")
            assert resp.status_code == 200, resp.text
            out[entity] = {f["name"] for f in resp.json()["fields"] if f["name"].startswith("Salesforce")}
    return out


def test_validate_reports_missing_udfs_and_fix_creates_them(systems, capsys):
    from erpsync.cli import main

    at = systems
    assert udf_names(at) == {"Companies": set(), "Contacts": set()}

    assert main(["validate", *FLOWS, "--color", "never"]) == 1
    out = capsys.readouterr().out
    assert "RED      sf_accounts_to_autotask" in out, out
    assert "udf.SalesforceCompanyID: unknown in autotask" in out, out
    assert "udf.SalesforceContactID: unknown in autotask" in out, out
    assert udf_names(at) == {"Companies": set(), "Contacts": set()}  # a plain validate only reads

    code = main(["validate", *FLOWS, "--fix", "--color", "never"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "fixed: created the Companies UDF 'Salesforce Company ID'" in out, out
    assert "fixed: created the Contacts UDF 'Salesforce Contact ID'" in out, out
    assert udf_names(at) == {"Companies": {"Salesforce Company ID"}, "Contacts": {"Salesforce Contact ID"}}

    assert main(["validate", *FLOWS, "--fix", "--color", "never"]) == 0
    out = capsys.readouterr().out
    assert "fixed:" not in out, out  # nothing left to create
    assert "2 of 2 flow(s) ok" in out, out
    assert udf_names(at) == {"Companies": {"Salesforce Company ID"}, "Contacts": {"Salesforce Contact ID"}}
