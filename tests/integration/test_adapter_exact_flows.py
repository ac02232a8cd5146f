"""The shipped mappings through the engine's steps with Exact Online (the simulator) on one side.

sf_orders_to_exact: a file-backed Salesforce stands in for the source; Exact is the real adapter over
sockets. The customer step (EnsureExactCustomersOperator) runs between the source check and the map
step, so a new company's order lands on its new debtor, an unknown product quarantines its order, a
rerun writes nothing, and a lost state store still creates no second order.
exact_items_to_sf_products: Exact is the source; a data interval extracts exactly the items changed in it.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from erpsync.adapters import FieldMeta, get_adapter
from erpsync.adapters.memory import MemoryAdapter
from erpsync.mapping import default_mappings_dir, load_flow
from erpsync.operators import _steps as steps
from erpsync.operators.exact_customers import EnsureExactCustomersOperator, ExactOrderStepsOperator
from erpsync.sandbox.exact.testing import running_exact
from erpsync.state import StateStore

ADAPTER = "erpsync.adapters.exact_online:ExactOnlineAdapter"
DIV = 1001234
ORDERS = "sf_orders_to_exact"
DAY = datetime(2026, 6, 1, tzinfo=UTC)
# The customer step needs these order columns; the orders mapping lists them as extra source fields.
CUSTOMER_FIELDS = [
    "Account.Name",
    "BillToContact.FirstName",
    "BillToContact.LastName",
    "BillToContact.Phone",
    "BillingStreet",
    "BillingCity",
    "BillingPostalCode",
    "BillingCountry",
]


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    with running_exact(
        tmp_path_factory.mktemp("exact-flows"), minutely_limit=100_000, daily_limit=1_000_000, error_budget=0
    ) as running:
        yield running


@pytest.fixture
def conn(exact, monkeypatch, tmp_path):
    monkeypatch.setenv(
        "AIRFLOW_CONN_EXACT_ONLINE_DEFAULT",
        exact.connection_json(
            refresh_token=exact.new_consent(), token_store_url=f"sqlite:///{tmp_path / 'tokens.db'}"
        ),
    )
    return "exact_online_default"


def _mappings(tmp_path):
    """A copy of the shipped mappings; the orders flow already lists the customer columns."""
    folder = tmp_path / "mappings"
    shutil.copytree(default_mappings_dir(), folder)
    assert set(CUSTOMER_FIELDS) <= set(load_flow(ORDERS, folder).source.fields)
    return folder


def _order(
    n: int, *, tag: str, email: str, company: str | None, code: str, status: str = "Activated"
) -> dict:
    return {
        "Id": f"801{tag}{n:03d}",
        "OrderNumber": f"{tag}{n:03d}",
        "BillToContact.Email": email,
        "BillToContact.FirstName": "Lotte",
        "BillToContact.LastName": f"Visser {n}",
        "BillToContact.Phone": "+31 20 555 0101",
        "Account.Name": company,
        "BillingStreet": "Keizersgracht 1",
        "BillingCity": "Amsterdam",
        "BillingPostalCode": "1015 AA",
        "BillingCountry": "Netherlands",
        "EffectiveDate": "2026-06-01",
        "PoNumber": f"PO-{n}",
        "Description": "rush",
        "Payment_Terms__c": "Net 14",
        "CurrencyIsoCode": "eur",
        "Status": status,
        "OrderItems": [
            {
                "Id": f"802{tag}{n:03d}",
                "Product2.ProductCode": code,
                "Product2.Name": "Widget",
                "Quantity": 2,
                "UnitPrice": 9.5,
                "Tax_Rate__c": 21,
            }
        ],
    }


def _run(tmp_path, folder, sf, conn, store, run_id):
    mapping = load_flow(ORDERS, folder)
    ctx = steps.StepContext(
        flow=ORDERS,
        dag_id=ORDERS,
        run_id=run_id,
        staging=tmp_path / "staging" / run_id,
        store=store,
        interval_start=DAY,
        interval_end=DAY + timedelta(days=1),
    )
    exact = get_adapter(ADAPTER, conn_id=conn)
    out = {"extract": steps.extract_step(ctx, mapping, sf)}
    out["check_source"] = steps.check_step(ctx, mapping, out["extract"], side="source")
    op = ExactOrderStepsOperator(
        task_id=f"ensure_customers_{run_id}",
        manifest=out["check_source"].to_xcom(),
        flow=ORDERS,
        mappings_dir=str(folder),
        statuses=["Activated"],
        state_url=store.url,
    )
    context = {"run_id": run_id, "ti": SimpleNamespace(dag_id=ORDERS), "params": {}}
    out["order_steps"] = op.run_steps(context)
    out["customers"] = out["order_steps"]["extra"]
    lookups = steps.load_lookups(mapping, {"exact_online": exact})
    out["map"] = steps.map_step(ctx, mapping, out["order_steps"], lookups=lookups)
    out["check_target"] = steps.check_step(ctx, mapping, out["map"], side="target")
    out["plan"] = steps.plan_step(ctx, mapping, out["check_target"], exact)
    out["upsert"] = steps.upsert_step(ctx, mapping, out["plan"], exact)
    out["verify"] = steps.verify_step(ctx, mapping, out["upsert"], exact)
    return out


def test_orders_flow_creates_customers_then_orders_once(tmp_path, exact, conn):
    folder = _mappings(tmp_path)
    mapping = load_flow(ORDERS, folder)
    div = exact.simulator.store.divisions[DIV]
    codes = sorted(i["Code"] for i in div.tables["logistics/Items"].values() if i.get("IsSalesItem"))
    tag = uuid.uuid4().hex[:5].upper()
    new_mail = f"Buyer.{tag}@NewCo.example"
    sf = MemoryAdapter(tmp_path / "sf.db", name="salesforce")
    sf.define(
        "Order", [FieldMeta(f) for f in mapping.source.fields if f != "Id"], modified_field="SystemModstamp"
    )
    sf.seed(
        "Order",
        [
            _order(1, tag=tag, email=new_mail, company=f"NewCo {tag} B.V.", code=codes[0]),
            _order(2, tag=tag, email=" JAN.devries@mail.example", company=None, code=codes[1]),
            _order(3, tag=tag, email=new_mail.lower(), company=f"NewCo {tag} B.V.", code="NO-SUCH-SKU"),
            _order(4, tag=tag, email=f"draft.{tag}@x.example", company=None, code=codes[0], status="Draft"),
        ],
        modified=DAY + timedelta(hours=3),
    )
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    out = _run(tmp_path, folder, sf, conn, store, "day1")

    # The order steps: one new company debtor (from order 1; order 3 shares its e-mail but has an
    # unknown product, so it does no customer work); Jan is found and his address follows the order's;
    # the draft order is left out by the statuses.
    customers = out["customers"]
    assert (customers["created"], customers["updated"], customers["failed"]) == (1, 1, 0), customers
    assert customers["orders"]["filtered"] == 1 and customers["orders"]["unknown_product"] == 1
    assert customers["orders"]["passed"] == 3
    accounts = div.tables["crm/Accounts"]
    (newco,) = [a for a in accounts.values() if a["Name"] == f"NewCo {tag} B.V."]
    # Order 1 made it (order 3, newer, has an unknown product and does no customer work).
    assert newco["Email"] == new_mail and newco["City"] == "Amsterdam"
    jan = next(a for a in accounts.values() if a["Code"].strip() == "1004")
    assert jan["AddressLine1"] == "Keizersgracht 1" and jan["Name"] == "Jan de Vries"
    assert not any(a.get("Email") == f"draft.{tag}@x.example" for a in accounts.values())

    orders = {
        o["YourRef"]: o
        for o in div.tables["salesorder/SalesOrders"].values()
        if str(o.get("YourRef", "")).startswith(tag)
    }
    assert sorted(orders) == [f"{tag}001", f"{tag}002"]
    assert orders[f"{tag}001"]["OrderedBy"] == newco["ID"] and orders[f"{tag}002"]["OrderedBy"] == jan["ID"]
    assert orders[f"{tag}001"]["PaymentCondition"] == "14"
    (line,) = [
        ln
        for ln in div.tables["salesorder/SalesOrderLines"].values()
        if ln["OrderID"] == orders[f"{tag}001"]["OrderID"]
    ]
    assert (line["ItemCode"], line["Quantity"], line["NetPrice"], line["VATCode"]) == (
        codes[0],
        2.0,
        9.5,
        "2",
    )
    assert out["verify"]["checked"] == 2 and out["verify"]["differences"] == 0
    stuck = store.quarantine_entries(ORDERS)
    assert [(e["source_key"], e["stage"]) for e in stuck] == [(f"801{tag}003", "map")]

    # Rerun: the orders are in Exact, so they are skipped before any customer work; nothing written.
    again = _run(tmp_path, folder, sf, conn, store, "day1-rerun")
    assert (
        again["customers"]["created"],
        again["customers"]["updated"],
        again["customers"]["unchanged"],
    ) == (0, 0, 0)
    assert again["customers"]["orders"]["skipped_existing"] == 2
    assert again["upsert"].extra["counts"]["created"] == 0

    # The state store is lost: Exact's YourRef still says the orders exist; no second order.
    fresh = StateStore(f"sqlite:///{tmp_path / 'state-new.db'}")
    lost = _run(tmp_path, folder, sf, conn, fresh, "day1-lost-state")
    assert lost["plan"].extra["counts"]["create"] == 0
    refs = [o["YourRef"] for o in div.tables["salesorder/SalesOrders"].values()]
    assert refs.count(f"{tag}001") == 1 and refs.count(f"{tag}002") == 1


def test_items_flow_extracts_from_the_sync_cursor_and_a_backfill_its_interval(tmp_path, exact, conn):
    mapping = load_flow("exact_items_to_sf_products", default_mappings_dir())
    adapter = get_adapter(ADAPTER, conn_id=conn)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    everything = len(exact.simulator.store.divisions[DIV].tables["logistics/Items"])

    def ctx(run_id, start=None, end=None):
        return steps.StepContext(
            flow="exact_items_to_sf_products",
            dag_id="exact_items_to_sf_products",
            run_id=run_id,
            staging=tmp_path / "staging" / run_id,
            store=store,
            interval_start=start,
            interval_end=end,
        )

    # First run: no cursor yet, so every item, through sync/Logistics/Items; the cursor is a row version.
    first = steps.extract_step(ctx("items-1"), mapping, adapter)
    assert first.rows == everything and first.extra["deleted_in_source"] == 0
    assert first.extra["max_cursor"].startswith("exact-sync:")
    store.set_cursor("exact_items_to_sf_products", "logistics/Items", first.extra["max_cursor"])
    changed = sorted(exact.simulator.store.divisions[DIV].tables["logistics/Items"])[:3]
    start = datetime.now(UTC)
    for item_id in changed:
        adapter.hook.update("logistics/Items", item_id, {"Notes": "changed"})
    end = datetime.now(UTC) + timedelta(seconds=1)
    # Next run: exactly the three changes, whatever its data interval says; one sync page.
    calls = len(adapter.call_log.calls)
    second = steps.extract_step(ctx("items-2", end, end + timedelta(hours=1)), mapping, adapter)
    assert second.rows == 3 and second.extra["max_cursor"] > first.extra["max_cursor"]
    assert [c["method"] for c in adapter.call_log.calls[calls:]] == ["read_deleted", "read_sync"]
    # A backfill replays its own interval through the Modified window and leaves the cursor alone.
    replay = steps.extract_step(ctx("backfill__2026-12-07T10:15:00+00:00", start, end), mapping, adapter)
    assert replay.rows == 3 and replay.extra["max_cursor"] is None
    assert "deleted_in_source" not in replay.extra


def test_orders_flow_validates_green_against_exact(tmp_path, exact, conn):
    from erpsync.adapters.validate import validate_flow

    mapping = load_flow(ORDERS, default_mappings_dir())
    sf = MemoryAdapter(tmp_path / "sf.db", name="salesforce")
    sf.define(
        "Order", [FieldMeta(f) for f in mapping.source.fields if f != "Id"], modified_field="SystemModstamp"
    )
    systems = {"salesforce": sf, "exact_online": get_adapter(ADAPTER, conn_id=conn)}
    result = validate_flow(mapping, systems.__getitem__, {})
    assert result.status == "green", result.problems
    assert any("connection exact_online: Connected to Exact Online" in p for p in result.passed)


def test_customer_operator_refuses_bad_configuration_clearly(tmp_path):
    import pandas as pd

    from erpsync.chunks import ChunkWriter
    from erpsync.errors import ConfigError

    with pytest.raises(ValueError, match="manifest is required"):
        EnsureExactCustomersOperator(task_id="c1", manifest=None)
    with pytest.raises(ValueError, match="must name the staged column holding Email"):
        EnsureExactCustomersOperator(task_id="c2", manifest={}, columns={"Email": None})
    with pytest.raises(ValueError, match="source_filter must map columns to lists"):
        EnsureExactCustomersOperator(task_id="c3", manifest={}, source_filter={"Status": "Activated"})
    writer = ChunkWriter(tmp_path, "extract")
    writer.write(pd.DataFrame([{"Id": "801", "Email": "a@b.example", "Status": "Activated"}]))
    op = EnsureExactCustomersOperator(task_id="c4", manifest=writer.close().to_xcom(), flow=ORDERS)
    with pytest.raises(ConfigError) as err:
        op.run_step()  # fails before any connection is made
    assert "no column(s) BillToContact.Email" in str(
        err.value
    ) and "staged columns: Id, Email, Status" in str(err.value)
