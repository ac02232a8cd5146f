"""sf_accounts_to_autotask end to end: the real DAG from dags/ under `dag.test()`, the Salesforce
simulator (seeded demo org) as the source and the Autotask simulator (seeded, dirty tenant) over HTTPS
as the target. Autotask's companies and contacts are asserted after each run.

One world per module; the tests run in order: first run, rerun without change, a change in Salesforce.
"""

from __future__ import annotations

import copy

import pytest

from tests.e2e.flow_world import mail_html, run_dag, set_alert_connections, smtp_sink, webhook_sink

FLOW = "sf_accounts_to_autotask"
CONTACTS_FLOW = "sf_contacts_to_autotask"


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_db, dagbag):
    from erpsync.hooks import autotask as at_hook
    from erpsync.sandbox.autotask.testing import running_autotask
    from erpsync.sandbox.salesforce.testing import running_salesforce

    folder = tmp_path_factory.mktemp("flow-autotask")
    mp = pytest.MonkeyPatch()
    at_hook._ZONES.clear()
    with (
        running_salesforce(folder / "sf") as sf,
        running_autotask(folder / "at", threshold_latency_scale=0) as at,
    ):
        mp.setenv("ERPSYNC_STATE_URL", f"sqlite:///{folder / 'state.db'}")
        mp.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", sf.connection_json("password"))
        mp.setenv("AIRFLOW_CONN_AUTOTASK_DEFAULT", at.connection_json(ledger_path=str(folder / "ledger.db")))
        try:
            yield {
                "sf": sf,
                "at": at,
                "dag": dagbag.get_dag(FLOW),
                "state_url": f"sqlite:///{folder / 'state.db'}",
                "mp": mp,
                "folder": folder,
            }
        finally:
            mp.undo()
            at_hook._ZONES.clear()


def table(world, name: str) -> dict:
    return world["sf"].simulator.org.tables[name]


def records(world, entity: str) -> dict[int, dict]:
    return world["at"].simulator.tenant.records[entity]


def linked(world, entity: str, udf: str) -> dict[str, dict]:
    """Salesforce id (UDF) -> Autotask record, for the records that carry one."""
    out = {}
    for rec in records(world, entity).values():
        value = (rec.get("userDefinedFields") or {}).get(udf)
        if value:
            assert value not in out, f"two {entity} hold {udf} {value}"
            out[value] = rec
    return out


def quarantined(world, flow: str) -> dict[str, dict]:
    from erpsync.state import StateStore

    return {e["source_key"]: e for e in StateStore(world["state_url"]).quarantine_entries(flow)}


def sf_request(world, method: str, path: str, body: dict):
    import httpx

    sf = world["sf"]
    return httpx.request(
        method,
        f"{sf.url}/services/data/v{sf.info['api_version']}/sobjects/{path}",
        json=body,
        headers={"Authorization": f"Bearer {sf.token()}"},
        verify=sf.ssl_context(),
    )


