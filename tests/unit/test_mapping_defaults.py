"""The shipped mappings load, validate and map realistic Salesforce / Exact rows."""

from __future__ import annotations

import pandas as pd
import pytest

from erpsync.mapping import MappingError, default_mappings_dir, list_flows, load_flow, load_mapping

DEFAULT_FLOWS = ["exact_items_to_sf_products", "sf_accounts_to_qb_customers", "sf_orders_to_exact"]


def test_every_shipped_mapping_validates():
    """Each YAML in include/mappings loads against the schema without a problem."""
    flows = list_flows()
    assert set(DEFAULT_FLOWS) <= set(flows)
    for flow in flows:
        mapping = load_mapping(default_mappings_dir() / f"{flow}.yaml")
        assert mapping.flow == flow
        assert mapping.target.identity in mapping.fields


def test_accounts_mapping_shape():
    """The account flow keeps the Salesforce Id as DataExt, written on create only, and cuts Name to 41."""
    m = load_flow("sf_accounts_to_qb_customers")
    assert m.enabled and m.source.system == "salesforce" and m.target.system == "quickbooks"
    assert m.target.identity == "dataext.SalesforceId"
    assert ["Email"] in m.target.match
    assert "dataext.SalesforceId" in m.create_only_fields and "Name" in m.update_fields
    assert m.fields["Name"].max_length == 41 and m.fields["Name"].overflow == "truncate"
    assert {"Id", "Name", "Email__c", "Owner.FirstName", "Owner.LastName", "Type"} <= set(m.source.fields)
    assert m.lookups["sales_reps"].key == ["FirstName", "LastName"]


def test_accounts_mapping_maps_a_chunk():
    """A long name is cut to 41, an unknown Type falls back, an unknown owner gets the default rep."""
    m = load_flow("sf_accounts_to_qb_customers")
    df = pd.DataFrame(
        {
            "Id": ["001A", "001B"],
            "Name": ["Acme  Corp", "B" * 50],
            "AccountNumber": ["1", None],
            "BillingStreet": ["Main 1\nSuite 2", None],
            "BillingCity": ["Amsterdam", None],
            "BillingState": ["NH", None],
            "BillingPostalCode": ["1011AB", None],
            "BillingCountry": ["NL", None],
            "ShippingStreet": [None, None],
            "ShippingCity": [None, None],
            "ShippingState": [None, None],
            "ShippingPostalCode": [None, None],
            "ShippingCountry": [None, None],
            "Phone": ["+31 20 123 4567", None],
            "Fax": [None, None],
            "Email__c": [" Info@Acme.NL ", None],
            "Owner.FirstName": ["Angela", "Nobody"],
            "Owner.LastName": ["Richer", "Known"],
            "Type": ["Customer - Direct", "Martian"],
            "Description": ["long text", None],
        }
    )
    reps = pd.DataFrame({"FirstName": ["Angela"], "LastName": ["Richer"], "Initial": ["AR"]})
    out = m.compile().apply(df, {"sales_reps": reps})
    assert out.rejected.empty
    a, b = out.frame.loc[0], out.frame.loc[1]
    assert a["Name"] == "Acme Corp" and a["Email"] == "info@acme.nl"
    assert a["BillAddress.Addr1"] == "Main 1" and a["BillAddress.Addr2"] == "Suite 2"
    assert a["CustomerTypeRef.FullName"] == "Commercial" and b["CustomerTypeRef.FullName"] == "Other"
    assert a["SalesRepRef.FullName"] == "AR" and b["SalesRepRef.FullName"] == "ADM"
    assert len(b["Name"]) == 41 and a["dataext.SalesforceId"] == "001A" == a["_source_key"]


def test_unknown_flow_names_the_known_ones(tmp_path):
    """Asking for a flow without a file says which flows exist."""
    with pytest.raises(MappingError, match="no mapping for flow 'nope'"):
        load_flow("nope", mappings_dir=tmp_path)


DEFAULT_LOOKUP_MAPPING = """
flow: default_lookup_probe
source: {system: salesforce, object: Order, key: Id}
target: {system: exact_online, object: salesorder/SalesOrders, identity: YourRef}
lookups:
  by_email: {system: exact_online, object: crm/Accounts, key: [Email], value: ID, casefold: true}
  by_code: {system: exact_online, object: crm/Accounts, key: [Code], value: ID}
fields:
  YourRef: {from: Id}
  OrderedBy:
    lookup: by_email
    by: [Email]
    default_lookup: {lookup: by_code, key: "1"}
    required: true
"""


@pytest.mark.parametrize("has_default", [True, False])
def test_default_lookup_agrees_row_by_row_and_vectorized(tmp_path, has_default):
    """A lookup field whose default is another lookup's value for a fixed key (the default debtor by
    code): found, it fills every row without a match; absent, those rows are rejected by name and the
    matched rows map. The row-by-row interpreter gives the same rows and rules."""
    from erpsync.mapping._rowwise import apply_rowwise

    path = tmp_path / "default_lookup_probe.yaml"
    path.write_text(DEFAULT_LOOKUP_MAPPING)
    mapping = load_mapping(path)
    records = [
        {"Id": "o1", "Email": "Jan@Example.nl"},
        {"Id": "o2", "Email": "nobody@example.nl"},
        {"Id": "o3", "Email": None},
    ]
    codes = [f"{'1':>18}", "2"] if has_default else ["2"]
    lookups = {
        "by_email": [{"Email": "jan@example.nl", "ID": "acc-jan"}],
        "by_code": [{"Code": c, "ID": f"acc-{c.strip()}"} for c in codes],
    }
    vector = mapping.compile().apply(pd.DataFrame(records), {k: pd.DataFrame(v) for k, v in lookups.items()})
    rows, rejected = apply_rowwise(mapping, records, lookups)
    got = dict(zip(vector.frame["_source_key"], vector.frame["OrderedBy"], strict=True))
    assert got == {r["YourRef"]: r["OrderedBy"] for r in rows}
    rules = sorted(zip(vector.rejected["_source_key"], vector.rejected["rule"], strict=True))
    assert rules == sorted((r["_source_key"], r["rule"]) for r in rejected)
    if has_default:
        assert got == {"o1": "acc-jan", "o2": "acc-1", "o3": "acc-1"} and rules == []
    else:
        assert got == {"o1": "acc-jan"}
        assert rules == [("o2", "default_lookup"), ("o3", "default_lookup")]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ('default_lookup: {lookup: nowhere, key: "1"}', "unknown lookup 'nowhere'"),
        ('default_lookup: {lookup: by_code, key: ["1", "2"]}', "has 1 key column(s) but the key has 2"),
        ('default_lookup: {lookup: by_code, key: "1"}\n    default: x', "either default or default_lookup"),
    ],
)
def test_a_bad_default_lookup_is_named_with_its_line(tmp_path, option, message):
    path = tmp_path / "default_lookup_probe.yaml"
    path.write_text(DEFAULT_LOOKUP_MAPPING.replace('default_lookup: {lookup: by_code, key: "1"}', option))
    with pytest.raises(MappingError) as raised:
        load_mapping(path)
    assert message in str(raised.value) and "default_lookup_probe.yaml:" in str(raised.value)
