"""sf_accounts_to_autotask end to end, one test per rule of the retired extension (issue 12): the real
DAG from dags/ under `dag.test()`, the Salesforce simulator (seeded demo org) as the source and the
Autotask simulator (seeded, dirty tenant) over HTTPS as the target.

One world per module and one first run (the `first` fixture) with a few records added in Salesforce
for the rules the seed does not already exercise (a new parent and child, a parent cycle, a contact
without an account); each rule's test then checks Autotask's stored records against the rule
computed independently from Salesforce's data and the tenant's resources and picklists. The
threshold tests come last: they pre-load the tenant's rolling count through the simulator's admin
route and run the DAG again.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

import pytest

from tests.e2e import test_flow_autotask as _base
from tests.e2e.flow_world import run_dag
from tests.e2e.test_flow_autotask import (
    CONTACTS_FLOW,
    FLOW,
    linked,
    quarantined,
    records,
    sf_request,
    table,
)

# The same module-scoped world as test_flow_autotask (its own instance here): simulators, DAG, state store.
world = _base.world

COMPANY_UDF = "Salesforce Company ID"
SLOWDOWN = 0.1  # the hook's pause per call above the slowdown share, small so the test stays fast


def create_account(world, **values) -> str:
    resp = sf_request(world, "POST", "Account", {"Phone": "+31 10 555 0000", **values})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def patch_account(world, rid: str, **values) -> None:
    resp = sf_request(world, "PATCH", f"Account/{rid}", values)
    assert resp.status_code == 204, resp.text


@pytest.fixture(scope="module")
def first(world):
    """The first run, after adding the records the rules below need; returns what they added."""
    added = {}
    # Parent order: the child is created (and extracted) before a parent that is new as well.
    parent = create_account(world, Name="Rule Parent Holding BV", BillingCity="Utrecht")
    child = create_account(world, Name="Rule Child Dochter BV", BillingCity="Utrecht", ParentId=parent)
    patch_account(world, parent, Phone="+31 30 555 0001")  # the parent changes last: extracted after
    added["parent"], added["child"] = parent, child
    # A cycle: X's parent is Y and Y's parent is X.
    x = create_account(world, Name="Rule Cycle Een BV", BillingCity="Delft")
    y = create_account(world, Name="Rule Cycle Twee BV", BillingCity="Delft", ParentId=x)
    patch_account(world, x, ParentId=y)
    added["cycle"] = {x, y}
    # Unknown type, unknown industry, an owner who is not an Autotask resource (the integration user).
    added["odd"] = create_account(
        world, Name="Rule Odd Types BV", BillingCity="Gouda", Type="Other", Industry="Agriculture"
    )
    resp = sf_request(world, "POST", "Contact", {"FirstName": "Olga", "LastName": "Onbekend"})
    assert resp.status_code == 201, resp.text
    added["orphan"] = resp.json()["id"]

    run = run_dag(world["dag"])
    assert run.ok, run.why()
    added["run"] = run
    return added


def resources(world) -> dict[int, dict]:
    return records(world, "resources")


def picklist(field: str) -> dict[str, int]:
    """The Companies field's active picklist labels (casefolded) -> values, from the simulator's schema."""
    from erpsync.sandbox.autotask._schema import entity_by_path

    fld = next(f for f in entity_by_path("Companies").fields if f.name == field)
    return {label.casefold(): value for value, label, active in fld.picklist.values if active}


# ---- account manager ---------------------------------------------------------------------------------


def test_account_manager_is_the_owner_when_an_active_resource_has_his_exact_name_else_the_default(
    world, first
):
    """Rule: the Salesforce owner when an active Autotask resource (an employee, not an API user,
    co-managed or contractor) has exactly the same first and last name; otherwise the flow's default
    resource (aricher, Angela Richer)."""
    by_name: dict[tuple[str, str], list[int]] = {}
    for rid, res in resources(world).items():
        if res.get("isActive") and res.get("resourceType") == 1 and res.get("licenseType") == 1:
            by_name.setdefault((res["firstName"], res["lastName"]), []).append(rid)
    default = next(r["id"] for r in resources(world).values() if r.get("userName") == "aricher")
    users = table(world, "User")
    accounts = table(world, "Account")
    companies = linked(world, "companies", COMPANY_UDF)
    seen = {"owner": 0, "default": 0}
    for sf_id, company in companies.items():
        owner = users[accounts[sf_id]["OwnerId"]]
        match = by_name.get((owner.get("FirstName"), owner.get("LastName")), [])
        expected = match[0] if len(match) == 1 else default
        assert company["ownerResourceID"] == expected, (sf_id, owner.get("Name"), match)
        seen["owner" if len(match) == 1 else "default"] += 1
    # Both sides of the rule were exercised: exact matches and owners with no (exact, active) resource.
    assert seen["owner"] > 5 and seen["default"] > 5, seen
    assert companies[first["odd"]]["ownerResourceID"] == default


# ---- type and market segment -------------------------------------------------------------------------


def test_unknown_salesforce_type_falls_back_to_customer(world, first):
    """Rule: Type -> Company Type by label; a Type with no Autotask company type becomes "Customer"."""
    types = picklist("companyType")
    accounts = table(world, "Account")
    companies = linked(world, "companies", COMPANY_UDF)
    fallbacks = 0
    for sf_id, company in companies.items():
        sf_type = (accounts[sf_id].get("Type") or "").casefold()
        expected = types.get(sf_type, types["customer"])
        fallbacks += sf_type not in types
        assert company["companyType"] == expected, (sf_id, accounts[sf_id].get("Type"))
    assert fallbacks > 10
    assert companies[first["odd"]]["companyType"] == types["customer"]
    assert any(c["companyType"] != types["customer"] for c in companies.values())


def test_market_segment_is_empty_when_the_industry_has_no_active_match(world, first):
    """Rule: Industry -> Market Segment; empty when it matches no (active) segment of the tenant."""
    segments = picklist("marketSegmentID")
    accounts = table(world, "Account")
    companies = linked(world, "companies", COMPANY_UDF)
    empty = 0
    for sf_id, company in companies.items():
        industry = (accounts[sf_id].get("Industry") or "").casefold()
        expected = segments.get(industry)
        empty += expected is None
        assert company.get("marketSegmentID") == expected, (sf_id, accounts[sf_id].get("Industry"))
    assert empty > 10 and empty < len(companies)
    assert companies[first["odd"]].get("marketSegmentID") is None


# ---- contacts without a company ----------------------------------------------------------------------


def test_contact_without_company_is_quarantined_with_that_reason_and_the_run_does_not_fail(world, first):
    """Rule: a Salesforce contact not associated with a company is not imported: quarantined with that
    reason, not an error; the run and the contacts' report succeed."""
    run = first["run"]
    assert run.dr.state == "success" and set(run.states.values()) == {"success"}, run.states
    held = quarantined(world, CONTACTS_FLOW)
    entry = held[first["orphan"]]
    assert entry["rule"] == "unplaceable" and "company" in entry["message"], entry
    contacts = run.xcom("contacts.report")
    assert contacts["status"] == "success", contacts
    stored = [
        c
        for c in records(world, "contacts").values()
        if (c.get("firstName"), c.get("lastName")) == ("Olga", "Onbekend")
    ]
    assert stored == []
    assert first["orphan"] not in linked(world, "contacts", "Salesforce Contact ID")
    # Every other contact with an account reached Autotask.
    assert linked(world, "contacts", "Salesforce Contact ID")


