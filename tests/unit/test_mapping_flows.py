"""The three shipped flows on realistic rows: orders with lines, items with create-only fields,
disabling and adding flows with YAML only, and mapped chunks that store as Parquet."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from erpsync.mapping import (
    MappingError,
    check_against_target,
    default_mappings_dir,
    list_flows,
    load_all,
    load_flow,
)

DEBTOR = "11111111-1111-1111-1111-111111111111"
DEFAULT_DEBTOR = "22222222-2222-2222-2222-222222222222"  # the account with code 1 (default_lookup)


def order_item(line_id, code, qty, price, rate):
    return {
        "attributes": {"type": "OrderItem"},
        "Id": line_id,
        "Product2": {"ProductCode": code, "Name": f"Product {code}"},
        "Quantity": qty,
        "UnitPrice": price,
        "Tax_Rate__c": rate,
    }


@pytest.fixture(scope="module")
def orders():
    """Salesforce orders as the REST API nests them: relationship dicts and {"records": [...]} lines."""
    return pd.DataFrame(
        {
            "Id": ["801A", "801B", "801C", "801D", "801E"],
            "OrderNumber": ["00000100", "00000101", "00000102", "00000103", "00000104"],
            "Status": ["Activated", "Activated", "Draft", "Activated", "Activated"],
            "BillToContact": [{"Email": "Jan@Example.NL"}, {"Email": "nobody@x.nl"}, None, None, None],
            "EffectiveDate": ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04", "2024-03-05"],
            "PoNumber": ["PO-1", None, None, None, None],
            "Description": ["deliver before noon", None, None, None, None],
            "Payment_Terms__c": ["Net 14", None, None, None, None],
            "Payment_Method__c": [None, None, None, None, None],
            "CurrencyIsoCode": ["eur", None, None, None, "usd"],
            # added by the order steps: the order's delivery address in Exact (crm/Addresses, type 4)
            "_exact_delivery_address": ["addr-1", None, None, None, None],
            "OrderItems": [
                {
                    "records": [
                        order_item("802a", "SKU1", 2, 10.005, 21),
                        order_item("802b", "SKU2", 1, 5, "9.0"),
                    ]
                },
                {"records": [order_item("802c", "SKU1", 1, 1, 21)]},
                {"records": [order_item("802d", "SKU1", 1, 1, 21)]},
                None,
                [order_item("802e", "GONE", 1, 1, 21), order_item("802f", "SKU1", 1, 1, 5)],
            ],
        }
    )


@pytest.fixture(scope="module")
def exact_tables():
    return {
        "debtors_by_email": pd.DataFrame({"Email": ["jan@example.nl"], "ID": [DEBTOR]}),
        # Exact pads account codes to 18 characters with leading spaces
        "debtors_by_code": pd.DataFrame(
            {"Code": [f"{'1':>18}", f"{'1001':>18}"], "ID": [DEFAULT_DEBTOR, DEBTOR]}
        ),
        "items_by_code": pd.DataFrame({"Code": ["SKU1", "SKU2"], "ID": ["item-1", "item-2"]}),
        "vat_codes": pd.DataFrame(
            {
                "Percentage": [21, 9, 0, 21],
                "Code": ["2", "1", "0", "P21"],
                "VATTransactionType": ["S", "B", "S", "P"],
            }
        ),
    }


@pytest.fixture(scope="module")
def mapped_orders(orders, exact_tables):
    return load_flow("sf_orders_to_exact").compile().apply(orders, exact_tables)


def test_order_header_fields(mapped_orders):
    """Customer matched by e-mail (any case), else the default debtor; terms through the value map."""
    frame = mapped_orders.frame.set_index("_source_key")
    assert list(frame.index) == ["801A", "801B", "801C"]  # 801C is a draft: statuses are the DAG's
    a, b = frame.loc["801A"], frame.loc["801B"]
    assert a["YourRef"] == "00000100" and a["OrderedBy"] == DEBTOR and b["OrderedBy"] == DEFAULT_DEBTOR
    assert a["OrderDate"] == "2024-03-01" and a["Description"] == "Salesforce order 00000100 PO-1"
    assert a["PaymentCondition"] == "14" and pd.isna(b["PaymentCondition"])  # empty: the customer's own
    assert a["Currency"] == "EUR" and b["Currency"] == "EUR"
    assert a["Remarks"] == "deliver before noon"
    # The delivery address the order steps found or created; none: Exact uses the customer's own.
    assert a["DeliveryAddress"] == "addr-1" and pd.isna(b["DeliveryAddress"])


def test_the_delivery_address_comes_from_the_order_steps_not_from_salesforce(orders, exact_tables):
    mapping = load_flow("sf_orders_to_exact")
    assert mapping.source.added == ["_exact_delivery_address"]
    assert "_exact_delivery_address" not in mapping.source.fields  # never asked of Salesforce
    assert {"ShippingStreet", "ShippingPostalCode", "ShippingCity", "ShippingCountry"} <= set(
        mapping.source.fields
    )
    with pytest.raises(MappingError, match=r"_exact_delivery_address.*steps before map"):
        mapping.compile().apply(orders.drop(columns=["_exact_delivery_address"]), exact_tables)


def test_payment_term_and_method_pick_the_exact_condition_together(orders, exact_tables):
    """Rule 5: Exact's payment condition carries the method (B on credit, I collection, K cash, V credit
    card), so term and method choose it together; a pair the value map does not list is rejected,
    naming the pair; the term alone keeps its usual condition; the method alone picks its own."""
    changed = orders.copy()
    changed["Payment_Terms__c"] = ["Net 30", "Net 14", "Net 60", None, "Net 30"]
    changed["Payment_Method__c"] = ["Direct Debit", "Cash", None, "Credit Card", "Invoice"]
    changed["OrderItems"] = [{"records": [order_item(f"80{k}", "SKU1", 1, 1, 21)]} for k in "vwxyz"]
    changed["Status"] = "Activated"
    mapped = load_flow("sf_orders_to_exact").compile().apply(changed, exact_tables)
    frame = mapped.frame.set_index("_source_key")["PaymentCondition"].to_dict()
    assert frame == {"801A": "30I", "801C": "60", "801D": "CC", "801E": "30"}, frame
    why = mapped.rejected.set_index(["_source_key", "field"]).loc[("801B", "PaymentCondition")]
    assert why["rule"] == "unmapped" and why["value"] == "Net 14 / Cash", why.to_dict()


def test_an_unknown_payment_term_is_rejected_not_booked_on_30_days(orders, exact_tables):
    """Rule 5: a term the value map does not list is rejected with the field and the value, never
    replaced by a guessed condition."""
    changed = orders.copy()
    changed["Payment_Terms__c"] = ["Net 14", "Net 45", None, None, None]
    mapped = load_flow("sf_orders_to_exact").compile().apply(changed, exact_tables)
    assert "801B" not in mapped.frame["_source_key"].tolist()
    why = mapped.rejected.set_index(["_source_key", "field"]).loc[("801B", "PaymentCondition")]
    assert why["rule"] == "unmapped" and why["value"] == "Net 45", why.to_dict()


def test_without_the_default_debtor_in_exact_the_orders_that_need_it_are_quarantined(orders, exact_tables):
    """The default debtor's code is not in Exact: orders matched by e-mail map as before; the order
    without a match is rejected, saying which default was looked for and where."""
    tables = {**exact_tables, "debtors_by_code": exact_tables["debtors_by_code"].iloc[1:]}
    mapped = load_flow("sf_orders_to_exact").compile().apply(orders, tables)
    assert mapped.frame["_source_key"].tolist() == ["801A"]
    why = mapped.rejected.set_index(["_source_key", "field"]).loc[("801B", "OrderedBy")]
    assert why["rule"] == "default_lookup"
    assert why["message"] == (
        "'OrderedBy' has no value and its default, the exact_online crm/Accounts record with Code 1 "
        "(lookup 'debtors_by_code'), was not found or is not unique"
    )


def test_order_lines(mapped_orders):
    """Lines are a list of plain dicts per order: item by SKU, VAT code by percentage (sales codes only)."""
    lines = mapped_orders.frame.set_index("_source_key").loc["801A", "SalesOrderLines"]
    assert lines == [
        {"Item": "item-1", "Quantity": 2.0, "NetPrice": 10.01, "Description": "Product SKU1", "VATCode": "2"},
        {"Item": "item-2", "Quantity": 1.0, "NetPrice": 5.0, "Description": "Product SKU2", "VATCode": "1"},
    ]


def test_the_mapping_leaves_the_status_filter_to_the_trigger_form(mapped_orders):
    """One source of truth: the DAG's `statuses` param (extract + order steps), not the mapping."""
    assert load_flow("sf_orders_to_exact").source.filter == {}
    assert mapped_orders.skipped["_source_key"].tolist() == []