def test_first_run_creates_companies_then_contacts(world, capfd):
    # The seed's rule: a contact without a company is not imported (quarantined with that reason).
    resp = sf_request(world, "POST", "Contact", {"FirstName": "Nora", "LastName": "Nobody"})
    assert resp.status_code == 201, resp.text
    companies_before = len(records(world, "companies"))
    # The seed's six companies that are Salesforce accounts (same name, address 1, city, state).
    seeded = {
        c["id"]
        for c in records(world, "companies").values()
        if str(c.get("companyNumber")).startswith("AT-700")
    }
    assert len(seeded) == 6
    run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()

    accounts = {k: a for k, a in table(world, "Account").items() if not a.get("IsDeleted")}
    companies = linked(world, "companies", "Salesforce Company ID")
    stuck = quarantined(world, FLOW)
    assert set(companies) == set(accounts) - set(stuck), {k: v["message"] for k, v in stuck.items()}
    assert len(companies) > 100
    # The six seeded companies with the same name, address 1, city and state were linked, not recreated.
    assert seeded <= {c["id"] for c in companies.values()}
    created = run.counts["created"]
    assert len(records(world, "companies")) == companies_before + created
    for rid, company in companies.items():
        account = accounts[rid]
        assert company["companyName"] == " ".join(account["Name"].split())[:100], rid
        if account.get("ParentId") and account["ParentId"] in companies:
            assert company["parentCompanyID"] == companies[account["ParentId"]]["id"], rid
    assert run.xcom("target.verify")["differences"] == 0

    contacts = linked(world, "contacts", "Salesforce Contact ID")
    people = {k: c for k, c in table(world, "Contact").items() if not c.get("IsDeleted")}
    orphans = {k for k, c in people.items() if not c.get("AccountId")}
    held = quarantined(world, CONTACTS_FLOW)
    assert orphans and orphans <= set(held)
    for key in orphans:
        assert held[key]["rule"] == "unplaceable" and "company" in held[key]["message"], held[key]
    assert contacts, "no contact reached Autotask"
    for key, contact in contacts.items():
        assert contact["companyID"] == companies[people[key]["AccountId"]]["id"], key
        assert contact["lastName"] == " ".join(people[key]["LastName"].split())[:50]
    assert run.xcom("contacts.report")["status"] == "success"


def test_rerun_without_change_writes_nothing(world, capfd):
    before = {e: copy.deepcopy(records(world, e)) for e in ("companies", "contacts")}
    run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()
    assert (run.counts["created"], run.counts["updated"]) == (0, 0), run.counts
    contacts = run.xcom("contacts.report")["counts"]
    assert (contacts["created"], contacts["updated"]) == (0, 0), contacts
    assert {e: records(world, e) for e in before} == before


def test_a_change_in_salesforce_updates_exactly_that_company(world, capfd):
    companies = linked(world, "companies", "Salesforce Company ID")
    rid = sorted(companies)[0]
    resp = sf_request(world, "PATCH", f"Account/{rid}", {"Phone": "+31 10 999 0000"})
    assert resp.status_code == 204, resp.text
    before = copy.deepcopy(records(world, "companies"))
    run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()
    assert (run.counts["created"], run.counts["updated"]) == (0, 1), run.counts
    after = records(world, "companies")
    changed = {cid for cid in after if after[cid] != before.get(cid)}
    assert changed == {companies[rid]["id"]}
    assert after[companies[rid]["id"]]["phone"] == "+31 10 999 0000"


def test_run_reports_count_every_autotask_call_and_carry_the_budget(world, capfd):
    """The two stages' reports count every Autotask call the run made (writes, key reads, pages,
    lookups, metadata, ThresholdInformation): together exactly what the simulator counted. Each
    carries the budget figures: its calls' share of the tenant's hourly threshold and the last reading."""
    from erpsync.state import StateStore

    rid = sorted(linked(world, "companies", "Salesforce Company ID"))[4]
    touch_account(world, rid, "+31 10 444 0001")
    cid = sorted(linked(world, "contacts", "Salesforce Contact ID"))[0]
    resp = sf_request(world, "PATCH", f"Contact/{cid}", {"Phone": "+31 10 444 0002"})
    assert resp.status_code == 204, resp.text
    at = world["at"]
    at.admin("DELETE", "stats")
    run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()
    stats = at.admin("GET", "stats")
    companies, contacts = run.xcom("report"), run.xcom("contacts.report")
    assert stats["calls"].get("PATCH Companies") == 1, stats["calls"]
    assert stats["calls"].get("PATCH Companies/{id}/Contacts") == 1, stats["calls"]
    assert companies["api_calls"] + contacts["api_calls"] == stats["total"], (companies, contacts, stats)
    store = StateStore(world["state_url"])
    for flow, report in ((FLOW, companies), (CONTACTS_FLOW, contacts)):
        usage = report["api_usage"]["autotask"]
        assert usage["calls"] == report["api_calls"] > 1
        assert usage["by_kind"]["update"] == 1, usage
        assert sum(usage["by_task"].values()) == usage["calls"], usage
        assert usage["threshold"] == 10_000 and usage["budget_share"] == 0.5
        assert usage["share_of_hour"] == round(usage["calls"] / 10_000, 6)
        reading = usage["reading"]
        assert 0 < reading["tenant_count"] <= stats["threshold_count"], (reading, stats)
        assert reading["threshold"] == 10_000 and reading["read_at"]
        stored = store.get_run(flow, run.dr.run_id)["report"]
        assert (stored["api_calls"], stored["api_usage"]) == (report["api_calls"], report["api_usage"])
    # The map step's lookups (Resources, Countries) are counted too; validate's describes, when not cached.
    by_task = companies["api_usage"]["autotask"]["by_task"]
    assert {"validate", "map", "plan", "upsert", "verify"} <= set(by_task) and by_task["map"] > 0, by_task


