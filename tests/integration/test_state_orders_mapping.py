"""The shipped sf_orders_to_exact mapping through every step: order lines travel with the header on
create, the mapping has no status filter of its own (the DAG's `statuses` param is the one source of
truth, applied by the extract and the order steps: tests/e2e/test_flow_orders.py), an unknown product
sends its order to quarantine, and a rerun writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from erpsync.adapters import FieldMeta
from erpsync.adapters.memory import MemoryAdapter
from erpsync.mapping import default_mappings_dir, load_flow
from erpsync.operators import _steps as steps
from erpsync.state import StateStore

FLOW = "sf_orders_to_exact"
DAY = datetime(2026, 6, 1, tzinfo=UTC)
DEBTOR = "11111111-1111-1111-1111-111111111111"
ITEM = "22222222-2222-2222-2222-222222222222"


def _order(n, status="Activated", code="SKU1"):
    return {
        "Id": f"801{n:05d}",
        "OrderNumber": f"000001{n:02d}",
        "BillToContact.Email": "Buyer@Customer.test",
        "EffectiveDate": "2026-06-01",
        "PoNumber": f"PO-{n}",
        "Description": "rush",
        "Payment_Terms__c": "Net 30",
        "CurrencyIsoCode": "eur",
        "Status": status,
        "OrderItems": [
            {
                "Id": f"802{n:05d}",
                "Product2.ProductCode": code,
                "Product2.Name": "Widget",
                "Quantity": 2,
                "UnitPrice": 9.5,
                "Tax_Rate__c": 21,
            }
        ],
    }


def _systems(tmp_path):
    mapping = load_flow(FLOW, default_mappings_dir())
    sf = MemoryAdapter(tmp_path / "sf.db", name="salesforce")
    sf.define(
        "Order", [FieldMeta(f) for f in mapping.source.fields if f != "Id"], modified_field="SystemModstamp"
    )
    exact = MemoryAdapter(tmp_path / "exact.db", name="exact_online")
    fields = [FieldMeta(n, length=s.max_length) for n, s in mapping.fields.items()]
    exact.define("salesorder/SalesOrders", [*fields, FieldMeta("SalesOrderLines")], id_field="OrderID")
    exact.define("crm/Accounts", [FieldMeta("Email"), FieldMeta("Code")], id_field="ID")
    exact.define("logistics/Items", [FieldMeta("Code")], id_field="ID")
    exact.define(
        "vat/VATCodes", [FieldMeta("Percentage"), FieldMeta("Code"), FieldMeta("VATTransactionType")]
    )
    exact.seed("crm/Accounts", [{"ID": DEBTOR, "Email": "buyer@customer.test", "Code": "1001"}])
    exact.seed("logistics/Items", [{"ID": ITEM, "Code": "SKU1"}])
    exact.seed("vat/VATCodes", [{"Id": "v1", "Percentage": 21, "Code": "2", "VATTransactionType": "S"}])
    return mapping, sf, exact, StateStore(f"sqlite:///{tmp_path / 'state.db'}")


def _order_steps_columns(ctx, mapping, manifest):
    """What the DAG's order steps hand the map step for orders without a shipping address: the staged
    rows plus the mapping's `source.added` columns, empty (the steps themselves: tests/e2e)."""
    from erpsync.chunks import ChunkWriter, read_chunks

    writer = ChunkWriter(ctx.staging, "order_steps")
    for chunk in read_chunks(manifest):
        writer.write(chunk.assign(**dict.fromkeys(mapping.source.added)))
    return writer.close(columns=[*manifest.columns, *mapping.source.added])


def _run(tmp_path, mapping, sf, exact, store, run_id):
    ctx = steps.StepContext(
        flow=FLOW,
        dag_id=FLOW,
        run_id=run_id,
        staging=tmp_path / run_id,
        store=store,
        interval_start=DAY,
        interval_end=DAY + timedelta(days=1),
    )
    out = {"extract": steps.extract_step(ctx, mapping, sf)}
    out["check_source"] = steps.check_step(ctx, mapping, out["extract"], side="source")
    out["check_source"] = _order_steps_columns(ctx, mapping, out["check_source"])
    lookups = steps.load_lookups(mapping, {"exact_online": exact})
    out["map"] = steps.map_step(ctx, mapping, out["check_source"], lookups=lookups)
    out["check_target"] = steps.check_step(ctx, mapping, out["map"], side="target")
    out["plan"] = steps.plan_step(ctx, mapping, out["check_target"], exact)
    out["upsert"] = steps.upsert_step(ctx, mapping, out["plan"], exact)
    out["verify"] = steps.verify_step(ctx, mapping, out["upsert"], exact)
    return out


def test_orders_with_lines_filter_quarantine_and_rerun(tmp_path):
    mapping, sf, exact, store = _systems(tmp_path)
    sf.seed(
        "Order",
        [_order(1), _order(3, code="NOPE")],
        modified=DAY + timedelta(hours=3),
    )
    assert mapping.source.filter == {}  # statuses come from the trigger form only
    out = _run(tmp_path, mapping, sf, exact, store, "day1")
    assert out["map"].extra["filtered"] == 0
    orders = exact.all("salesorder/SalesOrders")
    assert len(orders) == 1
    order = orders[0]
    assert order["YourRef"] == "00000101" and order["OrderedBy"] == DEBTOR and order["Currency"] == "EUR"
    assert order["SalesOrderLines"] == [
        {"Item": ITEM, "Quantity": 2.0, "NetPrice": 9.5, "Description": "Widget", "VATCode": "2"}
    ]
    assert out["verify"]["checked"] == 1 and out["verify"]["differences"] == 0
    stuck = store.quarantine_entries(FLOW)
    assert [(e["source_key"], e["stage"]) for e in stuck] == [("80100003", "map")]
    assert "Item" in stuck[0]["column"] or "Item" in (stuck[0]["message"] or "")

    again = _run(tmp_path, mapping, sf, exact, store, "day1-rerun")
    assert again["plan"].extra["counts"]["skip"] == 1
    assert len(exact.write_log("salesorder/SalesOrders")) == 1