def test_missing_product_rejects_the_whole_order(mapped_orders):
    """An order with an unknown SKU or VAT rate is quarantined whole, naming the line and the value."""
    rejected = mapped_orders.rejected.set_index(["_source_key", "field"])
    product = rejected.loc[("801E", "SalesOrderLines.Item")]
    assert product["rule"] == "lookup" and product["value"] == "GONE"
    assert product["message"].startswith("line 802e: no exact_online logistics/Items matches")
    vat = rejected.loc[("801E", "SalesOrderLines.VATCode")]
    assert vat["rule"] == "lookup" and vat["value"] == "5" and vat["message"].startswith("line 802f:")
    no_lines = rejected.loc[("801D", "SalesOrderLines")]
    assert no_lines["rule"] == "min_lines" and no_lines["value"] == "0"
    assert set(mapped_orders.frame["_source_key"]).isdisjoint({"801D", "801E"})


def test_mapped_chunks_store_as_parquet(mapped_orders, tmp_path):
    """What the map task stages (rows with nested lines, and rejections) round-trips through Parquet."""
    mapped_orders.frame.to_parquet(tmp_path / "rows.parquet")
    mapped_orders.rejected.to_parquet(tmp_path / "rejected.parquet")
    back = pd.read_parquet(tmp_path / "rows.parquet")
    assert back["SalesOrderLines"].iloc[0][1]["VATCode"] == "1"
    assert len(pd.read_parquet(tmp_path / "rejected.parquet")) == len(mapped_orders.rejected)


