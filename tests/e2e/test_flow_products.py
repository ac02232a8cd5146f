"""exact_items_to_sf_products end to end: the real DAG from dags/ under `dag.test()`, Exact Online and
Salesforce simulators over real sockets, contents of Salesforce asserted after each run.

One world per module (both simulators started once, Exact seeded with 40 items, Salesforce with its
demo org); the tests run in order: first run, rerun without change, a change in Exact (read from
Exact's sync feed after the stored Timestamp), an item deleted in Exact (reported, not propagated), a
broken connection that alerts by e-mail and webhook.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.flow_world import mail_html, run_dag, set_alert_connections, smtp_sink, webhook_sink

FLOW = "exact_items_to_sf_products"
DIV = 1001234
ITEMS = 40


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_db, dagbag):
    from erpsync.sandbox.exact.testing import running_exact
    from erpsync.sandbox.salesforce.testing import running_salesforce

    folder = tmp_path_factory.mktemp("flow-products")
    mp = pytest.MonkeyPatch()
    with (
        running_exact(
            folder / "exact",
            minutely_limit=100_000,
            daily_limit=1_000_000,
            error_budget=0,
            item_count=ITEMS,
        ) as exact,
        running_salesforce(folder / "sf") as sf,
    ):
        mp.setenv("ERPSYNC_STATE_URL", f"sqlite:///{folder / 'state.db'}")
        mp.setenv(
            "AIRFLOW_CONN_EXACT_ONLINE_DEFAULT",
            exact.connection_json(
                refresh_token=exact.new_consent(), token_store_url=f"sqlite:///{folder / 'tokens.db'}"
            ),
        )
        mp.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", sf.connection_json("password"))
        world = {
            "exact": exact,
            "sf": sf,
            "dag": dagbag.get_dag(FLOW),
            "folder": folder,
            "mp": mp,
            "state_url": f"sqlite:///{folder / 'state.db'}",
        }
        try:
            yield world
        finally:
            mp.undo()


def items(world) -> list[dict]:
    div = world["exact"].simulator.store.divisions[DIV]
    return [i for i in div.tables["logistics/Items"].values() if i.get("IsSalesItem")]


def products(world) -> dict[str, dict]:
    org = world["sf"].simulator.org
    return {r["ProductCode"]: r for r in org.tables["Product2"].values() if not r.get("IsDeleted")}


def standard_prices(world) -> dict[str, float]:
    """Product2Id -> UnitPrice of its entry in the standard price book."""
    org = world["sf"].simulator.org
    std = world["sf"].info["standard_pricebook_id"]
    return {
        e["Product2Id"]: e["UnitPrice"]
        for e in org.tables["PricebookEntry"].values()
        if e["Pricebook2Id"] == std and not e.get("IsDeleted")
    }


def stamps(world) -> dict[str, str]:
    """Every Product2 and PricebookEntry Id -> SystemModstamp (a write changes it)."""
    org = world["sf"].simulator.org
    return {
        rid: rec["SystemModstamp"]
        for table in ("Product2", "PricebookEntry")
        for rid, rec in org.tables[table].items()
    }


def sf_writes(world) -> int:
    calls = world["sf"].admin("GET", "stats")["calls"]
    return sum(
        n for k, n in calls.items() if k.split()[0] in {"POST", "PATCH", "PUT", "DELETE"} and "query" not in k
    )


def clean_name(description: str) -> str:
    return re.sub(r"\s+", " ", description).strip()[:255]


def quarantined(world) -> dict[str, dict]:
    from erpsync.state import StateStore

    return {e["source_key"]: e for e in StateStore(world["state_url"]).quarantine_entries(FLOW)}


def test_first_run_creates_and_updates_every_clean_item_and_quarantines_the_dirty_one(world, capfd):
    before = products(world)
    run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()

    source = items(world)
    assert len(source) == ITEMS
    dirty = [i for i in source if not i["Description"].strip()]
    clean = [i for i in source if i["Description"].strip()]
    assert len(dirty) == 1, "the seed has one item without a description"

    # Quarantine: the item without a description, by the source rule, and it is not in Salesforce.
    stuck = quarantined(world)
    assert set(stuck) == {dirty[0]["ID"]}, stuck
    assert stuck[dirty[0]["ID"]]["stage"] == "check_source"
    assert "Description" in stuck[dirty[0]["ID"]]["rule"]

    now = products(world)
    prices = standard_prices(world)
    assert dirty[0]["Code"].strip() not in now
    for item in clean:
        code = item["Code"].strip()
        assert code in now, f"{code} missing in Salesforce"
        p = now[code]
        assert p["Name"] == clean_name(item["Description"]), code
        assert p["StockKeepingUnit"] == code and p["IsActive"] is True
        assert prices[p["Id"]] == pytest.approx(item["StandardSalesPrice"]), code
        if code not in before:  # create-only fields are written on create
            assert p["Exact_Item_Id__c"] == item["ID"]
            assert p["Description"].startswith(item["ExtraDescription"])
        else:  # an existing product keeps the description written in Salesforce
            assert p["Description"] == before[code]["Description"]

    # The dirty-but-acceptable rows land transformed: a code with spaces is stripped, an overlong
    # description is cut to Salesforce's 255, non-ASCII text arrives intact.
    assert "WID 0042" in now
    assert max(len(i["Description"]) for i in clean) > 255
    assert any("日本" in p["Name"] for p in now.values())
    # Products that never came from Exact are left alone.
    for code, p in before.items():
        if code.startswith(("ITEM-", "SF-ONLY-")):
            assert now[code] == p

    counts = run.counts
    assert counts["created"] == len([i for i in clean if i["Code"].strip() not in before])
    assert counts["updated"] == len([i for i in clean if i["Code"].strip() in before])
    assert counts["created"] > 0 and counts["updated"] > 0
    assert counts["quarantined"] == 1 and counts["failed"] == 0
    assert run.xcom("target.verify")["differences"] == 0


def exact_calls(world) -> int:
    return world["exact"].simulator.stats.division_calls.get(str(DIV), 0)


def test_rerun_without_change_writes_nothing(world, capfd):
    before, writes = stamps(world), sf_writes(world)
    calls = exact_calls(world)
    run = run_dag(world["dag"], capfd, full_refresh=False)
    assert run.ok, run.why()
    # The run report counts every Exact call the run made (all tasks), with the shared day's figures.
    usage = run.xcom("report")["api_usage"]["exact_online"]
    assert usage["calls"] == exact_calls(world) - calls > 0, usage
    assert usage["daily_limit"] == 1_000_000 and usage["daily_used"] >= usage["calls"], usage
    assert run.counts["created"] == run.counts["updated"] == 0, run.counts
    # Exact's sync feed has nothing after the stored Timestamp: only the quarantined item is read
    # again (by key), and no deletion is reported.
    assert run.counts["extracted"] == 1 and run.counts["deleted_in_source"] == 0, run.counts
    assert sf_writes(world) == writes
    assert stamps(world) == before


def test_a_change_in_exact_updates_exactly_those_products(world, capfd):
    from erpsync.hooks.exact_online import ExactOnlineHook

    source = sorted((i for i in items(world) if i["Description"].strip()), key=lambda i: i["Code"])
    repriced, renamed, described = source[0], source[1], source[2]
    hook = ExactOnlineHook()
    # Items.StandardSalesPrice is read-only in Exact: a new standard price is a SalesItemPrices row.
    hook.create("logistics/SalesItemPrices", {"Item": repriced["ID"], "Price": 77.7})
    hook.update("logistics/Items", renamed["ID"], {"Description": "Renamed in Exact"})
    # The long description is create-only: a change to it in Exact must not reach Salesforce.
    hook.update("logistics/Items", described["ID"], {"ExtraDescription": "Rewritten in Exact"})
    hook.close()

    ids = {code: p["Id"] for code, p in products(world).items()}
    before = stamps(world)
    run = run_dag(world["dag"], capfd, full_refresh=False)
    assert run.ok, run.why()
    assert (run.counts["created"], run.counts["updated"]) == (0, 2), run.counts
    # Read from the sync feed: the three changed items and the quarantined one, nothing else.
    assert run.counts["extracted"] == 4, run.counts

    now = products(world)
    assert standard_prices(world)[ids[repriced["Code"]]] == pytest.approx(77.7)
    assert now[renamed["Code"]]["Name"] == "Renamed in Exact"
    assert now[described["Code"]]["Description"] != "Rewritten in Exact"
    after = stamps(world)
    changed = {rid for rid in after if after[rid] != before.get(rid)}
    touched = {ids[repriced["Code"]], ids[renamed["Code"]]}
    # Only the two products (or their standard price entries) were written.
    org = world["sf"].simulator.org
    owners = {
        rid if rid in org.tables["Product2"] else org.tables["PricebookEntry"][rid]["Product2Id"]
        for rid in changed
    }
    assert owners == touched, changed


def test_an_item_deleted_in_exact_is_reported_and_its_product_left_alone(world, capfd):
    from erpsync.hooks.exact_online import ExactOnlineHook

    gone = sorted((i for i in items(world) if i["Description"].strip()), key=lambda i: i["Code"])[-1]
    code = gone["Code"].strip()
    product = products(world)[code]
    hook = ExactOnlineHook()
    hook.delete("logistics/Items", gone["ID"])
    hook.close()

    writes = sf_writes(world)
    run = run_dag(world["dag"], capfd, full_refresh=False)
    assert run.ok, run.why()
    assert run.counts["deleted_in_source"] == 1, run.counts
    assert run.counts["created"] == run.counts["updated"] == 0, run.counts
    with open(run.xcom("report")["files"]["markdown"], encoding="utf-8") as fh:
        report = fh.read()
    assert "1 logistics/Items record(s) were deleted in the source" in report, report
    assert gone["ID"] in report, report
    # Reported, never propagated: the product is still in Salesforce, untouched.
    assert products(world)[code] == product and sf_writes(world) == writes
    # Reported once: the next run has nothing new.
    again = run_dag(world["dag"], capfd, full_refresh=False)
    assert again.ok and again.counts["deleted_in_source"] == 0, again.counts


def test_a_wrong_exact_client_secret_fails_the_run_and_alerts_by_mail_and_webhook(world, capfd):
    exact = world["exact"]
    # A fresh token store and a wrong client secret: the hook must ask Exact for a token and is refused.
    world["mp"].setenv(
        "AIRFLOW_CONN_EXACT_ONLINE_DEFAULT",
        exact.connection_json(
            refresh_token=exact.new_consent(),
            token_store_url=f"sqlite:///{world['folder'] / 'tokens-broken.db'}",
        ).replace(exact.info["client_secret"], "not-the-secret"),
    )
    with smtp_sink() as (smtp_port, mails), webhook_sink() as (hook_port, posts):
        set_alert_connections(world["mp"], smtp_port, hook_port)
        run = run_dag(world["dag"], capfd)
    assert run.dr.state == "failed", run.why()
    # The connection check at the head of the flow fails; nothing downstream runs; the report step
    # still runs (all_done), records the failure and fails the run without a second alert.
    assert run.states["validate"] == "failed", run.why()
    assert run.states["source.extract"] == "upstream_failed"
    assert run.states["target.upsert"] == "upstream_failed"
    assert run.states["report"] == "failed"
    assert "client id or secret is wrong" in run.errors["validate"], run.why()
    assert len(mails) == 1 and len(posts) == 1, (mails, posts)
    mail, post = mails[0], posts[0]
    assert mail["Subject"] == f"[erpsync] {FLOW}.validate failed"
    assert mail["To"] == "ops@example.com"
    body = mail_html(mail)
    assert FLOW in body and "validate" in body
    assert "client id or secret is wrong" in body and "invalid_client" in body
    assert post["erpsync"]["flow"] == FLOW and post["erpsync"]["step"] == "validate"
    assert post["text"].startswith(f"erpsync flow {FLOW} failed at step validate: ")
    assert "client id or secret is wrong" in post["text"] and "invalid_client" in post["text"]
    assert "AirflowFailException" in post["erpsync"]["error"]
