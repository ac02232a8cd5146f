"""The Autotask flow's two mappings on Salesforce-shaped rows, with lookup tables shaped as the Autotask
adapter reads them (Resources, Countries, picklists of active values). One test per rule of seed 004."""

from __future__ import annotations

import pandas as pd
import pytest

from erpsync.mapping import load_flow

pytestmark = pytest.mark.unit

RESOURCES = pd.DataFrame(
    [
        # id, first, last, active, licence, resource type, user name
        (10, "Angela", "Richer", True, 1, 1, "aricher"),
        (11, "Anna", "de Vries", True, 1, 1, "adevries"),
        (12, "Carla", "Bakker", True, 1, 1, "cbakker"),
        (13, "Carla", "Bakker", True, 1, 2, "cbakker2"),  # a contractor of the same name
        (14, "Daan", "Visser", False, 1, 1, "dvisser"),  # inactive
        (15, "eva", "smit", True, 1, 1, "esmit"),  # differs only in case
        (16, "ERPSync", "API", True, 7, 3, "erpsync.api"),
    ],
    columns=["id", "firstName", "lastName", "isActive", "licenseType", "resourceType", "userName"],
)
COUNTRIES = pd.DataFrame({"id": [150, 21], "name": ["Netherlands", "Belgium"]})
TYPES = pd.DataFrame(
    {"value": [1, 2, 3, 7, 8], "label": ["Customer", "Lead", "Prospect", "Vendor", "Partner"]}
)
SEGMENTS = pd.DataFrame({"value": [11, 14], "label": ["Construction", "Technology"]})  # active values only
CLASSES = pd.DataFrame({"value": [101, 102, 103], "label": ["Hot", "Warm", "Cold"]})
LOOKUPS = {
    "account_managers": RESOURCES,
    "default_account_manager": RESOURCES,
    "company_types": TYPES,
    "market_segments": SEGMENTS,
    "classifications": CLASSES,
    "countries": COUNTRIES,
}


def account(key: str, **fields) -> dict:
    row = {
        "Id": key,
        "AccountNumber": "A-1",
        "Name": "Acme  BV",
        "AnnualRevenue": 125000.0,
        "BillingStreet": "Damrak 1\n2nd floor",
        "BillingCity": "Amsterdam",
        "BillingState": "Noord-Holland",
        "BillingPostalCode": "1012 AB",
        "BillingCountry": "netherlands",
        "Fax": "+31 20 555 0101",
        "Phone": "+31 20 555 0100",
        "Sic": "7372",
        "TickerSymbol": "acme",
        "Type": "Prospect",
        "Website": "https://acme.example",
        "Rating": "Warm",
        "Owner.FirstName": "Anna",
        "Owner.LastName": "de Vries",
        "Industry": "Technology",
        "ParentId": None,
    }
    row.update(fields)
    return row


def companies(*rows: dict):
    mapping = load_flow("sf_accounts_to_autotask")
    return mapping.compile().apply(pd.DataFrame(list(rows)), LOOKUPS)


def test_company_fields_exactly_as_the_seed_table():
    out = companies(account("001A"))
    assert out.rejected.empty, out.rejected.to_dict("records")
    row = out.frame.iloc[0].to_dict()
    assert row == {
        **row,
        "companyNumber": "A-1",
        "companyName": "Acme BV",
        "assetValue": 125000,
        "address1": "Damrak 1",
        "city": "Amsterdam",
        "state": "Noord-Holland",
        "postalCode": "1012 AB",
        "countryID": 150,
        "fax": "+31 20 555 0101",
        "phone": "+31 20 555 0100",
        "sicCode": "7372",
        "stockSymbol": "ACME",
        "companyType": 3,
        "webAddress": "https://acme.example",
        "classification": 102,
        "ownerResourceID": 11,
        "marketSegmentID": 14,
        "udf.SalesforceCompanyID": "001A",
    }
    assert pd.isna(row["parent.SalesforceCompanyID"])


def test_unknown_company_type_falls_back_to_customer():
    out = companies(account("001A", Type="Customer - Direct"), account("001B", Type=None))
    assert list(out.frame["companyType"]) == [1, 1]


