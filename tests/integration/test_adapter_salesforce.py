"""SalesforceAdapter against the seeded Salesforce simulator over real HTTPS sockets.

The connection comes from an ``AIRFLOW_CONN_*`` variable, as in production; nothing of ours is patched.
Expectations are computed from the simulator's own org (what Salesforce holds), never hard-coded, so
the tests keep meaning the same thing when the seed data changes.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from erpsync.adapters import RESULT_COLUMNS, ReadWindow, SystemAdapter, get_adapter
from erpsync.errors import ConfigError, RetriableSourceError
from erpsync.sandbox.salesforce.testing import running_salesforce

ADAPTER = "erpsync.adapters.salesforce:SalesforceAdapter"
FAST = {"retry_base_delay": 0.01, "bulk_poll_interval": 0.02, "max_retries": 2}


@pytest.fixture(scope="module")
def sf(tmp_path_factory):
    with running_salesforce(tmp_path_factory.mktemp("sfadapter")) as sandbox:
        yield sandbox


@pytest.fixture
def connect(sf, monkeypatch):
    """Build adapters on a fresh ``salesforce_test`` connection; close their sockets afterwards."""
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_TEST", sf.connection_json("password", **FAST))
    sf.admin("DELETE", "faults")
    built = []

    def make(**options):
        adapter = get_adapter(ADAPTER, conn_id="salesforce_test", **options)
        built.append(adapter)
        return adapter

    yield make
    for adapter in built:
        adapter.close()
    sf.admin("DELETE", "faults")


@pytest.fixture
def adapter(connect):
    return connect()


def _org(sf):
    return sf.simulator.org


def _stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")


def _live(sf, obj: str) -> list[dict]:
    return [r for r in _org(sf).tables[obj].values() if not r.get("IsDeleted")]


def _seeded_products(sf) -> list[dict]:
    """Products the seed made (created days ago) that carry a code, not the ones these tests wrote."""
    cutoff = datetime.now(UTC) - timedelta(days=1)
    return sorted(
        (r for r in _live(sf, "Product2") if r.get("ProductCode") and _stamp(r["CreatedDate"]) < cutoff),
        key=lambda r: r["ProductCode"],
    )


# ---- connection, registry, describe ------------------------------------------------------------------


def test_registry_builds_it_and_the_connection_answers(adapter):
    """The "module:Class" name builds a SystemAdapter whose check makes one real call."""
    assert isinstance(adapter, SystemAdapter)
    ok, message = adapter.check_connection()
    assert ok and "daily API requests remaining" in message
    assert adapter.call_log.calls[-1]["method"] == "check_connection"


def test_unknown_option_is_a_config_error(sf, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_TEST", sf.connection_json("password"))
    with pytest.raises(ConfigError, match="unknown SalesforceAdapter option"):
        get_adapter(ADAPTER, conn_id="salesforce_test", chunk_size=5)


def test_describe_product2_reports_the_simulators_metadata_and_price_columns(adapter):
    meta = adapter.describe("Product2")
    assert (meta.id_field, meta.modified_field) == ("Id", "SystemModstamp")
    name = meta.field("Name")
    assert (name.length, name.required, name.createable, name.updateable) == (255, True, True, True)
    assert meta.field("ProductCode").length == 255 and not meta.field("ProductCode").external_id
    assert meta.field("Exact_Item_Id__c").external_id and meta.field("Exact_Item_Id__c").length == 36
    assert meta.field("IsActive").required is False  # boolean with a default
    assert meta.field("Id").createable is False and meta.field("SystemModstamp").updateable is False
    price = meta.field("PricebookEntry.UnitPrice")
    assert price.type == "currency" and price.createable and price.updateable and not price.required
    assert meta.field("PricebookEntry.IsActive").type == "boolean"
    assert meta.field("PricebookEntry.Pricebook2Id") is None  # set by the adapter, never mapped
    calls = len(adapter.call_log.calls)
    assert adapter.describe("Product2") is meta and len(adapter.call_log.calls) == calls  # cached
    order = adapter.describe("Order")
    assert (
        order.field("OrderItems").type == "children" and order.field("BillToContact").type == "relationship"
    )
    assert adapter.describe("Account").field("Owner").createable is False


# ---- windowed reads ---------------------------------------------------------------------------------


def test_windowed_read_returns_exactly_the_window_flattened_and_chunked(sf, adapter):
    """[start, end) on SystemModstamp: a record stamped at start is in, one stamped at end is out."""
    org = _org(sf)
    accounts = sorted(_live(sf, "Account"), key=lambda r: (r["SystemModstamp"], r["Id"]))
    start = _stamp(accounts[40]["SystemModstamp"])
    end = _stamp(accounts[140]["SystemModstamp"])
    expected = [r["Id"] for r in accounts if start <= _stamp(r["SystemModstamp"]) < end]
    assert accounts[40]["Id"] in expected and accounts[140]["Id"] not in expected
    columns = ["Id", "SystemModstamp", "Name", "BillingCity", "Owner.FirstName", "Owner.LastName", "Type"]

    frames = list(adapter.read("Account", window=ReadWindow(start, end), columns=columns, chunk_rows=30))

    assert [len(f) for f in frames[:-1]] == [30] * (len(frames) - 1) and 0 < len(frames[-1]) <= 30
    got = pd.concat(frames, ignore_index=True)
    assert list(got.columns) == columns
    assert got["Id"].tolist() == expected  # ordered by SystemModstamp, Id
    for row in got.sample(10, random_state=1).to_dict("records"):
        rec = org.get(row["Id"])
        owner = org.get(rec["OwnerId"])
        assert row["Name"] == rec["Name"] and row["BillingCity"] == rec["BillingCity"]
        assert (row["Owner.FirstName"], row["Owner.LastName"]) == (owner["FirstName"], owner["LastName"])
    pages = [c for c in adapter.call_log.calls if c["method"] == "read" and c["object"] == "Account"]
    assert sum(c["rows"] for c in pages) == len(expected) and len(pages) == 1  # one page of 200-2000


def test_open_window_sides_and_no_window(sf, adapter):
    accounts = _live(sf, "Account")
    middle = _stamp(sorted(r["SystemModstamp"] for r in accounts)[150]).replace(
        microsecond=0
    )  # whole seconds
    after = pd.concat(adapter.read("Account", window=ReadWindow(middle, None), columns=["Id"]))
    before = pd.concat(adapter.read("Account", window=ReadWindow(None, middle), columns=["Id"]))
    everything = pd.concat(adapter.read("Account", columns=["Id", "Name"]))
    assert len(after) + len(before) == len(everything) == len(accounts)
    assert set(after["Id"]).isdisjoint(before["Id"])
    assert set(after["Id"]) == {r["Id"] for r in accounts if _stamp(r["SystemModstamp"]) >= middle}


def test_a_column_salesforce_lacks_is_a_config_error_naming_it(connect):
    adapter = connect()
    with pytest.raises(ConfigError, match=r"Account has no field\(s\) Email\b") as err:
        next(adapter.read("Account", columns=["Id", "Name", "Email"]))
    assert err.value.details["fields"] == ["Email"]
    with pytest.raises(ConfigError, match=r"Nope\.Name"):
        next(adapter.read("Account", columns=["Id", "Nope.Name"]))
    # A relationship path is checked by Salesforce itself: an unknown field at its end is named too.
    with pytest.raises(ConfigError, match=r"Owner\.Shoe_Size__c"):
        next(adapter.read("Account", columns=["Id", "Owner.Shoe_Size__c"]))
    lenient = connect(optional_fields=["Email"])
    frame = next(lenient.read("Account", columns=["Id", "Email"], chunk_rows=5))
    assert len(frame) == 5 and frame["Email"].isna().all()


def test_call_failures_raise_the_hooks_classes_and_are_logged(sf, adapter):
    """A 503 that outlasts the retries raises RetriableSourceError; a write refused whole is not a row."""
    adapter.describe("Account")
    sf.admin("POST", "faults", {"rules": [{"kind": "status", "status": 503, "count": 10, "path": "/query"}]})
    with pytest.raises(RetriableSourceError, match="SERVER_UNAVAILABLE"):
        next(adapter.read("Account", columns=["Id"]))
    failed = adapter.call_log.calls[-1]
    assert (failed["method"], failed["object"], failed["api_calls"]) == (
        "read",
        "Account",
        3,
    )  # 1 + 2 retries
    sf.admin("DELETE", "faults")
    rows = pd.DataFrame(
        [{"_source_key": "x", "_target_id": _live(sf, "Account")[0]["Id"], "IsDeleted": True}]
    )
    with pytest.raises(ConfigError, match="IsDeleted: not updateable"):
        adapter.upsert("Account", rows, identity="Id")


# ---- read_by_keys -----------------------------------------------------------------------------------


def test_read_by_keys_exact_and_casefold(sf, adapter):
    products = {r["ProductCode"]: r for r in _seeded_products(sf)}
    a, b, c = sorted(products)[:3]
    keys = [a.lower(), f"  {b}  ", "NO-SUCH-CODE", None, math.nan]

    folded = adapter.read_by_keys("Product2", "ProductCode", keys, columns=["Name"], casefold=True)
    assert sorted(folded["ProductCode"]) == [a, b]
    assert list(folded.columns) == ["Id", "ProductCode", "Name"]
    assert dict(zip(folded["ProductCode"], folded["Id"], strict=True)) == {
        k: products[k]["Id"] for k in (a, b)
    }

    exact = adapter.read_by_keys("Product2", "ProductCode", [a.lower(), c], columns=["Name"])
    assert exact["ProductCode"].tolist() == [c]  # SOQL matched a.lower() too; exact keeps only c

    none = adapter.read_by_keys("Product2", "ProductCode", [], columns=["Name"])
    assert none.empty and list(none.columns) == ["Id", "ProductCode", "Name"]


def test_read_by_keys_on_ids_skips_malformed_ids_and_quotes_values(sf, adapter):
    account = _live(sf, "Account")[0]
    found = adapter.read_by_keys(
        "Account", "Id", [account["Id"], "not-an-id", "001'; DROP"], columns=["Name"]
    )
    assert found.to_dict("records") == [{"Id": account["Id"], "Name": account["Name"]}]
    quoted = adapter.read_by_keys("Account", "Name", ["O'Brien \\ Zonen\nB.V."], columns=["Name"])
    assert quoted.empty
    sizes = adapter.read_by_keys("Account", "NumberOfEmployees", [account["NumberOfEmployees"], "7.0"])
    assert account["Id"] in set(sizes["Id"])  # numbers match whatever their type or spelling
    assert set(sizes["NumberOfEmployees"]) <= {account["NumberOfEmployees"], 7}


def test_read_by_keys_in_lists_are_split_to_keep_the_url_short(sf, adapter):
    ids = [r["Id"] for r in _live(sf, "Contact")][:450]
    found = adapter.read_by_keys("Contact", "Id", ids, columns=["Email"])
    assert sorted(found["Id"]) == sorted(ids)
    calls = [c for c in adapter.call_log.calls if c["method"] == "read_by_keys"]
    assert len(calls) == 2  # 450 ids x 22 characters > one 8,000-character IN list


# ---- Product2 upsert with the standard price book entry ---------------------------------------------


def _standard_entry(sf, product_id: str) -> dict | None:
    org = _org(sf)
    book = org.standard_pricebook_id()
    hits = [
        e for e in _live(sf, "PricebookEntry") if e["Product2Id"] == product_id and e["Pricebook2Id"] == book
    ]
    assert len(hits) <= 1
    return hits[0] if hits else None


def _products(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_product_upsert_creates_then_updates_and_keeps_the_standard_price(sf, adapter):
    """New products get a standard PricebookEntry; an update changes only what changed."""
    count_before = len(_live(sf, "Product2"))
    rows = _products(
        [
            {
                "_source_key": f"exact-{n}",
                "ProductCode": f"NEW-{n}",
                "StockKeepingUnit": f"NEW-{n}",
                "Name": f"New product {n}",
                "Description": f"created by the adapter test {n}",
                "IsActive": True,
                "Family": "Hardware",
                "Exact_Item_Id__c": f"00000000-0000-0000-0000-00000000000{n}",
                "PricebookEntry.UnitPrice": 10.0 * n,
                "PricebookEntry.IsActive": True,
            }
            for n in (1, 2, 3)
        ]
    )
    created = adapter.upsert("Product2", rows, identity="ProductCode")

    assert list(created.columns) == RESULT_COLUMNS
    assert created["_source_key"].tolist() == ["exact-1", "exact-2", "exact-3"]
    assert created["action"].tolist() == ["created"] * 3, created["error"].tolist()
    assert len(_live(sf, "Product2")) == count_before + 3
    for n, pid in zip((1, 2, 3), created["target_id"], strict=True):
        rec = _org(sf).get(pid)
        assert rec["ProductCode"] == f"NEW-{n}" and rec["Exact_Item_Id__c"].endswith(str(n))
        entry = _standard_entry(sf, pid)
        assert entry["UnitPrice"] == 10.0 * n and entry["IsActive"] is True

    # Update: the planner sends _target_id and no create-only fields; NaN cells must not be written.
    adapter.call_log.calls.clear()
    update = _products(
        [
            {
                "_source_key": "exact-1",
                "_target_id": created.at[0, "target_id"],
                "ProductCode": "NEW-1",
                "Name": "New product 1 (renamed)",
                "Description": math.nan,
                "PricebookEntry.UnitPrice": 10.0,
                "PricebookEntry.IsActive": True,
            },
            {
                "_source_key": "exact-2",
                "_target_id": created.at[1, "target_id"],
                "ProductCode": "NEW-2",
                "Name": "New product 2",
                "Description": math.nan,
                "PricebookEntry.UnitPrice": 25.5,
                "PricebookEntry.IsActive": True,
            },
        ]
    )
    updated = adapter.upsert("Product2", update, identity="ProductCode")

    assert updated["action"].tolist() == ["updated", "updated"], updated["error"].tolist()
    assert updated["target_id"].tolist() == created["target_id"].tolist()[:2]
    first = _org(sf).get(created.at[0, "target_id"])
    assert first["Name"] == "New product 1 (renamed)"
    assert first["Description"] == "created by the adapter test 1"  # NaN left it alone
    assert _standard_entry(sf, created.at[0, "target_id"])["UnitPrice"] == 10.0
    assert _standard_entry(sf, created.at[1, "target_id"])["UnitPrice"] == 25.5
    entry_writes = [c for c in adapter.call_log.calls if c["object"] == "PricebookEntry" and c["rows"]]
    assert [(c["method"], c["rows"]) for c in entry_writes if c["method"] != "upsert"] == [("update", 1)]
    assert len(_live(sf, "Product2")) == count_before + 3

    # The planner's read and verify's read-back see the price through the virtual columns.
    back = adapter.read_by_keys(
        "Product2", "ProductCode", ["NEW-1", "NEW-2"], columns=["Name", "PricebookEntry.UnitPrice"]
    )
    assert dict(zip(back["ProductCode"], back["PricebookEntry.UnitPrice"], strict=True)) == {
        "NEW-1": 10.0,
        "NEW-2": 25.5,
    }


def test_existing_product_code_without_target_id_is_updated_not_duplicated(sf, adapter):
    """ProductCode is no External ID in Salesforce: the adapter looks it up, then updates by Id."""
    existing = _seeded_products(sf)[0]
    before = len(_live(sf, "Product2"))
    old_price = _standard_entry(sf, existing["Id"])["UnitPrice"]
    rows = _products(
        [
            {
                "_source_key": "exact-x",
                "ProductCode": existing["ProductCode"].lower(),
                "Name": existing["Name"],
                "PricebookEntry.UnitPrice": old_price + 1,
                "PricebookEntry.IsActive": True,
            }
        ]
    )
    result = adapter.upsert("Product2", rows, identity="ProductCode")
    assert result.to_dict("records")[0]["action"] == "updated"
    assert result.at[0, "target_id"] == existing["Id"] and len(_live(sf, "Product2")) == before
    assert _standard_entry(sf, existing["Id"])["UnitPrice"] == old_price + 1


def test_malformed_product_rows_fail_alone_with_what_and_where(sf, adapter):
    """Each bad row gets its own error naming the field; the good rows in the same batch land."""
    rows = _products(
        [
            {
                "_source_key": "ok-1",
                "ProductCode": "BAD-OK-1",
                "Name": "Fine",
                "PricebookEntry.UnitPrice": 1.0,
            },
            {
                "_source_key": "long",
                "ProductCode": "BAD-LONG",
                "Name": "N" * 300,
                "PricebookEntry.UnitPrice": 1.0,
            },
            {"_source_key": "pick", "ProductCode": "BAD-PICK", "Name": "Odd family", "Family": "Spaceships"},
            {"_source_key": "nokey", "ProductCode": math.nan, "Name": "No code"},
            {"_source_key": "twice-a", "ProductCode": "BAD-TWICE", "Name": "First copy"},
            {"_source_key": "twice-b", "ProductCode": "BAD-TWICE", "Name": "Second copy"},
            {
                "_source_key": "noprice",
                "ProductCode": "BAD-NOPRICE",
                "Name": "No price",
                "PricebookEntry.IsActive": True,
            },
            {
                "_source_key": "ok-2",
                "ProductCode": "BAD-OK-2",
                "Name": "Fine too",
                "PricebookEntry.UnitPrice": 2.0,
            },
        ]
    )
    result = adapter.upsert("Product2", rows, identity="ProductCode").set_index("_source_key")

    assert result.loc["ok-1", "action"] == result.loc["ok-2", "action"] == "created"
    assert result.loc["twice-a", "action"] == "created"
    expected = {
        "long": ("STRING_TOO_LONG", "Name"),
        "pick": ("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Family"),
        "nokey": ("MISSING_ARGUMENT", "ProductCode"),
        "twice-b": ("DUPLICATE_VALUE", "BAD-TWICE"),
        "noprice": ("REQUIRED_FIELD_MISSING", "PricebookEntry.UnitPrice"),
    }
    for key, (code, named) in expected.items():
        row = result.loc[key]
        assert (row["action"], row["error_code"]) == ("failed", code), (key, row.to_dict())
        assert named in row["error"] and not row["retriable"], row["error"]
    # The product without a price was written; its row fails because its price entry could not be.
    assert (
        result.loc["noprice", "target_id"] and _standard_entry(sf, result.loc["noprice", "target_id"]) is None
    )
    codes = {r["ProductCode"] for r in _live(sf, "Product2")}
    assert {"BAD-OK-1", "BAD-OK-2", "BAD-TWICE"} <= codes and "BAD-LONG" not in codes


def test_a_lock_left_after_the_hooks_retries_is_a_retriable_row(sf, adapter):
    sf.admin("POST", "faults", {"rules": [{"kind": "lock_row", "count": 20}]})
    rows = _products([{"_source_key": "locked", "ProductCode": "LOCKED-1", "Name": "Locked"}])
    result = adapter.upsert("Product2", rows, identity="ProductCode").to_dict("records")[0]
    assert (result["action"], result["error_code"], result["retriable"]) == (
        "failed",
        "UNABLE_TO_LOCK_ROW",
        True,
    )


def test_bulk_path_above_the_threshold_returns_per_row_results(sf, connect):
    adapter = connect(bulk_threshold=3)
    products = _seeded_products(sf)[10:14]
    rows = _products(
        [
            {
                "_source_key": p["ProductCode"],
                "_target_id": p["Id"],
                "ProductCode": p["ProductCode"],
                "Name": p["Name"] + " (bulk)",
            }
            for p in products
        ]
        + [{"_source_key": "gone", "_target_id": "01tDn00000000ZZIAA", "ProductCode": "GONE", "Name": "x"}]
    )
    result = adapter.upsert("Product2", rows, identity="ProductCode")
    assert result["action"].tolist() == ["updated"] * 4 + ["failed"]
    assert result.at[4, "error_code"] and "01tDn00000000ZZIAA" in str(result.at[4, "target_id"])
    assert all(_org(sf).get(p["Id"])["Name"].endswith("(bulk)") for p in products)
    writes = [c for c in adapter.call_log.calls if c["method"] == "update"]
    assert [c["via"] for c in writes] == ["bulk"] and writes[0]["api_calls"] >= 4


# ---- write-back of the QuickBooks ListID --------------------------------------------------------------


def test_write_back_updates_by_id_and_never_creates(sf, adapter):
    accounts = sorted(_live(sf, "Account"), key=lambda r: r["Id"])[:4]
    before = len(_live(sf, "Account"))
    rows = pd.DataFrame(
        [
            {
                "_source_key": accounts[0]["Id"],
                "Id": accounts[0]["Id"],
                "QB_ListID__c": "80000001-1700000001",
            },
            {
                "_source_key": accounts[1]["Id"],
                "_target_id": accounts[1]["Id"],
                "QB_ListID__c": "80000002-1700000002",
            },
            {"_source_key": "ghost", "Id": "001Dn00000000ZZIAA", "QB_ListID__c": "80000003-1700000003"},
            {"_source_key": "no-id", "Id": None, "QB_ListID__c": "80000004-1700000004"},
            {
                "_source_key": accounts[3]["Id"],
                "Id": accounts[3]["Id"],
                "QB_ListID__c": "80000001-1700000001",
            },
        ]
    )
    result = adapter.upsert("Account", rows, identity="Id").set_index("_source_key")

    assert result.loc[accounts[0]["Id"], "action"] == result.loc[accounts[1]["Id"], "action"] == "updated"
    assert _org(sf).get(accounts[0]["Id"])["QB_ListID__c"] == "80000001-1700000001"
    assert _org(sf).get(accounts[1]["Id"])["QB_ListID__c"] == "80000002-1700000002"
    assert (
        result.loc["ghost", "action"] == "failed" and result.loc["ghost", "target_id"] == "001Dn00000000ZZIAA"
    )
    assert (
        result.loc["no-id", "error_code"] == "MISSING_ARGUMENT"
        and "never creates" in result.loc["no-id", "error"]
    )
    dup = result.loc[accounts[3]["Id"]]
    assert (dup["action"], dup["error_code"]) == ("failed", "DUPLICATE_VALUE") and "QB_ListID__c" in dup[
        "error"
    ]
    assert len(_live(sf, "Account")) == before
    writes = [c for c in adapter.call_log.calls if c["method"] == "update" and c["object"] == "Account"]
    assert len(writes) == 1 and writes[0]["via"] == "collections"

    # The write-back stamps the accounts: the next window sees them, and their new ListID.
    now = datetime.now(UTC) + timedelta(seconds=1)
    recent = pd.concat(
        adapter.read(
            "Account", window=ReadWindow(now - timedelta(minutes=5), now), columns=["Id", "QB_ListID__c"]
        )
    )
    assert {accounts[0]["Id"], accounts[1]["Id"]} <= set(recent["Id"])


# ---- orders with lines and the status filter ---------------------------------------------------------


ORDER_COLUMNS = [
    "Id",
    "SystemModstamp",
    "OrderNumber",
    "Status",
    "EffectiveDate",
    "PoNumber",
    "Description",
    "BillToContact.Email",
    "Account.Name",
    "BillingStreet",
    "BillingCity",
    "BillingPostalCode",
    "BillingCountry",
    "OrderItems",
]


def test_orders_with_nested_lines_and_the_status_filter(sf, connect):
    org = _org(sf)
    orders = _live(sf, "Order")
    statuses = sorted({o["Status"] for o in orders})
    chosen = statuses[0]
    adapter = connect(filters={"Status": chosen})  # a templated param renders to a string like this

    got = pd.concat(adapter.read("Order", columns=ORDER_COLUMNS, chunk_rows=500), ignore_index=True)

    expected = {o["Id"] for o in orders if o["Status"] == chosen}
    assert set(got["Id"]) == expected and list(got.columns) == ORDER_COLUMNS
    items = _live(sf, "OrderItem")
    for row in got.to_dict("records"):
        lines = row["OrderItems"]
        assert sorted(line["Id"] for line in lines) == sorted(
            i["Id"] for i in items if i["OrderId"] == row["Id"]
        )
        for line in lines:
            product = org.get(org.get(line["Id"])["Product2Id"])
            assert line["Product2.ProductCode"] == product["ProductCode"]
            assert line["Product2.Name"] == product["Name"]
            assert {"Quantity", "UnitPrice"} <= set(line)
        contact = org.get(org.get(row["Id"])["BillToContactId"])
        email = row["BillToContact.Email"]
        assert (None if pd.isna(email) else email) == (contact or {}).get("Email")
    line_calls = [c for c in adapter.call_log.calls if c["object"] == "OrderItem" and c["method"] == "read"]
    # One line query per chunk of orders (up to ~360 ids fit one IN list), never one per order.
    assert len(expected) > 1 and len(line_calls) == 1

    # read(filters=...) overrides the option; lists and rendered list literals work too.
    rendered = pd.concat(adapter.read("Order", columns=["Id"], filters={"Status": str([chosen])}))
    assert set(rendered["Id"]) == expected
    others = statuses[1:]
    rest = pd.concat(adapter.read("Order", columns=["Id", "Status"], filters={"Order": {"Status": others}}))
    assert set(rest["Status"]) == set(others) and len(rest) == len(orders) - len(expected)
    with pytest.raises(ConfigError, match="no such field"):
        next(adapter.read("Order", columns=["Id"], filters={"Stage": ["Won"]}))


def test_an_order_without_lines_or_bill_to_contact_reads_as_empty_parts(sf, adapter):
    """Incomplete source records are read, not refused: the mapping decides what to do with them."""
    account = _live(sf, "Account")[0]
    book = _org(sf).standard_pricebook_id()
    (made,) = adapter.hook.insert(
        "Order",
        [
            {
                "AccountId": account["Id"],
                "EffectiveDate": "2026-06-01",
                "Status": "Draft",
                "Pricebook2Id": book,
            }
        ],
    )
    assert made.success, made.errors
    got = adapter.read_by_keys(
        "Order", "Id", [made.id, _live(sf, "Order")[0]["Id"]], columns=["BillToContact.Email", "OrderItems"]
    ).set_index("Id")
    assert pd.isna(got.at[made.id, "BillToContact.Email"]) and list(got.at[made.id, "OrderItems"]) == []
    assert len(got) == 2 and len(got.drop(index=made.id).iloc[0]["OrderItems"]) > 0


def test_order_lines_columns_option_and_read_by_keys_carry_lines(sf, connect):
    adapter = connect(line_columns={"OrderItems": ["Id", "Quantity", "Product2.ProductCode"]})
    order = next(o for o in _live(sf, "Order"))
    got = adapter.read_by_keys("Order", "Id", [order["Id"]], columns=["OrderNumber", "OrderItems"])
    lines = got.at[0, "OrderItems"]
    assert lines and all(set(line) == {"Id", "Quantity", "Product2.ProductCode"} for line in lines)
    wrong = connect(line_columns={"OrderItems": ["Id", "Discount__c"]})
    with pytest.raises(ConfigError, match=r"OrderItem has no field.*Discount__c"):
        wrong.read_by_keys("Order", "Id", [order["Id"]], columns=["OrderItems"])


# ---- the shared contract with MemoryAdapter -----------------------------------------------------------


def _contract(adapter, obj: str, identity: str, rows: list[dict], change: dict) -> None:
    """The SystemAdapter behaviour both adapters share: create, find, update by _target_id, read back."""
    assert adapter.describe(obj).field(identity) is not None
    created = adapter.upsert(obj, pd.DataFrame(rows), identity=identity)
    assert list(created.columns) == RESULT_COLUMNS
    assert created["_source_key"].tolist() == [r["_source_key"] for r in rows]
    assert created["action"].tolist() == ["created"] * len(rows), created["error"].tolist()
    id_field = adapter.describe(obj).id_field
    keys = [r[identity] for r in rows]
    found = adapter.read_by_keys(obj, identity, keys, columns=list(change))
    assert list(found.columns)[:2] == [id_field, identity]
    assert sorted(found[id_field]) == sorted(created["target_id"])
    again = adapter.upsert(
        obj,
        pd.DataFrame(
            [
                {"_source_key": r["_source_key"], "_target_id": t, identity: r[identity], **change}
                for r, t in zip(rows, created["target_id"], strict=True)
            ]
        ),
        identity=identity,
    )
    assert again["action"].tolist() == ["updated"] * len(rows)
    assert again["target_id"].tolist() == created["target_id"].tolist()
    back = adapter.read_by_keys(obj, id_field, created["target_id"].tolist(), columns=list(change))
    for col, value in change.items():
        assert back[col].tolist() == [value] * len(rows)
    assert adapter.call_log.calls and all(
        {"method", "object", "rows", "seconds"} <= set(c) for c in adapter.call_log.calls
    )


def test_contract_memory_adapter():
    from erpsync.adapters.base import FieldMeta
    from erpsync.adapters.memory import MemoryAdapter

    memory = MemoryAdapter()
    memory.define(
        "Product2",
        [
            FieldMeta("ProductCode", length=255, external_id=True),
            FieldMeta("Name", length=255, required=True),
        ],
    )
    _contract(memory, "Product2", "ProductCode", _contract_rows("MEM"), {"Name": "Contract renamed"})


def test_contract_salesforce_adapter(adapter):
    _contract(adapter, "Product2", "ProductCode", _contract_rows("CON"), {"Name": "Contract renamed"})


def _contract_rows(prefix: str) -> list[dict]:
    return [
        {"_source_key": f"{prefix}-{n}", "ProductCode": f"{prefix}-{n}", "Name": f"Contract {n}"}
        for n in (1, 2)
    ]
