"""SalesforceAdapter inside the real sync steps, against the seeded simulator over HTTPS.

The products flow runs extract -> map -> plan -> upsert -> verify with Exact Online
played by a file-backed MemoryAdapter and Salesforce by the simulator: new items become products with a
standard price, existing ones are updated, a refused row is quarantined while the rest land, and a rerun
of the same interval writes nothing. The orders flow's extract stages orders with their lines.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import pytest

from erpsync.adapters import FieldMeta, get_adapter
from erpsync.adapters.memory import MemoryAdapter
from erpsync.chunks import read_chunks
from erpsync.mapping import default_mappings_dir, load_flow
from erpsync.operators import _steps as steps
from erpsync.sandbox.salesforce.testing import running_salesforce
from erpsync.state import StateStore

ADAPTER = "erpsync.adapters.salesforce:SalesforceAdapter"
FAST = {"retry_base_delay": 0.01, "bulk_poll_interval": 0.02, "max_retries": 2}
DAY = datetime(2026, 6, 1, tzinfo=UTC)
PRODUCTS = "exact_items_to_sf_products"


@pytest.fixture(scope="module")
def sf(tmp_path_factory):
    with running_salesforce(tmp_path_factory.mktemp("sfflows")) as sandbox:
        yield sandbox


@pytest.fixture
def salesforce(sf, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_FLOWS", sf.connection_json("password", **FAST))
    built = []

    def make(**options):
        adapter = get_adapter(ADAPTER, conn_id="salesforce_flows", **options)
        built.append(adapter)
        return adapter

    yield make
    for adapter in built:
        adapter.close()


@pytest.fixture
def mappings(tmp_path):
    """The shipped mappings, minus Product2.EAN__c, which the simulated org does not define."""
    folder = tmp_path / "mappings"
    shutil.copytree(default_mappings_dir(), folder)
    path = folder / f"{PRODUCTS}.yaml"
    text = path.read_text()
    assert "EAN__c" in text
    path.write_text("\n".join(line for line in text.splitlines() if "EAN__c" not in line) + "\n")
    # A family the org's restricted picklist does not have, so one row is refused by Salesforce.
    families = folder / "value_maps" / "exact_item_group_to_sf_family.yaml"
    families.write_text(families.read_text().replace("LIC: Licenses", "LIC: Licence Keys"))
    return folder


def _items(tmp_path, codes: list[tuple[str, str, float, str]]) -> MemoryAdapter:
    mapping = load_flow(PRODUCTS, default_mappings_dir())
    exact = MemoryAdapter(tmp_path / "exact.db", name="exact_online")
    exact.define(
        "logistics/Items",
        [FieldMeta(f) for f in mapping.source.fields if f != "ID"],
        id_field="ID",
        modified_field=mapping.source.cursor,
    )
    exact.seed(
        "logistics/Items",
        [
            {
                "ID": f"0000000{n}-aaaa-bbbb-cccc-{n:012d}",
                "Code": code,
                "Description": name,
                "ExtraDescription": f"{name}, long text",
                "Notes": None,
                "IsSalesItem": True,
                "Unit": "pc",
                "ItemGroupCode": group,
                "Barcode": f"87{n:011d}",
                "StandardSalesPrice": price,
            }
            for n, (code, name, price, group) in enumerate(codes, start=1)
        ],
        modified=DAY + timedelta(hours=1),
    )
    return exact


def _run(tmp_path, mapping, source, target, store, run_id):
    ctx = steps.StepContext(
        flow=PRODUCTS,
        dag_id=PRODUCTS,
        run_id=run_id,
        staging=tmp_path / run_id,
        store=store,
        interval_start=DAY,
        interval_end=DAY + timedelta(days=1),
    )
    out = {"extract": steps.extract_step(ctx, mapping, source)}
    # The quality checks (Great Expectations) are left out: they never talk to Salesforce.
    out["map"] = steps.map_step(ctx, mapping, out["extract"], lookups={})
    out["plan"] = steps.plan_step(ctx, mapping, out["map"], target)
    out["upsert"] = steps.upsert_step(ctx, mapping, out["plan"], target)
    out["verify"] = steps.verify_step(ctx, mapping, out["upsert"], target)
    return out


def test_products_flow_creates_updates_quarantines_and_reruns_without_writes(
    sf, salesforce, mappings, tmp_path
):
    org = sf.simulator.org
    existing = sorted(r["ProductCode"] for r in org.tables["Product2"].values() if r.get("ProductCode"))[:2]
    exact = _items(
        tmp_path,
        [
            (existing[0], "Pallet Racking Beam (2026)", 99.5, "HW"),
            (existing[1], "Warehouse Scanner (2026)", 1250.0, "HW"),
            ("FLOW-0001", "Label Printer XL", 310.0, "HW"),
            ("FLOW-0002", "WMS Licence Plus", 45.25, "SW"),
            (
                "FLOW-0003",
                "Licence bundle",
                12.0,
                "LIC",
            ),  # maps to family "Licence Keys": not in the picklist
        ],
    )
    mapping = load_flow(PRODUCTS, mappings)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    target = salesforce()

    first = _run(tmp_path, mapping, exact, target, store, "run-1")

    counts = first["upsert"].extra["counts"]
    assert (counts["created"], counts["updated"], counts["failed"]) == (2, 2, 1), counts
    assert first["verify"]["checked"] == 4 and first["verify"]["differences"] == 0
    quarantined = {e["source_key"]: e for e in store.quarantine_entries(PRODUCTS)}
    assert len(quarantined) == 1
    (bad,) = quarantined.values()
    assert bad["stage"] == "upsert" and bad["rule"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert "Family" in bad["message"] and "Licence Keys" in bad["message"]
    book = org.standard_pricebook_id()
    by_code = {r["ProductCode"]: r for r in org.tables["Product2"].values() if not r["IsDeleted"]}
    for code, price in (
        (existing[0], 99.5),
        (existing[1], 1250.0),
        ("FLOW-0001", 310.0),
        ("FLOW-0002", 45.25),
    ):
        entries = [
            e
            for e in org.tables["PricebookEntry"].values()
            if e["Product2Id"] == by_code[code]["Id"] and e["Pricebook2Id"] == book and not e["IsDeleted"]
        ]
        assert [e["UnitPrice"] for e in entries] == [price], code
    assert by_code["FLOW-0002"]["Description"] == "WMS Licence Plus, long text"
    assert "FLOW-0003" not in by_code

    sf.admin("DELETE", "stats")
    rerun = _run(tmp_path, mapping, exact, salesforce(), store, "run-2")

    again = rerun["upsert"].extra["counts"]
    assert (again["created"], again["updated"]) == (0, 0), again
    assert again["skipped"] == 4 and again["failed"] == 1  # the bad row is retried and still refused
    writes = {k: v for k, v in sf.admin("GET", "stats")["calls"].items() if not k.startswith("GET")}
    assert writes == {}, writes  # the hook's pre-flight refuses the bad row again before any call


def test_orders_extract_stages_orders_with_their_lines(sf, salesforce, tmp_path):
    mapping = load_flow("sf_orders_to_exact", default_mappings_dir())
    statuses = sorted({o["Status"] for o in sf.simulator.org.tables["Order"].values()})
    status = "Activated" if "Activated" in statuses else statuses[0]
    source = salesforce(filters={"Status": [status]}, optional_fields=["Payment_Terms__c", "CurrencyIsoCode"])
    ctx = steps.StepContext(
        flow="sf_orders_to_exact",
        dag_id="sf_orders_to_exact",
        run_id="orders-1",
        staging=tmp_path / "orders-1",
        store=StateStore(f"sqlite:///{tmp_path / 'state.db'}"),
        interval_start=None,
        interval_end=None,
    )
    manifest = steps.extract_step(ctx, mapping, source, full_refresh=True, chunk_rows=40)

    frames = list(read_chunks(manifest))
    rows = [r for f in frames for r in f.to_dict("records")]
    expected = [
        o for o in sf.simulator.org.tables["Order"].values() if o["Status"] == status and not o["IsDeleted"]
    ]
    assert len(frames) == -(-len(expected) // 40) and len(rows) == len(expected)
    items = sf.simulator.org.tables["OrderItem"].values()
    for row in rows:
        lines = list(row["OrderItems"])
        assert len(lines) == sum(1 for i in items if i["OrderId"] == row["Id"] and not i["IsDeleted"]) > 0
        for line in lines:
            assert set(mapping.lines.source_fields) - {"Tax_Rate__c"} <= set(line)
            assert line["Product2.ProductCode"] and line["Quantity"] > 0
    assert {r["Status"] for r in rows} == {status}
