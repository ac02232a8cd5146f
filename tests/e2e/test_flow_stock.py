"""exact_stock_to_sf_products end to end: the real DAG under `dag.test()`, the Exact Online and Salesforce
simulators over real sockets (HTTPS), Salesforce's Product2.Exact_Stock__c asserted after each run.

One world per module: Exact seeded with 40 stock items and one service, Salesforce with its demo org,
the products flow run once so the items have products. Tests in order: first run, rerun without change, exactly the change
(a stock count and a sales order's reservation), the calculation setting, non-stock items ignored.
"""

from __future__ import annotations

import pytest

from tests.e2e.flow_world import run_dag

FLOW = "exact_stock_to_sf_products"
DIV = 1001234
ITEMS = 40


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_db, dagbag):
    from erpsync.sandbox.exact.testing import running_exact
    from erpsync.sandbox.salesforce.testing import running_salesforce

    folder = tmp_path_factory.mktemp("flow-stock")
    mp = pytest.MonkeyPatch()
    with (
        running_exact(
            folder / "exact", minutely_limit=100_000, daily_limit=1_000_000, error_budget=0, item_count=ITEMS
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
        from erpsync.hooks.exact_online import ExactOnlineHook

        hook = ExactOnlineHook()  # a service: sold, never in stock (the seed's first 40 are all stock)
        hook.create(
            "logistics/Items", {"Code": "SERV-INSTALL", "Description": "Installatie", "IsStockItem": False}
        )
        hook.close()
        products_run = run_dag(dagbag.get_dag("exact_items_to_sf_products"))
        assert products_run.ok, products_run.why()
        try:
            yield {"exact": exact, "sf": sf, "dag": dagbag.get_dag(FLOW), "mp": mp}
        finally:
            mp.undo()


def div(world):
    return world["exact"].simulator.store.divisions[DIV]


def items(world) -> dict[str, dict]:
    return {i["Code"].strip(): i for i in div(world).tables["logistics/Items"].values()}


def positions(world) -> dict[str, dict]:
    """Item code -> its stock position in Exact."""
    return {p["ItemCode"].strip(): p for p in div(world).tables["inventory/StockPositions"].values()}


def products(world) -> dict[str, dict]:
    org = world["sf"].simulator.org
    return {r["ProductCode"]: r for r in org.tables["Product2"].values() if not r.get("IsDeleted")}


def stock_in_sf(world) -> dict[str, float | None]:
    return {code: p.get("Exact_Stock__c") for code, p in products(world).items()}


def sf_writes(world) -> int:
    calls = world["sf"].admin("GET", "stats")["calls"]
    return sum(
        n for k, n in calls.items() if k.split()[0] in {"POST", "PATCH", "PUT", "DELETE"} and "query" not in k
    )


def stocked_products(world) -> list[str]:
    """Codes of stock-managed items that have a Salesforce product."""
    have = products(world)
    return sorted(c for c, i in items(world).items() if i.get("IsStockItem") and c in have)


def available(position: dict) -> float:
    return round(position["CurrentStock"] - position["ReservedStock"], 4)


def stock_step(run) -> dict:
    return run.xcom("transform.stock_items")["extra"]["stock"]


def order(world, code: str, quantity: float) -> None:
    from erpsync.hooks.exact_online import ExactOnlineHook

    account = next(a for a in div(world).tables["crm/Accounts"].values() if a.get("Status") == "C")
    hook = ExactOnlineHook()
    hook.create(
        "salesorder/SalesOrders",
        {
            "OrderedBy": account["ID"],
            "SalesOrderLines": [{"Item": items(world)[code]["ID"], "Quantity": quantity}],
        },
    )
    hook.close()


def stock_count(world, code: str, current: float) -> None:
    exact = world["exact"]
    resp = exact.http.post(
        f"{exact.url}/admin/stock", json={"division": DIV, "code": code, "current": current}
    )
    resp.raise_for_status()


def test_first_run_writes_every_stock_managed_products_available_stock(world, capfd):
    run = run_dag(world["dag"], capfd)
    assert run.ok, run.why()
    codes = stocked_products(world)
    assert len(codes) > 20
    now, pos = stock_in_sf(world), positions(world)
    for code in codes:
        assert now[code] == pytest.approx(available(pos[code])), code
    # Products of items Exact keeps no stock for (services) carry no stock value.
    services = [c for c, i in items(world).items() if not i.get("IsStockItem") and c in now]
    assert services and all(now[c] is None for c in services)
    assert run.counts["updated"] == len(codes) and run.counts["created"] == 0, run.counts
    # The stock item without a product (its description is empty, so the products flow quarantined
    # it) is skipped before map, not created.
    assert stock_step(run)["no_product"] == len([c for c in pos if c not in products(world)]) >= 1
    assert run.xcom("report")["api_usage"]["exact_online"]["calls"] > 0


def test_rerun_without_change_writes_nothing(world, capfd):
    writes = sf_writes(world)
    calls = world["exact"].simulator.stats.division_calls[str(DIV)]
    run = run_dag(world["dag"], capfd, full_refresh=False)
    assert run.ok, run.why()
    assert run.counts["extracted"] == 0 and run.counts["updated"] == run.counts["created"] == 0, run.counts
    assert sf_writes(world) == writes
    # An unchanged run costs Exact two calls: the deleted feed and the stock feed (plus hrm/Divisions).
    assert world["exact"].simulator.stats.division_calls[str(DIV)] - calls <= 4


def test_a_stock_count_and_a_reservation_update_exactly_those_products(world, capfd):
    counted, ordered = stocked_products(world)[:2]
    before = stock_in_sf(world)
    stock_count(world, counted, 123)
    order(world, ordered, 5)
    run = run_dag(world["dag"], capfd, full_refresh=False)
    assert run.ok, run.why()
    assert (run.counts["extracted"], run.counts["updated"]) == (2, 2), run.counts
    now, pos = stock_in_sf(world), positions(world)
    assert now[counted] == pytest.approx(123 - pos[counted]["ReservedStock"])
    assert now[ordered] == pytest.approx(before[ordered] - 5)  # available: minus the reservation
    assert {c for c in now if now[c] != before[c]} == {counted, ordered}


def test_the_calculation_setting_picks_the_quantity(world, capfd):
    ordered = stocked_products(world)[1]  # holds 5 reserved from the previous test
    pos = positions(world)
    assert pos[ordered]["ReservedStock"] >= 5
    run = run_dag(world["dag"], capfd, stock_calculation="in_stock")  # full refresh after the change
    assert run.ok, run.why()
    now = stock_in_sf(world)
    for code in stocked_products(world):
        assert now[code] == pytest.approx(pos[code]["CurrentStock"]), code
    # Only products whose available and in-stock quantities differ were written.
    differ = [c for c in stocked_products(world) if pos[c]["ReservedStock"]]
    assert ordered in differ and run.counts["updated"] == len(differ), run.counts
    # An unknown calculation is refused when the run is triggered, naming the allowed ones.
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="available"):
        run_dag(world["dag"], capfd, stock_calculation="whatever")


def test_items_that_are_not_stock_managed_are_ignored(world, capfd):
    from erpsync.hooks.exact_online import ExactOnlineHook

    now = stock_in_sf(world)
    service = next(c for c, i in items(world).items() if not i.get("IsStockItem") and c in now)
    # A stock item made non-stock in Exact: its old position still changes, the flow must ignore it.
    demoted = stocked_products(world)[2]
    hook = ExactOnlineHook()
    hook.update("logistics/Items", items(world)[demoted]["ID"], {"IsStockItem": False})
    hook.close()
    stock_count(world, demoted, 999)
    order(world, service, 3)  # a service is ordered: no stock position, nothing to write
    writes = sf_writes(world)
    run = run_dag(world["dag"], capfd, full_refresh=False, stock_calculation="in_stock")
    assert run.ok, run.why()
    assert stock_step(run)["not_stock_managed"] == 1, stock_step(run)
    assert run.counts["updated"] == run.counts["created"] == 0, run.counts
    assert stock_in_sf(world)[demoted] == now[demoted] != 999
    assert stock_in_sf(world)[service] is None and sf_writes(world) == writes