# ---- parent companies --------------------------------------------------------------------------------


def test_parent_written_before_its_new_child_and_a_cycle_refused(world, first):
    """Rule: parents resolve through the parent's mapping, parents are written before children (even
    when the child comes first), and a cycle is refused with a reason, not written."""
    companies = linked(world, "companies", COMPANY_UDF)
    parent, child = companies[first["parent"]], companies[first["child"]]
    assert parent["id"] < child["id"], "the child was created before its parent"
    assert child["parentCompanyID"] == parent["id"]
    assert not parent.get("parentCompanyID")

    held = quarantined(world, FLOW)
    for sf_id in first["cycle"]:
        assert sf_id not in companies
        assert "cycle" in held[sf_id]["message"], held[sf_id]
    names = {c["companyName"] for c in records(world, "companies").values()}
    assert not names & {"Rule Cycle Een BV", "Rule Cycle Twee BV"}


# ---- the tenant's threshold --------------------------------------------------------------------------


@contextmanager
def no_retries(dag):
    """dag.test() would wait out each retry delay: a stopped task fails at once in these tests."""
    saved = {t.task_id: t.retries for t in dag.tasks}
    for t in dag.tasks:
        t.retries = 0
    try:
        yield
    finally:
        for t in dag.tasks:
            t.retries = saved[t.task_id]