def test_items_to_products():
    """Sales items only; description on create only; unit kept when unknown; EAN digits only."""
    mapping = load_flow("exact_items_to_sf_products")
    assert mapping.create_only_fields == ["Description", "Exact_Item_Id__c"]
    assert "Description" not in mapping.update_fields and "Name" in mapping.update_fields
    items = pd.DataFrame(
        {
            "ID": ["g1", "g2", "g3", "g4"],
            "Code": ["SKU1 ", "SKU2", "SKU3", "SKU4"],
            "Description": ["Widget  large", "Gadget", "Internal", "Bolt"],
            "ExtraDescription": ["Long text", None, None, None],
            "Notes": ["More notes", "Only notes", None, None],
            "IsSalesItem": [True, True, False, True],
            "Unit": ["pc", "crate", "pc", "kg"],
            "ItemGroupCode": ["HW", "XX", None, "SW"],
            "Barcode": ["87-1234-5678-901", None, None, "123456789012345678"],
            "StandardSalesPrice": [12.345, None, 1.0, 3.0],
        }
    )
    out = mapping.compile().apply(items)
    frame = out.frame.set_index("_source_key")
    g1, g2 = frame.loc["g1"], frame.loc["g2"]
    assert g1["ProductCode"] == "SKU1" and g1["StockKeepingUnit"] == "SKU1" and g1["Name"] == "Widget large"
    assert g1["Description"] == "Long text\n\nMore notes" and g2["Description"] == "Only notes"
    assert g1["QuantityUnitOfMeasure"] == "Each" and g2["QuantityUnitOfMeasure"] == "crate"
    assert g1["Family"] == "Hardware" and pd.isna(g2["Family"])
    assert g1["EAN__c"] == "8712345678901" and g1["PricebookEntry.UnitPrice"] == 12.35
    assert (
        g2["PricebookEntry.UnitPrice"] == 0 and bool(g1["IsActive"]) and bool(g1["PricebookEntry.IsActive"])
    )
    assert out.skipped["_source_key"].tolist() == ["g3"]
    assert out.rejected[["_source_key", "field", "rule"]].values.tolist() == [["g4", "EAN__c", "max_length"]]


def test_disabling_a_flow_is_yaml_only(tmp_path):
    """Copy the mappings folder, set enabled: false, point ERPSYNC_MAPPINGS_DIR at it: flow is off."""
    folder = tmp_path / "mappings"
    shutil.copytree(default_mappings_dir(), folder)
    path = folder / "sf_orders_to_exact.yaml"
    path.write_text(path.read_text().replace("enabled: true", "enabled: false", 1))
    assert load_flow("sf_orders_to_exact", mappings_dir=folder).enabled is False
    assert load_flow("sf_orders_to_exact").enabled is True
    custom = (folder / "sf_accounts_to_qb_customers.yaml").read_text()
    custom = custom.replace("flow: sf_accounts_to_qb_customers", "flow: sf_accounts_to_qb_vendors")
    (folder / "sf_accounts_to_qb_vendors.yaml").write_text(
        custom.replace("object: Customer", "object: Vendor")
    )
    assert "sf_accounts_to_qb_vendors" in list_flows(folder)
    assert load_flow("sf_accounts_to_qb_vendors", mappings_dir=folder).target.object == "Vendor"


