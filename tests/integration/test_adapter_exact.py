"""Contract tests: ExactOnlineAdapter (through the real hook) against the Exact simulator over sockets.

The adapter is built the way operators build it, from the registry's "module:Class" string with a
connection supplied as `AIRFLOW_CONN_EXACT_ONLINE_DEFAULT`; each test gets its own consent and token
store. Limits are raised on the shared simulator so nothing waits; the rate-limit tests start their
own small simulators.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from erpsync.adapters import RESULT_COLUMNS, ReadWindow, get_adapter
from erpsync.adapters.exact_online import CUSTOMER_RESULT_COLUMNS, ExactOnlineAdapter
from erpsync.errors import ConfigError, FatalSourceError, RateLimitedError
from erpsync.sandbox.exact.testing import running_exact

ADAPTER = "erpsync.adapters.exact_online:ExactOnlineAdapter"
DIV = 1001234
ITEMS = 1_200  # more than one bulk page


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    with running_exact(
        tmp_path_factory.mktemp("exact"),
        minutely_limit=100_000,
        daily_limit=1_000_000,
        error_budget=0,
        item_count=ITEMS,
    ) as running:
        yield running


def _connect(exact, monkeypatch, tmp_path, **options) -> ExactOnlineAdapter:
    conn = exact.connection_json(
        refresh_token=exact.new_consent(),
        token_store_url=f"sqlite:///{tmp_path / f'tok-{uuid.uuid4().hex}.db'}",
    )
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_ONLINE_DEFAULT", conn)
    return get_adapter(ADAPTER, conn_id="exact_online_default", **options)


@pytest.fixture
def adapter(exact, monkeypatch, tmp_path):
    made = _connect(exact, monkeypatch, tmp_path)
    yield made
    made.close()


@pytest.fixture(autouse=True)
def _clear_faults(exact):
    yield
    exact.http.delete(f"{exact.url}/admin/faults")


def _div(exact):
    return exact.simulator.store.divisions[DIV]


def _table(exact, path: str) -> dict[str, dict]:
    return _div(exact).tables[path]


def _calls(adapter, method: str | None = None) -> list[dict]:
    return [c for c in adapter.call_log.calls if method is None or c["method"] == method]


def _items(adapter, n: int = 3) -> list[dict]:
    frame = next(adapter.read("logistics/Items", columns=["ID", "Code", "IsSalesItem"], chunk_rows=50))
    return frame[frame["IsSalesItem"]].head(n).to_dict("records")


def _debtor(exact) -> str:
    return next(r["ID"] for r in _table(exact, "crm/Accounts").values() if r["Code"].strip() == "1002")


# ---- connection, describe ----------------------------------------------------------------------------


def test_built_from_the_registry_string_and_checks_its_connection(adapter):
    assert isinstance(adapter, ExactOnlineAdapter) and adapter.name == "exact_online"
    ok, message = adapter.check_connection()
    assert ok and str(DIV) in message, message
    assert _calls(adapter, "check_connection")


def test_describe_sales_orders_items_and_vat_codes(adapter):
    orders = adapter.describe("salesorder/SalesOrders")
    assert orders.id_field == "OrderID" and orders.modified_field == "Modified"
    assert orders.field("OrderedBy").required and orders.field("YourRef").length == 30
    lines = orders.field("SalesOrderLines")
    assert lines.createable and not lines.updateable
    assert not orders.field("OrderNumber").createable and not orders.field("Status").updateable
    assert adapter.describe("vat/VATCodes").field("Percentage").createable is False
    items = adapter.describe("Logistics/Items")  # the service segment is case-insensitive
    assert (
        items.field("StandardSalesPrice").type == "number"
        and not items.field("StandardSalesPrice").updateable
    )
    with pytest.raises(ConfigError, match="'crm/Opportunities' is not supported"):
        adapter.describe("crm/Opportunities")


# ---- reading -------------------------------------------------------------------------------------------

ITEM_COLUMNS = [
    "ID",
    "Code",
    "Description",
    "ExtraDescription",
    "Notes",
    "IsSalesItem",
    "Unit",
    "ItemGroupCode",
    "Barcode",
    "StandardSalesPrice",
    "Timestamp",
    "Modified",
]


def test_full_read_pages_through_bulk_and_chunks(adapter, exact):
    chunks = list(adapter.read("logistics/Items", columns=ITEM_COLUMNS, chunk_rows=500))
    assert [len(c) for c in chunks] == [500, 500, ITEMS - 1000]
    assert all(list(c.columns) == ITEM_COLUMNS for c in chunks)
    reads = _calls(adapter, "read")
    assert [c["rows"] for c in reads] == [1000, ITEMS - 1000]  # 1,000 per bulk page: two calls
    frame = pd.concat(chunks, ignore_index=True)
    assert frame["ID"].is_unique and len(frame) == ITEMS
    assert frame["Timestamp"].map(type).eq(int).all()  # the row version, an Int64 sent as a string
    assert str(frame["Modified"].dtype).startswith("datetime64") and frame["Modified"].dt.tz is not None
    seeded = {r["Code"]: r["StandardSalesPrice"] for r in _table(exact, "logistics/Items").values()}
    assert dict(zip(frame["Code"], frame["StandardSalesPrice"], strict=True)) == seeded


def test_window_is_half_open_on_modified(adapter):
    items = _items(adapter, 3)
    before = datetime.now(UTC) - timedelta(milliseconds=5)
    for item in items:
        adapter.hook.update("logistics/Items", item["ID"], {"Notes": f"touched {uuid.uuid4().hex[:6]}"})
        time.sleep(0.01)  # distinct Modified milliseconds
    changed = pd.concat(
        adapter.read("logistics/Items", window=ReadWindow(before, None), columns=["Code", "Modified"])
    )
    assert sorted(changed["Code"]) == sorted(i["Code"] for i in items)
    stamps = sorted(changed["Modified"])
    # [first, third): the first two only; the third's own Modified is the excluded end.
    middle = pd.concat(
        adapter.read("logistics/Items", window=ReadWindow(stamps[0], stamps[2]), columns=["Code", "Modified"])
    )
    assert sorted(middle["Modified"]) == stamps[:2]
    assert (
        list(adapter.read("logistics/Items", window=ReadWindow(stamps[2] + timedelta(seconds=1), None))) == []
    )


def test_unknown_columns_are_a_config_error_naming_them_before_any_call(adapter):
    with pytest.raises(ConfigError) as err:
        list(adapter.read("logistics/Items", columns=["Code", "Colour", "WeightNet"]))
    assert "logistics/Items has no field(s) Colour, WeightNet" in str(err.value)
    assert _calls(adapter) == []
    with pytest.raises(ConfigError, match=r"vat/VATCodes has no field\(s\) Timestamp"):
        list(adapter.read("vat/VATCodes", columns=["Code", "Timestamp"]))
    with pytest.raises(ConfigError, match="Timestamp is only on Exact's bulk and sync endpoints"):
        list(adapter.read("salesorder/SalesOrders", columns=["YourRef", "SalesOrderLines", "Timestamp"]))


def test_extra_fields_extend_the_catalogue_and_exact_has_the_last_word(exact, monkeypatch, tmp_path):
    adapter = _connect(exact, monkeypatch, tmp_path, extra_fields={"logistics/Items": ["FreeTextField_05"]})
    assert adapter.describe("logistics/Items").field("FreeTextField_05") is not None
    # This division (the simulator) lacks the free field: Exact's refusal names it.
    with pytest.raises(FatalSourceError, match="FreeTextField_05"):
        list(adapter.read("logistics/Items", columns=["Code", "FreeTextField_05"]))


def test_read_by_keys_exact_and_casefold(adapter, exact):
    codes = sorted(r["Code"] for r in _table(exact, "logistics/Items").values())[:120]
    found = adapter.read_by_keys(
        "logistics/Items", "Code", [*codes, None, "NO-SUCH-CODE"], columns=["Description"]
    )
    assert sorted(found["Code"]) == codes and list(found.columns) == ["ID", "Code", "Description"]
    assert len(_calls(adapter, "read_by_keys")) >= 2  # long key lists are split so URLs stay short
    accounts = adapter.read_by_keys(
        "crm/Accounts", "Email", ["  INFO@Spaak.example", "jan.devries@MAIL.example", "nobody@x.example"],
        columns=["Name", "Code"], casefold=True,
    )  # fmt: skip
    assert sorted(accounts["Name"]) == ["Fietsenwinkel Spaak", "Jan de Vries"]
    assert set(accounts["Code"]) == {"1002", "1004"}  # padded in Exact, trimmed in frames
    by_code = adapter.read_by_keys("crm/Accounts", "Code", ["1002"], columns=["Name"])
    assert list(by_code["Name"]) == ["Fietsenwinkel Spaak"]  # the filter pads the code to 18
    assert adapter.read_by_keys("crm/Accounts", "ID", ["not-a-guid"]).empty  # never sent: would be a 400


def test_lookups_of_the_orders_mapping_load(adapter):
    from erpsync.mapping import default_mappings_dir, load_flow
    from erpsync.operators._steps import load_lookups

    mapping = load_flow("sf_orders_to_exact", default_mappings_dir())
    tables = load_lookups(mapping, {"exact_online": adapter})
    assert "jan.devries@mail.example" in set(tables["debtors_by_email"]["Email"])
    assert len(tables["items_by_code"]) == ITEMS
    vat = tables["vat_codes"]
    assert {"Percentage", "Code", "VATTransactionType"} <= set(vat.columns) and len(vat) == 7
    mapped = mapping.compile().apply(
        pd.DataFrame(
            [
                {
                    "Id": "801A",
                    "OrderNumber": "00000777",
                    "BillToContact.Email": "Jan.deVries@mail.example",
                    "EffectiveDate": "2026-06-01",
                    "PoNumber": "PO1",
                    "Description": None,
                    "Payment_Terms__c": "Net 14",
                    "CurrencyIsoCode": "eur",
                    "Status": "Activated",
                    "Payment_Method__c": None,
                    "_exact_delivery_address": None,  # added by the order steps (no shipping address)
                    "OrderItems": [
                        {
                            "Id": "802A",
                            "Product2.ProductCode": tables["items_by_code"]["Code"].iloc[0],
                            "Product2.Name": "x",
                            "Quantity": 1,
                            "UnitPrice": 2.5,
                            "Tax_Rate__c": 21,
                        }
                    ],
                }
            ]
        ),
        tables,
    )
    assert mapped.rejected.empty, mapped.rejected.to_dict("records")
    row = mapped.frame.iloc[0]
    assert row["SalesOrderLines"][0]["VATCode"] == "2" and row["PaymentCondition"] == "14"


# ---- sales orders -----------------------------------------------------------------------------------------


def _order(ref: str, debtor: str, items: list[dict], **header) -> dict:
    return {
        "_source_key": f"SF-{ref}",
        "YourRef": ref,
        "OrderedBy": debtor,
        "OrderDate": "2026-06-01",
        "Description": f"Salesforce order {ref}",
        "Remarks": None,
        "PaymentCondition": "30",
        "Currency": "EUR",
        "SalesOrderLines": [
            {"Item": it["ID"], "Quantity": 2.0, "NetPrice": 9.5, "Description": f"line {n}", "VATCode": "2"}
            for n, it in enumerate(items)
        ],
        **header,
    }


def _orders_with_ref(exact, ref: str) -> list[dict]:
    return [o for o in _table(exact, "salesorder/SalesOrders").values() if o.get("YourRef") == ref]


def test_sales_orders_are_created_once_with_their_lines(adapter, exact):
    debtor, items = _debtor(exact), _items(adapter, 2)
    refs = [f"T1-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    rows = pd.DataFrame([_order(refs[0], debtor, items), _order(refs[1], debtor, items[:1])])
    out = adapter.upsert("salesorder/SalesOrders", rows, identity="YourRef")
    assert list(out.columns) == RESULT_COLUMNS
    assert list(out["action"]) == ["created", "created"], out.to_dict("records")
    assert len(_calls(adapter, "create")) == 2  # one deep insert per order: Exact has no batch create
    first = _orders_with_ref(exact, refs[0])
    assert len(first) == 1 and first[0]["OrderID"] == out["target_id"][0]
    lines = [
        ln
        for ln in _table(exact, "salesorder/SalesOrderLines").values()
        if ln["OrderID"] == first[0]["OrderID"]
    ]
    assert sorted(ln["Item"] for ln in lines) == sorted(i["ID"] for i in items)
    assert first[0]["OrderDate"].startswith("/Date(")  # sent in Exact's own date form

    # Read back the way verify does: by OrderID with the written columns, lines included.
    back = adapter.read_by_keys(
        "salesorder/SalesOrders", "OrderID", list(out["target_id"]),
        columns=["YourRef", "OrderedBy", "OrderDate", "Description", "Remarks", "PaymentCondition", "Currency",
                 "SalesOrderLines"],
    )  # fmt: skip
    got = back.set_index("YourRef").loc[refs[0]]
    assert got["OrderDate"] == "2026-06-01" and got["OrderedBy"] == debtor
    assert got["SalesOrderLines"] == rows["SalesOrderLines"][0]

    # The same orders again (a rerun that lost its state, or a retried task): an order already in
    # Exact is skipped, as the seed says (existing_orders="skip" is the default): nothing is written.
    adapter.call_log.calls.clear()
    again = adapter.upsert("salesorder/SalesOrders", rows, identity="YourRef")
    assert list(again["action"]) == ["skipped", "skipped"] and list(again["target_id"]) == list(
        out["target_id"]
    )
    assert _calls(adapter, "create") == [] and _calls(adapter, "update") == []  # Exact holds these values
    assert [len(_orders_with_ref(exact, r)) for r in refs] == [1, 1]


def test_an_unknown_item_fails_its_order_only(adapter, exact):
    debtor, items = _debtor(exact), _items(adapter, 1)
    refs = [f"T2-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    bad = _order(refs[1], debtor, [{"ID": str(uuid.uuid4())}])
    rows = pd.DataFrame([_order(refs[0], debtor, items), bad, _order(refs[2], debtor, items)])
    out = adapter.upsert("salesorder/SalesOrders", rows, identity="YourRef")
    assert list(out["action"]) == ["created", "failed", "created"]
    failed = out.iloc[1]
    assert failed["_source_key"] == f"SF-{refs[1]}" and failed["error_code"] == "INVALID_REFERENCE"
    assert (
        "SalesOrderLines[0]" in failed["error"]
        and "Item" in failed["error"]
        and "record 1" in failed["error"]
    )
    assert not failed["retriable"] and failed["target_id"] is None
    assert [len(_orders_with_ref(exact, r)) for r in refs] == [1, 0, 1]


def test_malformed_orders_get_clear_errors_and_the_good_one_lands(adapter, exact):
    debtor, items = _debtor(exact), _items(adapter, 1)
    tag = uuid.uuid4().hex[:6]
    rows = pd.DataFrame(
        [
            {**_order(f"T3-{tag}-nolines", debtor, items), "SalesOrderLines": []},
            _order(f"T3-{tag}-" + "x" * 30, debtor, items),
            {**_order(f"T3-{tag}-nodebtor", debtor, items), "OrderedBy": None},
            {**_order(f"T3-{tag}-baddate", debtor, items), "OrderDate": "next tuesday"},
            {**_order(f"T3-{tag}-noitem", debtor, items), "SalesOrderLines": [{"Quantity": 1}]},
            _order(f"T3-{tag}-good", debtor, items),
        ]
    )
    posts_before = exact.simulator.stats.division_calls.get(str(DIV), 0)
    out = adapter.upsert("salesorder/SalesOrders", rows, identity="YourRef")
    assert list(out["action"]) == ["failed"] * 5 + ["created"]
    codes = list(out["error_code"][:5])
    assert codes == [
        "INVALID_VALUE",
        "STRING_TOO_LONG",
        "REQUIRED_FIELD_MISSING",
        "INVALID_VALUE",
        "INVALID_VALUE",
    ]
    errors = list(out["error"][:5])
    assert "at least one line" in errors[0] and "nolines" in errors[0]
    assert f"YourRef: {len(rows['YourRef'][1])} characters, at most 30 allowed" in errors[1]
    assert "requires OrderedBy" in errors[2]
    assert "'next tuesday' is not an ISO 8601 date" in errors[3]
    assert "SalesOrderLines[0]: Item is required" in errors[4]
    # Refused here, not by Exact: only the lookup and the good order's POST reached the server.
    assert exact.simulator.stats.division_calls[str(DIV)] - posts_before == 2


def test_an_existing_order_gets_its_changed_header_fields_never_a_second_order(
    adapter, exact, monkeypatch, tmp_path
):
    # Updating orders that exist is a setting (the seed, and the default, skip them).
    adapter = _connect(exact, monkeypatch, tmp_path, existing_orders="update")
    debtor, items = _debtor(exact), _items(adapter, 1)
    ref = f"T4-{uuid.uuid4().hex[:8]}"
    created = adapter.upsert(
        "salesorder/SalesOrders", pd.DataFrame([_order(ref, debtor, items)]), identity="YourRef"
    )
    order_id = created["target_id"][0]
    update = pd.DataFrame(
        [{"_source_key": f"SF-{ref}", "_target_id": order_id, "YourRef": ref, "Description": "changed in SF",
          "Remarks": "call first", "PaymentCondition": "30", "Currency": "EUR"}]
    )  # fmt: skip
    adapter.call_log.calls.clear()
    out = adapter.upsert("salesorder/SalesOrders", update, identity="YourRef")
    assert list(out["action"]) == ["updated"] and out["target_id"][0] == order_id
    assert len(_calls(adapter, "update")) == 1 and _calls(adapter, "create") == []
    held = _orders_with_ref(exact, ref)
    assert len(held) == 1 and held[0]["Description"] == "changed in SF" and held[0]["Remarks"] == "call first"

    # A complete order is final: refused here with a clear reason, without a call Exact would refuse.
    _table(exact, "salesorder/SalesOrders")[order_id].update(Status=21, StatusDescription="Complete")
    adapter.call_log.calls.clear()
    closed = adapter.upsert(
        "salesorder/SalesOrders", update.assign(Description="changed again"), identity="YourRef"
    )
    assert closed["action"][0] == "failed" and closed["error_code"][0] == "ORDER_CLOSED"
    assert "complete" in closed["error"][0] and "Description" in closed["error"][0]
    assert _calls(adapter, "update") == []

    skipper = _connect(exact, monkeypatch, tmp_path)  # the default: an order in Exact is left alone
    skipped = skipper.upsert("salesorder/SalesOrders", update.assign(Description="x"), identity="YourRef")
    assert list(skipped["action"]) == ["skipped"] and skipped["target_id"][0] == order_id
    assert len(_orders_with_ref(exact, ref)) == 1


def test_a_post_lost_in_transit_is_looked_up_then_reported_retriable(adapter, exact):
    debtor, items = _debtor(exact), _items(adapter, 1)
    ref = f"T5-{uuid.uuid4().hex[:8]}"
    rows = pd.DataFrame([_order(ref, debtor, items)])
    exact.http.post(
        f"{exact.url}/admin/faults", json={"status": 503, "count": 1, "match": "/salesorder/SalesOrders"}
    )
    out = adapter.upsert("salesorder/SalesOrders", rows, identity="YourRef")
    assert out["action"][0] == "failed" and bool(out["retriable"][0]) and out["error_code"][0] == "TRANSIENT"
    assert _orders_with_ref(exact, ref) == []
    again = adapter.upsert("salesorder/SalesOrders", rows, identity="YourRef")  # the engine resends it
    assert again["action"][0] == "created" and len(_orders_with_ref(exact, ref)) == 1


def test_write_config_errors_name_the_fields(adapter):
    with pytest.raises(ConfigError, match="has no field"):
        adapter.upsert("salesorder/SalesOrders", pd.DataFrame([{"_source_key": "1", "YourRef": "a", "Colour": "red"}]),
                       identity="YourRef")  # fmt: skip
    with pytest.raises(ConfigError, match="OrderNumber are read-only"):
        adapter.upsert("salesorder/SalesOrders", pd.DataFrame([{"_source_key": "1", "YourRef": "a", "OrderNumber": 5}]),
                       identity="YourRef")  # fmt: skip
    empty = adapter.upsert(
        "salesorder/SalesOrders", pd.DataFrame(columns=["_source_key", "YourRef"]), identity="YourRef"
    )
    assert empty.empty and list(empty.columns) == RESULT_COLUMNS


# ---- rate limits ------------------------------------------------------------------------------------------


def test_minutely_limit_is_waited_out_and_the_daily_one_raises(tmp_path, monkeypatch):
    with running_exact(
        tmp_path / "sim",
        minutely_limit=3,
        minute_seconds=1.0,
        daily_limit=100_000,
        error_budget=0,
        item_count=20,
    ) as small:
        adapter = _connect(small, monkeypatch, tmp_path)
        codes = sorted(
            r["Code"] for r in small.simulator.store.divisions[DIV].tables["logistics/Items"].values()
        )
        for code in codes[:5]:  # 1 division call + 5 reads: more than 3 in a (one-second) "minute"
            assert len(adapter.read_by_keys("logistics/Items", "Code", [code])) == 1
        assert adapter.hook.limits[DIV].waited_seconds > 0  # waited, never failed
        assert small.simulator.limits.refused["minutely"] == 0  # it waited before Exact had to refuse
    with running_exact(
        tmp_path / "sim2", minutely_limit=1000, daily_limit=4, error_budget=0, item_count=5
    ) as tiny:
        adapter = _connect(tiny, monkeypatch, tmp_path)
        items = adapter.read_by_keys("logistics/Items", "Code", ["BOLT-00001"], columns=["ID"]).to_dict(
            "records"
        )
        debtor = next(iter(tiny.simulator.store.divisions[DIV].tables["crm/Accounts"]))
        rows = pd.DataFrame([_order(f"T6-{n}", debtor, items) for n in range(3)])
        with pytest.raises(RateLimitedError, match="daily API limit"):
            adapter.upsert("salesorder/SalesOrders", rows, identity="YourRef")


# ---- customers (the orders flow's customer step) ---------------------------------------------------------


def _customer(email, **values) -> dict:
    return {"_source_key": values.pop("key", email), "Email": email, **values}


def _account(exact, account_id: str) -> dict:
    return _table(exact, "crm/Accounts")[account_id]


def _contacts_of(exact, account_id: str) -> list[dict]:
    return [c for c in _table(exact, "crm/Contacts").values() if c["Account"] == account_id]


def test_company_debtor_with_contact_and_person_debtor(adapter, exact):
    tag = uuid.uuid4().hex[:6]
    company = _customer(f"Buyer.{tag}@NewCo.example", CompanyName="NewCo B.V.", FirstName="Lotte", LastName="Visser",
                        Phone="+31 20 555 0101", Street="Keizersgracht 1", City="Amsterdam", PostalCode="1015 AA",
                        Country="nl")  # fmt: skip
    person = _customer(
        f"eva.{tag}@mail.example", FirstName="Eva", LastName="Smit", City="Delft", Country="België"
    )
    out = adapter.ensure_customers(pd.DataFrame([company, person]))
    assert list(out.columns) == CUSTOMER_RESULT_COLUMNS
    assert list(out["action"]) == ["created", "created"] and list(out["kind"]) == ["company", "person"]
    acc = _account(exact, out["account_id"][0])
    assert acc["Name"] == "NewCo B.V." and acc["Status"] == "C" and acc["IsSales"] is True
    assert acc["Email"] == company["Email"] and acc["City"] == "Amsterdam" and acc["Country"] == "NL"
    assert acc["Code"].strip().isdigit()  # Exact numbered it
    (contact,) = _contacts_of(exact, acc["ID"])
    assert (contact["FirstName"], contact["LastName"], contact["Email"]) == (
        "Lotte",
        "Visser",
        company["Email"],
    )
    assert acc["MainContact"] == contact["ID"] == out["contact_id"][0]
    per = _account(exact, out["account_id"][1])
    assert per["Name"] == "Eva Smit" and per["Email"] == person["Email"] and per["IsSales"] is True
    assert per["Country"] == "BE"  # Exact stores ISO codes; a country name is translated
    assert [c["FullName"] for c in _contacts_of(exact, per["ID"])] == ["Eva Smit"]

    # Rerun, e-mails in other case and spacing: found, nothing created or written.
    adapter.call_log.calls.clear()
    again = adapter.ensure_customers(
        pd.DataFrame([{**company, "Email": f"  {company['Email'].upper()} "}, person])
    )
    assert list(again["action"]) == ["unchanged", "unchanged"]
    assert list(again["account_id"]) == list(out["account_id"]) and set(again["matched_by"]) == {"account"}
    assert _calls(adapter, "create") == [] and _calls(adapter, "update") == []
    assert len(_calls(adapter, "read_by_keys")) == 1  # settled customers: one account lookup, no contacts


def test_found_by_email_case_insensitively_and_a_changed_address_updates(adapter, exact):
    spaak = next(a for a in _table(exact, "crm/Accounts").values() if a["Code"].strip() == "1002")
    code, name = spaak["Code"], spaak["Name"]
    out = adapter.ensure_customers(
        pd.DataFrame([_customer(" INFO@Spaak.Example ", CompanyName="Spaak Fietsen", FirstName="Sanne",
                                LastName="Spaak", City="groningen", Street="Vismarkt 3", Phone=None)])
    )  # fmt: skip
    res = out.iloc[0]
    assert res["action"] == "updated" and res["account_id"] == spaak["ID"] and res["matched_by"] == "account"
    assert res["changed"] == "AddressLine1"  # City differs only in case: unchanged; empty Phone never blanks
    held = _account(exact, spaak["ID"])
    assert held["AddressLine1"] == "Vismarkt 3" and held["City"] == "Groningen"
    assert held["Code"] == code and held["Name"] == name  # never the Code, never the name
    assert len(_contacts_of(exact, spaak["ID"])) == 1  # it has a main contact: no contact added


def test_a_customer_known_only_as_a_contact_uses_that_contacts_account(adapter, exact):
    out = adapter.ensure_customers(
        pd.DataFrame(
            [_customer("Anouk.Jansen@goudenkorrel.example", CompanyName="Gouden Korrel", FirstName="Anouk")]
        )
    )
    res = out.iloc[0]
    korrel = next(a for a in _table(exact, "crm/Accounts").values() if a["Code"].strip() == "1001")
    assert (
        res["action"] == "unchanged" and res["matched_by"] == "contact" and res["account_id"] == korrel["ID"]
    )
    assert _calls(adapter, "create") == []


def test_malformed_customer_rows_get_clear_errors_while_others_carry_on(adapter, exact):
    tag = uuid.uuid4().hex[:6]
    rows = pd.DataFrame(
        [
            _customer(None, key="o1", CompanyName="No Mail BV"),
            _customer("not-an-email", key="o2", FirstName="A"),
            _customer(f"noname.{tag}@x.example", key="o3"),
            _customer(f"land.{tag}@x.example", key="o4", FirstName="B", Country="Atlantis"),
            _customer(f"good.{tag}@x.example", key="o5", FirstName="C", LastName="D"),
        ]
    )
    out = adapter.ensure_customers(rows).set_index("_source_key")
    assert out.loc["o1", "action"] == "skipped" and out.loc["o1", "error_code"] == "NO_EMAIL"
    assert "default debtor" in out.loc["o1", "error"]
    assert out.loc["o2", "error_code"] == "INVALID_EMAIL" and "'not-an-email'" in out.loc["o2", "error"]
    assert out.loc["o3", "error_code"] == "NO_NAME" and "customer row o3" in out.loc["o3", "error"]
    assert out.loc["o4", "error_code"] == "INVALID_COUNTRY" and "'Atlantis'" in out.loc["o4", "error"]
    assert list(out["action"]) == ["skipped", "failed", "failed", "failed", "created"]
    assert [c["object"] for c in _calls(adapter, "create")] == ["crm/Accounts", "crm/Contacts"]  # o5 only


def test_a_refused_contact_fails_the_row_and_the_next_run_finishes_it(adapter, exact):
    email = f"half.{uuid.uuid4().hex[:6]}@x.example"
    row = pd.DataFrame([_customer(email, CompanyName="Half Done BV", FirstName="Pim", LastName="Half")])
    exact.http.post(f"{exact.url}/admin/faults", json={"status": 400, "count": 1, "match": "/crm/Contacts"})
    out = adapter.ensure_customers(row).iloc[0]
    assert out["action"] == "failed" and out["account_id"] and "its contact was refused" in out["error"]
    assert "injected by the sandbox" in out["error"] and out["error_code"] == "REJECTED"
    assert _contacts_of(exact, out["account_id"]) == []
    again = adapter.ensure_customers(row).iloc[0]
    assert again["action"] == "updated" and again["changed"] == "MainContact"
    assert again["account_id"] == out["account_id"]  # the same account, not a second one
    (contact,) = _contacts_of(exact, out["account_id"])
    assert _account(exact, out["account_id"])["MainContact"] == contact["ID"] == again["contact_id"]
    assert adapter.ensure_customers(row).iloc[0]["action"] == "unchanged"


def test_ensure_customers_needs_an_email_column(adapter):
    with pytest.raises(ConfigError, match="needs the column"):
        adapter.ensure_customers(pd.DataFrame([{"CompanyName": "x"}]))


@pytest.mark.parametrize(
    "module, heavy",
    [
        ("erpsync.adapters.exact_online", ("pandas", "httpx")),
        ("erpsync.operators.exact_customers", ("pandas",)),
    ],
)
def test_modules_are_cheap_to_import(module, heavy):
    import subprocess
    import sys

    code = f"import json, sys, {module}; print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_bad_options_are_config_errors_at_construction():
    with pytest.raises(ConfigError, match="existing_orders must be 'skip' or 'update'"):
        ExactOnlineAdapter(existing_orders="merge")
    with pytest.raises(ConfigError, match=r"sales order lines have no field\(s\) Colour"):
        ExactOnlineAdapter(line_fields=["Item", "Colour"])
    with pytest.raises(ConfigError, match="chunk_rows must be at least 1"):
        list(ExactOnlineAdapter().read("logistics/Items", chunk_rows=0))
    with pytest.raises(ConfigError, match="sales_document must be 'order' or 'invoice'"):
        ExactOnlineAdapter(sales_document="quote")
    with pytest.raises(ConfigError, match="needs sales_journal: the code of a sales journal"):
        ExactOnlineAdapter(sales_document="invoice", sales_journal=" ")


def test_invoices_in_place_of_orders_describe_as_the_orders_mapping_writes():
    """sales_document=invoice: the orders mapping's fields exist under their order names (the invoice's
    lines and DeliverToAddress), Journal and Type are the adapter's to set, the key is OrderID."""
    from erpsync.mapping import check_against_target, default_mappings_dir, load_flow

    meta = ExactOnlineAdapter(sales_document="invoice", sales_journal="70").describe("salesorder/SalesOrders")
    assert meta.id_field == "OrderID" and "SalesInvoiceLines" not in meta.fields
    assert meta.fields["SalesOrderLines"].type == "lines" and "DeliveryAddress" in meta.fields
    assert not meta.fields["Journal"].required and meta.fields["OrderedBy"].required
    mapping = load_flow("sf_orders_to_exact", default_mappings_dir())

    def problems(meta):
        fields = {
            n: {
                "length": f.length,
                "required": f.required,
                "createable": f.createable,
                "updateable": f.updateable,
            }
            for n, f in meta.fields.items()
        }
        return [(p.field, p.problem) for p in check_against_target(mapping, fields)]

    # the invoice takes the orders mapping exactly as a sales order does
    assert problems(meta) == problems(ExactOnlineAdapter().describe("salesorder/SalesOrders"))