@contextmanager
def autotask_extra(world, **extra):
    at = world["at"]
    good = at.connection_json(ledger_path=str(world["folder"] / "ledger.db"))
    world["mp"].setenv(
        "AIRFLOW_CONN_AUTOTASK_DEFAULT",
        at.connection_json(ledger_path=str(world["folder"] / "ledger.db"), **extra),
    )
    try:
        yield
    finally:
        world["mp"].setenv("AIRFLOW_CONN_AUTOTASK_DEFAULT", good)


def tenant_at(world, count: int) -> None:
    """Set the tenant's rolling count to `count` (other integrations' traffic) and zero the stats."""
    at = world["at"]
    at.admin("POST", "threshold", {"clear": True})
    at.admin("POST", "threshold", {"add": count})
    at.admin("DELETE", "stats")
    at.simulator.threshold.refused = 0


def test_above_the_slowdown_share_the_run_paces_itself_and_completes(world, first, capfd):
    """Rule: from 70 % of the tenant's threshold the hook paces its calls; the run still completes and
    the tenant refuses nothing."""
    at = world["at"]
    companies = linked(world, "companies", COMPANY_UDF)
    rid = sorted(companies)[5]
    patch_account(world, rid, Phone="+31 10 444 0001")
    tenant_at(world, 7_200)
    with autotask_extra(world, slowdown_seconds=SLOWDOWN):
        run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()
    assert (run.counts["created"], run.counts["updated"]) == (0, 1), run.counts
    assert records(world, "companies")[companies[rid]["id"]]["phone"] == "+31 10 444 0001"
    stats = at.admin("GET", "stats")
    assert stats["refused"] == 0, stats
    assert stats["calls"].get("PATCH Companies") == 1, stats["calls"]
    # Paced: every call the hook sends (all but its ThresholdInformation reads, which follow a call at
    # once) reaches the tenant at least slowdown_seconds after the one before (the tenant's own clock).
    ours = [t for t, _ in list(at.simulator.threshold._events)[1:]]
    gaps = [b - a for a, b in itertools.pairwise(ours)]
    reads = stats["calls"].get("GET ThresholdInformation", 0)
    assert len(ours) == stats["total"] > reads > 0, (len(ours), stats)
    slow = sum(g >= SLOWDOWN for g in gaps)
    assert slow >= len(gaps) - reads, (slow, len(gaps), reads)


def test_above_the_stop_share_the_run_stops_cleanly_and_never_trips_429(world, first, capfd):
    """Rule: a run that would bring the tenant past 85 % of its threshold stops with a rate-limit
    reason before that; no 429 is served; a later run (the hour moved on) writes what was left."""
    at = world["at"]
    companies = linked(world, "companies", COMPANY_UDF)
    rid = sorted(companies)[6]
    patch_account(world, rid, Phone="+31 10 444 0002")
    stop = int(0.85 * at.simulator.threshold.limit)
    tenant_at(world, stop - 5)  # a handful of calls left before the stop share: the run would pass it
    with autotask_extra(world, max_wait=1), no_retries(world["dag"]):
        run = run_dag(world["dag"], capfd)
    assert run.dr.state == "failed", run.why()
    # The step that needed Autotask past the line stopped (validate and map read the metadata cached by
    # the first run, so the upsert's key reads are the first to pass it), before any write; the reports
    # say the run did not finish.
    failed = sorted(t for t, s in run.states.items() if s == "failed")
    assert failed == ["contacts.report", "report", "target.upsert"], run.states
    assert run.states["transform.map"] == "success", run.states
    reason = run.errors["target.upsert"]
    assert "RateLimitedError" in reason and "request budget reached" in reason, reason
    assert "85%" in reason, reason
    stats = at.admin("GET", "stats")
    assert stats["refused"] == 0, stats
    # Every budgeted call stayed within the stop share; the stopping task's own ThresholdInformation
    # read (unbudgeted: it is how the hook learns the count) is the one request beyond it.
    assert stats["threshold_count"] <= stop + 1, stats
    assert stats["calls"].get("GET ThresholdInformation", 0) >= 1, stats
    assert not any(k.startswith(("PATCH", "PUT")) for k in stats["calls"]), stats["calls"]
    assert records(world, "companies")[companies[rid]["id"]]["phone"] != "+31 10 444 0002"

    # The rolling hour moves on: the next run finishes the job, nothing written twice.
    at.simulator.clock.advance(3601)
    at.admin("DELETE", "stats")
    before = len(records(world, "companies"))
    run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()
    assert (run.counts["created"], run.counts["updated"]) == (0, 1), run.counts
    assert records(world, "companies")[companies[rid]["id"]]["phone"] == "+31 10 444 0002"
    assert len(records(world, "companies")) == before
