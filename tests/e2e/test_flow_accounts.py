"""sf_accounts_to_qb_customers end to end: the real DAG from dags/ under `dag.test()` (its deferrable
upsert's trigger runs in line), the Salesforce simulator (seeded demo org, 300 accounts) as the source,
and QuickBooks as the target: the bridge over real HTTP, the company-file simulator and the Web
Connector simulator polling the bridge on a thread. QuickBooks' customers and the ListIDs written
back to Salesforce are asserted after each run.

One world per module; the tests run in order: first run, rerun without change, a change in Salesforce.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

import pytest

from tests.e2e.flow_world import run_dag

FLOW = "sf_accounts_to_qb_customers"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_db, dagbag):
    from erpsync.sandbox.salesforce.testing import running_salesforce
    from tests.qb_live import live_quickbooks

    folder = tmp_path_factory.mktemp("flow-accounts")
    mp = pytest.MonkeyPatch()
    with running_salesforce(folder / "sf") as sf, live_quickbooks(folder / "qb") as qb:
        mp.setenv("ERPSYNC_STATE_URL", f"sqlite:///{folder / 'state.db'}")
        mp.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", sf.connection_json("password"))
        mp.setenv("AIRFLOW_CONN_QBWC_BRIDGE_DEFAULT", qb.connection_json())
        try:
            yield {
                "sf": sf,
                "qb": qb,
                "dag": dagbag.get_dag(FLOW),
                "state_url": f"sqlite:///{folder / 'state.db'}",
            }
        finally:
            mp.undo()


def accounts(world) -> dict[str, dict]:
    org = world["sf"].simulator.org
    return {rid: r for rid, r in org.tables["Account"].items() if not r.get("IsDeleted")}


def customers(world) -> dict[str, dict]:
    """SalesforceId (DataExt) -> QuickBooks customer, for customers that carry one."""
    qb = world["qb"]
    out = {}
    for c in qb.customers():
        sfid = qb.data_ext("SalesforceId", c["ListID"])
        if sfid:
            out[sfid] = c
    return out


def quarantined(world) -> dict[str, dict]:
    from erpsync.state import StateStore

    return {e["source_key"]: e for e in StateStore(world["state_url"]).quarantine_entries(FLOW)}


def qb_name(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip()[:41]


def sf_patch(world, rid: str, changes: dict) -> None:
    import httpx

    sf = world["sf"]
    resp = httpx.patch(
        f"{sf.url}/services/data/v{sf.info['api_version']}/sobjects/Account/{rid}",
        json=changes,
        headers={"Authorization": f"Bearer {sf.token()}"},
        verify=sf.ssl_context(),
    )
    assert resp.status_code == 204, resp.text


def test_first_run_creates_customers_with_salesforce_ids_and_writes_list_ids_back(world, capfd):
    run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()

    source = accounts(world)
    target = customers(world)
    stuck = quarantined(world)
    # Accounts with an invalid invoice e-mail are held back by the source check.
    bad_email = {rid for rid, a in source.items() if a.get("Email__c") and not EMAIL.match(a["Email__c"])}
    for rid in bad_email:
        assert rid in stuck and stuck[rid]["stage"] == "check_source", rid
        assert rid not in target
    landed = set(source) - set(stuck)
    assert landed, "no account reached QuickBooks"
    assert set(target) == landed, (set(target) ^ landed, {k: stuck[k]["message"] for k in stuck})

    # The owner becomes the sales rep by first + last name (QuickBooks' SalesRepQuery), else ADM.
    users = world["sf"].simulator.org.tables["User"]
    reps = {("Anna", "de Vries"): "AV", ("Bram", "Jansen"): "BJ", ("Carla", "Bakker"): "CB"}
    rep_of = {uid: reps.get((u.get("FirstName"), u.get("LastName")), "ADM") for uid, u in users.items()}
    assert {"AV", "ADM"} <= {rep_of[source[rid]["OwnerId"]] for rid in landed}, "both paths are exercised"
    long_names = 0
    for rid in landed:
        a, c = source[rid], target[rid]
        assert c["SalesRepRef"]["FullName"] == rep_of[a["OwnerId"]], rid
        assert c["Name"] == qb_name(a["Name"]), rid
        assert len(c["Name"]) <= 41
        long_names += len(a["Name"]) > 41
        if a.get("BillingCity"):
            assert c["BillAddress"]["City"] == a["BillingCity"][:31], rid
        if a.get("Email__c"):
            assert c.get("Email") == a["Email__c"].strip().lower(), rid
        # The ListID was written back to the Salesforce account.
        assert a.get("QB_ListID__c") == c["ListID"], rid
    assert long_names >= 1, "the seed's over-long names reached QuickBooks cut to 41 characters"
    for rid in stuck:
        assert not source[rid].get("QB_ListID__c"), rid
    # Accounts entered twice under one name: QuickBooks names are unique, so one lands and the
    # other is refused (3100) and quarantined at upsert.
    by_name: dict[str, list[str]] = {}
    for rid, a in source.items():
        if rid not in bad_email:
            by_name.setdefault(qb_name(a["Name"]), []).append(rid)
    duplicates = [rids for rids in by_name.values() if len(rids) > 1]
    assert duplicates, "the seed has duplicate account names"
    for rids in duplicates:
        assert sum(rid in landed for rid in rids) == 1, rids
        for rid in rids:
            if rid not in landed:
                assert (stuck[rid]["stage"], stuck[rid]["rule"]) == ("upsert", "3100"), stuck[rid]
    assert set(stuck) == bad_email | {rid for rids in duplicates for rid in rids if rid not in landed}

    counts = run.counts
    assert counts["created"] == len(landed) and counts["updated"] == 0, counts
    assert counts["quarantined"] == len(stuck)
    assert run.xcom("target.verify")["differences"] == 0


def test_rerun_without_change_writes_nothing(world, capfd):
    qb = world["qb"]
    adds, mods = qb.customer_adds(), qb.customer_mods()
    qb_before = {c["ListID"]: c["EditSequence"] for c in qb.customers()}
    sent_before = len(qb.documents)
    sf_before = {rid: a["SystemModstamp"] for rid, a in accounts(world).items()}
    run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()
    assert run.counts["created"] == run.counts["updated"] == 0, run.counts
    # The only requests that could write are the rows QuickBooks refused last time (duplicate names,
    # quarantined at upsert), offered again in case someone fixed them; QuickBooks refuses them again.
    retried = sorted(
        re.search(r"<Name>(.*?)</Name>", add, re.S).group(1)
        for doc in qb.documents[sent_before:]
        for add in re.findall(r"<CustomerAddRq.*?</CustomerAddRq>", doc, re.S)
    )
    refused = [e for e in quarantined(world).values() if e["stage"] == "upsert"]
    assert len(retried) == qb.customer_adds() - adds == len(refused), retried
    source = accounts(world)
    assert retried == sorted(escape(qb_name(source[e["source_key"]]["Name"])) for e in refused)
    assert qb.customer_mods() == mods
    assert {c["ListID"]: c["EditSequence"] for c in qb.customers()} == qb_before
    # Nothing written back either: the Salesforce accounts are untouched.
    assert {rid: a["SystemModstamp"] for rid, a in accounts(world).items()} == sf_before


def test_a_change_in_salesforce_updates_exactly_those_customers(world, capfd):
    qb = world["qb"]
    target = customers(world)
    moved, renamed = sorted(target)[:2]
    sf_patch(world, moved, {"BillingCity": "Zwolle"})
    sf_patch(world, renamed, {"Name": "Renamed Account Holding B.V."})

    mods = qb.customer_mods()
    before = {c["ListID"]: c["EditSequence"] for c in qb.customers()}
    run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()
    assert (run.counts["created"], run.counts["updated"]) == (0, 2), run.counts

    now = customers(world)
    assert now[moved]["BillAddress"]["City"] == "Zwolle"
    assert now[renamed]["Name"] == "Renamed Account Holding B.V."
    assert now[moved]["ListID"] == target[moved]["ListID"]
    assert qb.customer_mods() == mods + 2
    after = {c["ListID"]: c["EditSequence"] for c in qb.customers()}
    changed = {lid for lid in after if after[lid] != before.get(lid)}
    assert changed == {target[moved]["ListID"], target[renamed]["ListID"]}
    assert len(after) == len(before), "no customer was added"


def test_a_backfill_over_three_intervals_picks_up_each_intervals_change(world, capfd):
    """Three past hourly intervals replayed in order, as `airflow backfill create` does: each run reads
    only the accounts changed in its own data interval and updates exactly that customer."""
    from datetime import UTC, datetime, timedelta

    from erpsync.sandbox.salesforce.org import format_datetime

    org = world["sf"].simulator.org
    target = customers(world)
    # Three hours that end well before now, clear of the seed's stamps (spread over the last 30 days,
    # each checked below) and of the earlier tests' edits (made now).
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=40)
    chosen = sorted(target)[2:5]
    # As if a user had edited one account in each hour (the org stamps an edit with its time).
    for hour, rid in enumerate(chosen):
        rec = org.tables["Account"][rid]
        rec["BillingCity"] = f"Backfill {hour}"
        rec["SystemModstamp"] = rec["LastModifiedDate"] = format_datetime(
            base + timedelta(hours=hour, minutes=20)
        )
    window = (format_datetime(base), format_datetime(base + timedelta(hours=3)))
    assert [rid for rid, a in accounts(world).items() if window[0] <= a["SystemModstamp"] < window[1]] == [
        rid for rid in accounts(world) if rid in chosen
    ]

    qb = world["qb"]
    for hour, rid in enumerate(chosen):
        mods = qb.customer_mods()
        # A run whose logical date falls in the next hour covers [base + hour, base + hour + 1h).
        dr = world["dag"].test(
            logical_date=base + timedelta(hours=hour + 1, minutes=30),
            run_conf={"dry_run": False, "full_refresh": False},
        )
        states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
        assert dr.state == "success", states
        assert dr.data_interval_start == base + timedelta(hours=hour)
        assert dr.data_interval_end == base + timedelta(hours=hour + 1)
        counts = dr.get_task_instance("report").xcom_pull(task_ids="report")["counts"]
        # The interval's one changed account, plus the open quarantine, which every run reads again.
        assert counts["extracted"] == 1 + len(quarantined(world)), counts
        assert (counts["created"], counts["updated"]) == (0, 1), counts
        assert qb.customer_mods() == mods + 1
        assert customers(world)[rid]["BillAddress"]["City"] == f"Backfill {hour}"
    for hour, rid in enumerate(chosen):
        assert customers(world)[rid]["BillAddress"]["City"] == f"Backfill {hour}"


def test_batch_params_from_the_trigger_form_size_the_bridge_jobs_and_the_write_back(world, capfd):
    """`rows_per_job` and `batch_size` given at trigger time: the rows to write go to QuickBooks in jobs
    of two rows, and the ListIDs are compared (and written back) two accounts per Salesforce call.
    Last in the module: dag.test() keeps conf params for later runs."""
    import math

    target = customers(world)
    changed = sorted(target)[5:8]
    for n, rid in enumerate(changed):
        sf_patch(world, rid, {"BillingCity": f"Batch {n}"})
    run = run_dag(world["dag"], capfd, rows_per_job=2, batch_size=2)
    assert run.ok, run.why()
    assert (run.counts["created"], run.counts["updated"]) == (0, 3), run.counts
    upsert = run.xcom("target.upsert")["extra"]
    # Written: the three updates and the duplicate names QuickBooks refused before (offered again).
    pending = upsert["counts"]["updated"] + upsert["counts"]["failed"]
    assert upsert["counts"]["failed"] == len(
        [e for e in quarantined(world).values() if e["stage"] == "upsert"]
    )
    assert upsert["calls"]["by_method"]["job:write"] == math.ceil(pending / 2), upsert["calls"]
    writeback = run.xcom("target.write_back_list_id")
    links = len(customers(world))
    assert writeback["calls"]["by_method"]["read_by_keys"] == math.ceil(links / 2), writeback["calls"]
    assert writeback["written"] == 0 and writeback["unchanged"] == links
    for n, rid in enumerate(changed):
        assert customers(world)[rid]["BillAddress"]["City"] == f"Batch {n}"