# ---- un-mapping ------------------------------------------------------------------------------------


def clear_udf(world, company_id: int) -> None:
    """What a user does on the Edit Company page: clear the "Salesforce Company ID" UDF."""
    with world["at"].api() as api:
        resp = api.patch(
            "Companies",
            json={"id": company_id, "userDefinedFields": [{"name": "Salesforce Company ID", "value": None}]},
        )
    assert resp.status_code == 200, resp.text
    udfs = records(world, "companies")[company_id].get("userDefinedFields") or {}
    assert not udfs.get("Salesforce Company ID"), udfs


def touch_account(world, rid: str, phone: str) -> None:
    resp = sf_request(world, "PATCH", f"Account/{rid}", {"Phone": phone})
    assert resp.status_code == 204, resp.text


def test_unmapping_a_cleared_udf_is_for_good_until_the_id_is_typed_back(world, capfd):
    """Rule: a cleared Salesforce UDF disassociates the pair; later runs neither re-link it by name
    nor create a duplicate (even when the account changes); typing the id back maps it again."""
    from erpsync.state import StateStore

    companies = linked(world, "companies", "Salesforce Company ID")
    rid = sorted(companies)[1]
    company_id = companies[rid]["id"]
    clear_udf(world, company_id)
    touch_account(world, rid, "+31 10 111 0001")  # the account changes: the plan looks at it again
    count_before = len(records(world, "companies"))
    for phone in ("+31 10 111 0002", None):
        run = run_dag(world["dag"], capfd)
        assert run.ok, run.why()
        assert (run.counts["created"], run.counts["updated"]) == (0, 0), run.counts
        assert len(records(world, "companies")) == count_before
        company = records(world, "companies")[company_id]
        assert not (company.get("userDefinedFields") or {}).get("Salesforce Company ID"), company
        assert company["phone"] != "+31 10 111 0001"
        assert rid not in linked(world, "companies", "Salesforce Company ID")
        assert StateStore(world["state_url"]).unmapped(FLOW)[rid]["target_id"] == str(company_id)
        if phone:
            touch_account(world, rid, phone)  # a second change: still not re-linked

    # Re-mapping: the user types the Salesforce id back into the UDF; the next change updates it.
    with world["at"].api() as api:
        resp = api.patch(
            "Companies",
            json={"id": company_id, "userDefinedFields": [{"name": "Salesforce Company ID", "value": rid}]},
        )
    assert resp.status_code == 200, resp.text
    touch_account(world, rid, "+31 10 111 0003")
    run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()
    assert (run.counts["created"], run.counts["updated"]) == (0, 1), run.counts
    assert records(world, "companies")[company_id]["phone"] == "+31 10 111 0003"
    assert rid not in StateStore(world["state_url"]).unmapped(FLOW)