def test_packages_stay_light_at_import():
    """Operators and DAG files import these at parse time: no pandas, GX, numpy, pyarrow, yaml, jsonschema."""
    probe = (
        "import sys, erpsync.mapping, erpsync.quality;"
        "heavy = {'pandas', 'great_expectations', 'numpy', 'pyarrow', 'yaml', 'jsonschema'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_pinned():
    import erpsync.mapping
    import erpsync.quality

    assert erpsync.mapping.__all__ == [
        "REJECTED_COLUMNS",
        "CompiledMapping",
        "FieldSpec",
        "LinesSpec",
        "LookupSpec",
        "MappedChunk",
        "Mapping",
        "MappingError",
        "Problem",
        "QualitySpec",
        "SourceSpec",
        "TargetSpec",
        "ValueMap",
        "check_against_target",
        "default_mappings_dir",
        "list_flows",
        "load_all",
        "load_flow",
        "load_mapping",
        "mappings_dir",
    ]
    assert erpsync.quality.__all__ == [
        "BAD_COLUMNS",
        "RULE_KINDS",
        "QualityConfigError",
        "QualityResult",
        "QualityThresholdError",
        "SeenValues",
        "enforce_threshold",
        "rule_name",
        "run_checks",
    ]


def test_load_all_reports_broken_files_and_loads_the_rest(tmp_path):
    """One broken mapping gives its error (file, line, field); the other flows still load."""
    folder = tmp_path / "mappings"
    shutil.copytree(default_mappings_dir(), folder)
    path = folder / "exact_items_to_sf_products.yaml"
    path.write_text(
        path.read_text().replace("ProductCode:        {from: Code,", "ProductCode:        {frm: Code,")
    )
    loaded = load_all(folder)
    error = loaded["exact_items_to_sf_products"]
    assert isinstance(error, MappingError)
    assert error.file.endswith("exact_items_to_sf_products.yaml") and error.field == "fields.ProductCode.frm"
    assert (
        error.line
        == path.read_text()
        .splitlines()
        .index(next(line for line in path.read_text().splitlines() if "frm: Code" in line))
        + 1
    )
    assert loaded["sf_orders_to_exact"].flow == "sf_orders_to_exact"
    assert loaded["sf_accounts_to_qb_customers"].enabled


def test_check_against_target_metadata():
    """Lengths, picklists, required and update rules of the target turn into named problems."""
    mapping = load_flow("sf_accounts_to_qb_customers")
    meta = {name: {"length": None, "required": False} for name in mapping.fields}
    assert check_against_target(mapping, meta) == []
    meta["Name"] = {"length": 31, "required": True}  # an older QuickBooks with shorter names
    meta["CustomerTypeRef.FullName"] = {"picklist": ["Commercial", "Channel", "Partner", "Prospect"]}
    meta["dataext.SalesforceId"] = {"updateable": False}
    meta["Email"] = {"updateable": False}
    meta["TermsRef.FullName"] = {"required": True}
    del meta["Fax"]
    problems = {(p.field, p.problem) for p in check_against_target(mapping, meta)}
    assert problems == {
        ("Name", "target allows 31 characters, the mapping lets 41 through"),
        ("CustomerTypeRef.FullName", "value(s) Other are not in the target picklist"),
        ("Email", "the target does not let this field be updated; use on: [create]"),
        ("Fax", "the target quickbooks Customer has no field 'Fax'"),
        (
            "TermsRef.FullName",
            "the target requires 'TermsRef.FullName' on create and the mapping does not set it",
        ),
    }
    lines = {p.field: p.line for p in check_against_target(mapping, meta)}
    assert lines["Name"] == mapping.fields["Name"].line and lines["TermsRef.FullName"] is None


def test_malformed_lines_reject_only_their_order(exact_tables):
    """A lines cell that is not a list of records rejects that order with a clear rule; others map.
    Arrays of dicts (what Parquet gives back) are accepted."""
    import numpy as np

    good = [order_item("802a", "SKU1", 1, 1, 21)]
    orders = pd.DataFrame(
        {
            "Id": ["801A", "801B", "801C", "801D"],
            "OrderNumber": ["1", "2", "3", "4"],
            "Status": ["Activated"] * 4,
            "BillToContact.Email": ["jan@example.nl"] * 4,
            "EffectiveDate": ["2024-03-01"] * 4,
            "PoNumber": [None] * 4,
            "Description": [None] * 4,
            "Payment_Terms__c": [None] * 4,
            "Payment_Method__c": [None] * 4,
            "_exact_delivery_address": [None] * 4,
            "CurrencyIsoCode": [None] * 4,
            "OrderItems": [np.array(good, dtype=object), "not a list", {"totalSize": 1}, [1, 2]],
        }
    )
    out = load_flow("sf_orders_to_exact").compile().apply(orders, exact_tables)
    assert out.frame["_source_key"].tolist() == ["801A"]
    assert out.frame["SalesOrderLines"].iloc[0][0]["Item"] == "item-1"
    bad = out.rejected.set_index("_source_key")
    assert sorted(bad.index) == ["801B", "801C", "801D"] and set(bad["rule"]) == {"malformed_lines"}
    assert bad.loc["801B", "value"] == "str: not a list" and bad.loc["801B", "field"] == "SalesOrderLines"
    assert bad.loc["801B", "message"] == "OrderItems must be a list of records (dicts)"