def test_industry_without_a_market_segment_leaves_it_empty():
    out = companies(account("001A", Industry="Agriculture"), account("001B", Industry="Construction"))
    assert out.rejected.empty
    assert pd.isna(out.frame["marketSegmentID"].iloc[0]) and out.frame["marketSegmentID"].iloc[1] == 11


def test_account_manager_is_the_owner_only_on_an_exact_active_resource_match_else_the_default():
    out = companies(
        account("001A"),  # Anna de Vries: active, exact
        account("001B", **{"Owner.FirstName": "Eva", "Owner.LastName": "Smit"}),  # case differs
        account("001C", **{"Owner.FirstName": "Daan", "Owner.LastName": "Visser"}),  # inactive
        account("001D", **{"Owner.FirstName": "Hugo", "Owner.LastName": "de Boer"}),  # not a resource
        account(
            "001E", **{"Owner.FirstName": "Carla", "Owner.LastName": "Bakker"}
        ),  # employee, not contractor
    )
    assert out.rejected.empty, out.rejected.to_dict("records")
    assert list(out.frame["ownerResourceID"]) == [11, 10, 10, 10, 12]


def test_parent_is_carried_as_the_parents_salesforce_id():
    out = companies(account("001A", ParentId="001P"))
    assert out.frame.iloc[0]["parent.SalesforceCompanyID"] == "001P"


def test_a_phone_autotask_would_cut_is_quarantined_not_truncated():
    out = companies(account("001A", Phone="+31 20 555 0100 ext. 12345678"))
    assert out.frame.empty
    assert list(out.rejected["rule"]) == ["max_length"] and list(out.rejected["field"]) == ["phone"]


def contact(key: str, **fields) -> dict:
    row = {
        "Id": key,
        "Email": " Jan@Example.NL ",
        "Fax": "+31 20 555 0102",
        "FirstName": "Jan",
        "OtherPhone": "+31 20 555 0103",
        "LastName": "Jansen",
        "MailingCity": "Utrecht",
        "MailingPostalCode": "3511 AA",
        "MailingState": "Utrecht",
        "MailingStreet": "Oudegracht 1",
        "MobilePhone": "+31 6 1234 5678",
        "Phone": "+31 30 555 0100",
        "Title": "CFO",
        "AccountId": "001A",
    }
    row.update(fields)
    return row


def test_contact_fields_exactly_as_the_seed_table():
    mapping = load_flow("sf_contacts_to_autotask")
    out = mapping.compile().apply(pd.DataFrame([contact("003A")]), {})
    assert out.rejected.empty
    assert out.frame.iloc[0].to_dict() == {
        "_source_key": "003A",
        "emailAddress": "jan@example.nl",
        "faxNumber": "+31 20 555 0102",
        "firstName": "Jan",
        "alternatePhone": "+31 20 555 0103",
        "lastName": "Jansen",
        "city": "Utrecht",
        "zipCode": "3511 AA",
        "state": "Utrecht",
        "addressLine": "Oudegracht 1",
        "mobilePhone": "+31 6 1234 5678",
        "phone": "+31 30 555 0100",
        "title": "CFO",
        "isActive": 1,
        "company.SalesforceCompanyID": "001A",
        "udf.SalesforceContactID": "003A",
    }


def test_a_contact_without_a_company_is_unplaceable_with_that_reason():
    from erpsync.adapters.base import FieldMeta
    from erpsync.adapters.memory import MemoryAdapter
    from erpsync.plan import Planner, PlanSpec

    mapping = load_flow("sf_contacts_to_autotask")
    mapped = mapping.compile().apply(pd.DataFrame([contact("003A", AccountId=None)]), {}).frame
    target = MemoryAdapter(None)
    target.define("Contacts", [FieldMeta(f) for f in mapping.fields], id_field="id")
    plan = Planner(PlanSpec.from_mapping(mapping), target, lambda keys: {}).plan(mapped)
    assert plan.iloc[0]["_action"] == "unplaceable"
    assert "company.SalesforceCompanyID" in plan.iloc[0]["_reason"]