def test_unmapped_pair_mapped_again_with_the_remap_command(world, capfd):
    """Rule: `erpsync remap` lets the match rules link the un-mapped account to its company again."""
    from erpsync.cli import main

    companies = linked(world, "companies", "Salesforce Company ID")
    rid = sorted(companies)[2]
    company_id = companies[rid]["id"]
    clear_udf(world, company_id)
    touch_account(world, rid, "+31 10 222 0001")
    run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()
    assert (run.counts["created"], run.counts["updated"]) == (0, 0), run.counts
    assert main(["unmapped", "--flow", FLOW, "--state-url", world["state_url"]]) == 0
    assert rid in capfd.readouterr().out

    assert main(["remap", "--flow", FLOW, rid, "--state-url", world["state_url"]]) == 0
    assert main(["remap", "--flow", FLOW, "001NOTUNMAPPED", "--state-url", world["state_url"]]) == 1
    count_before = len(records(world, "companies"))
    run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()
    # Same name, address 1, city and state: linked to the same company again, not a duplicate.
    assert (run.counts["created"], run.counts["updated"]) == (0, 1), run.counts
    assert len(records(world, "companies")) == count_before
    company = records(world, "companies")[company_id]
    assert company["userDefinedFields"]["Salesforce Company ID"] == rid
    assert company["phone"] == "+31 10 222 0001"


# ---- notifications ---------------------------------------------------------------------------------

SALES = ["sales@example.com", "cfo@example.com"]


def test_summary_goes_to_the_flow_recipients_only_after_a_change_unless_every_run(world, capfd):
    """Rule: the configured recipients get a summary after a run that created or updated something;
    with notify_every_run (the seed's check box cleared) after every run."""
    with smtp_sink() as (smtp_port, mails), webhook_sink() as (hook_port, posts):
        set_alert_connections(world["mp"], smtp_port, hook_port)
        quiet = dict(notify_recipients=SALES, notify_every_run=False)
        run = run_dag(world["dag"], capfd, **quiet)
        assert run.ok, run.why()
        assert (run.counts["created"], run.counts["updated"]) == (0, 0), run.counts
        assert mails == [] and posts == []

        rid = sorted(linked(world, "companies", "Salesforce Company ID"))[3]
        touch_account(world, rid, "+31 10 333 0001")
        run = run_dag(world["dag"], capfd, **quiet)
        assert run.ok, run.why()
        assert len(mails) == 1, [m["Subject"] for m in mails]
        assert mails[0]["To"] == ", ".join(SALES)
        assert mails[0]["Subject"] == f"[erpsync] {FLOW}: 0 created, 1 updated"
        assert "1 updated" in mail_html(mails[0])
        assert posts[-1]["erpsync"]["updated"] == 1

        run = run_dag(world["dag"], capfd, notify_recipients=SALES, notify_every_run=True)
        assert run.ok, run.why()
        # One summary for the run, companies and contacts in it.
        assert [m["Subject"] for m in mails[1:]] == [f"[erpsync] {FLOW}: 0 created, 0 updated"]
        assert mails[1]["To"] == ", ".join(SALES)
        assert len(posts) == 2


def test_one_summary_per_run_with_both_stages_and_the_autotask_calls(world, capfd):
    """Rule: a run that changes a company and a contact sends ONE message (not one per stage) with
    each stage's counts and the run's Autotask calls against the tenant's hourly threshold."""
    rid = sorted(linked(world, "companies", "Salesforce Company ID"))[5]
    touch_account(world, rid, "+31 10 555 0001")
    cid = sorted(linked(world, "contacts", "Salesforce Contact ID"))[1]
    resp = sf_request(world, "PATCH", f"Contact/{cid}", {"Phone": "+31 10 555 0002"})
    assert resp.status_code == 204, resp.text
    with smtp_sink() as (smtp_port, mails), webhook_sink() as (hook_port, posts):
        set_alert_connections(world["mp"], smtp_port, hook_port)
        run = run_dag(world["dag"], capfd, notify_recipients=SALES, notify_every_run=False)
        assert run.ok, run.why()
    assert [m["Subject"] for m in mails] == [f"[erpsync] {FLOW}: 0 created, 2 updated"]
    assert mails[0]["To"] == ", ".join(SALES)
    body = mail_html(mails[0])
    assert FLOW in body and CONTACTS_FLOW in body, body
    facts = posts[0]["erpsync"]
    assert len(posts) == 1 and facts["updated"] == 2, posts
    assert facts[FLOW].startswith("0 created, 1 updated") and facts[CONTACTS_FLOW].startswith(
        "0 created, 1 updated"
    ), facts
    calls = run.xcom("report")["api_calls"] + run.xcom("contacts.report")["api_calls"]
    assert facts["autotask calls"].startswith(
        f"{calls:,} ({100 * calls / 10_000:.2f} % of the tenant's 10,000"
    )
    assert "last ThresholdInformation" in facts["autotask calls"], facts


def test_errors_are_always_summarised_once_even_when_nothing_changed(world, capfd):
    """Rule: a run whose only news is errors (a new contact without a company, quarantined) is
    reported although nothing was created or updated and the every-run setting is off."""
    resp = sf_request(world, "POST", "Contact", {"FirstName": "Olga", "LastName": "Orphan"})
    assert resp.status_code == 201, resp.text
    with smtp_sink() as (smtp_port, mails), webhook_sink() as (hook_port, posts):
        set_alert_connections(world["mp"], smtp_port, hook_port)
        run = run_dag(world["dag"], capfd, notify_recipients=SALES, notify_every_run=False)
        assert run.ok, run.why()
        assert [m["Subject"] for m in mails] == [f"[erpsync] {FLOW}: errors only, 1 newly quarantined"]
        assert posts[0]["erpsync"]["errors in"] == CONTACTS_FLOW, posts
        assert "plan/unplaceable" in posts[0]["erpsync"][CONTACTS_FLOW], posts
        # The same orphan again is no news.
        run = run_dag(world["dag"], capfd, notify_recipients=SALES, notify_every_run=False)
        assert run.ok, run.why()
        assert len(mails) == 1 and len(posts) == 1


def test_wrong_secret_fails_the_run_and_alerts_the_recipients_by_mail_and_webhook(world, capfd):
    """Rule: errors are always notified: a broken Autotask connection fails the run at its first
    step and alerts the flow's recipients by mail and the webhook, once."""
    at = world["at"]
    good = at.connection_json(ledger_path=str(world["folder"] / "ledger.db"))
    world["mp"].setenv("AIRFLOW_CONN_AUTOTASK_DEFAULT", good.replace(at.secret, "not-the-secret"))
    try:
        with smtp_sink() as (smtp_port, mails), webhook_sink() as (hook_port, posts):
            set_alert_connections(world["mp"], smtp_port, hook_port)
            run = run_dag(world["dag"], capfd, notify_recipients=SALES, notify_every_run=False)
    finally:
        world["mp"].setenv("AIRFLOW_CONN_AUTOTASK_DEFAULT", good)
    assert run.dr.state == "failed", run.why()
    failed = sorted(t for t, s in run.states.items() if s == "failed")
    assert "validate" in failed, run.states
    assert run.states["target.upsert"] == "upstream_failed", run.states
    assert len(mails) == 1 and len(posts) == 1, ([m["Subject"] for m in mails], posts)
    assert mails[0]["To"] == ", ".join(SALES)
    assert mails[0]["Subject"] == f"[erpsync] {FLOW}.validate failed"
    body = mail_html(mails[0])
    assert "Autotask refused API user" in body and "HTTP 401" in body, body
    assert posts[0]["erpsync"]["flow"] == FLOW and posts[0]["erpsync"]["step"] == "validate"
