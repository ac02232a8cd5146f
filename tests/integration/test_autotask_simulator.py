"""Contract tests of the Autotask simulator over real HTTPS sockets, with plain httpx (no hook).

Each test pins one behaviour of reference/autotask.md (section named in the docstring) so the hook and
the flow are tested against a server that really behaves that way. Time is moved with the simulator's
clock, never slept through.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest

from erpsync.sandbox.autotask.testing import running_autotask

EVERYTHING = [{"op": "exist", "field": "id"}]


@pytest.fixture(scope="module")
def at(tmp_path_factory):
    with running_autotask(tmp_path_factory.mktemp("autotask"), threshold_latency_scale=0) as running:
        yield running


@pytest.fixture
def api(at):
    with at.api() as client:
        yield client


def errors(resp: httpx.Response, status: int) -> list[str]:
    """Assert Autotask's error shape (§9): the status and ``{"errors": [string, ...]}``; return the strings."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"errors"} and body["errors"], body
    assert all(isinstance(m, str) for m in body["errors"]), body
    return body["errors"]


def query(api: httpx.Client, entity: str, *conditions, **doc) -> httpx.Response:
    return api.post(f"{entity}/query", json={"filter": list(conditions), **doc})


def ids(resp: httpx.Response) -> list[int]:
    assert resp.status_code == 200, resp.text
    return [item["id"] for item in resp.json()["items"]]


def new_company(api: httpx.Client, owner: int, **fields) -> int:
    body = {
        "companyName": "Probe BV",
        "companyType": 1,
        "ownerResourceID": owner,
        "phone": "+31 20 1",
        **fields,
    }
    resp = api.post("Companies", json=body)
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"itemId"}
    return resp.json()["itemId"]


@pytest.fixture
def owner(at) -> int:
    return at.info["default_account_manager_id"]


# ---- zones, TLS and authentication (§1, §2) --------------------------------------------------------------


def test_zone_discovery_names_the_zone_and_500_for_an_unknown_or_empty_user(at):
    """§1: zoneInformation returns {zoneName, url, webUrl, ci} without credentials; unknown user is 500."""
    verify = at.ssl_context()
    before = at.simulator.threshold.current()
    resp = httpx.get(
        f"{at.url}/atservicesrest/v1.0/zoneInformation", params={"user": at.username}, verify=verify
    )
    assert resp.status_code == 200
    zone = resp.json()
    assert set(zone) == {"zoneName", "url", "webUrl", "ci"}
    assert zone["url"] == f"{at.url}/zone14/ATServicesRest/" and zone["url"].startswith("https://")
    # Paths are case-insensitive, and the second integration's user lives in the same tenant.
    other = httpx.get(
        f"{at.url}/ATServicesRest/V1.0/ZoneInformation",
        params={"user": at.info["other_username"]},
        verify=verify,
    )
    assert other.json()["url"] == zone["url"]
    discovery = f"{at.url}/atservicesrest/v1.0/zoneInformation"
    unknown = errors(httpx.get(discovery, params={"user": "nobody@example.com"}, verify=verify), 500)
    assert "nobody@example.com" in unknown[0]
    errors(httpx.get(discovery, params={"user": ""}, verify=verify), 500)
    errors(httpx.get(discovery, verify=verify), 500)
    versions = httpx.get(f"{at.url}/atservicesrest/versioninformation", verify=verify)
    assert versions.json() == {"apiVersions": ["1.0"]}
    assert at.simulator.threshold.current() == before  # discovery is not counted (§8)


def test_served_over_https_trusted_only_through_the_sandbox_ca(at):
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{at.url}/atservicesrest/versioninformation")


@pytest.mark.parametrize("drop", ["UserName", "Secret", "ApiIntegrationcode"])
def test_each_of_the_three_headers_is_required(at, drop):
    """§2: UserName, Secret and ApiIntegrationcode on every call, else 401 with the error shape."""
    headers = {k: v for k, v in at.headers().items() if k != drop}
    resp = httpx.post(
        f"{at.zone_url}V1.0/Companies/query",
        json={"filter": EVERYTHING},
        headers=headers,
        verify=at.ssl_context(),
    )
    assert drop in errors(resp, 401)[0]


def test_wrong_secret_or_integration_code_is_401_and_header_names_are_case_insensitive(at):
    verify = at.ssl_context()
    url = f"{at.zone_url}V1.0/ThresholdInformation"
    for bad in (
        {"Secret": "wrong"},
        {"ApiIntegrationcode": "NOTOURCODE"},
        {"UserName": "nobody@example.com"},
    ):
        errors(httpx.get(url, headers={**at.headers(), **bad}, verify=verify), 401)
    lower = {k.lower(): v for k, v in at.headers().items()}
    assert httpx.get(url, headers=lower, verify=verify).status_code == 200


def test_impersonation_attributes_creates_and_refuses_an_inactive_resource(at, owner):
    """§2: ImpersonationResourceId is optional; writes are attributed to that resource."""
    resources = at.simulator.tenant.records["resources"].values()
    inactive = next(r["id"] for r in resources if not r["isActive"])
    with at.api(ImpersonationResourceId=str(owner)) as api:
        cid = new_company(api, owner, companyName="Impersonated BV")
        assert api.get(f"Companies/{cid}").json()["item"]["createdByResourceID"] == owner
    with at.api() as api:
        cid = new_company(api, owner, companyName="Not impersonated BV")
        created_by = api.get(f"Companies/{cid}").json()["item"]["createdByResourceID"]
        assert created_by != owner  # the API user's own resource
    with at.api(ImpersonationResourceId=str(inactive)) as api:
        errors(api.get("ThresholdInformation"), 403)


def test_a_call_to_another_zone_is_401_until_the_client_discovers_the_zone_again(at):
    """§1/§9: the REST root comes from zoneInformation; after the tenant moves, the old root answers 401."""
    verify = at.ssl_context()
    old_root = at.zone_url
    # The discovery host does not serve the API itself.
    errors(
        httpx.get(f"{at.url}/atservicesrest/v1.0/ThresholdInformation", headers=at.headers(), verify=verify),
        401,
    )
    try:
        at.admin("POST", "zone", {"zone": 19})
        errors(httpx.get(f"{old_root}V1.0/ThresholdInformation", headers=at.headers(), verify=verify), 401)
        zone = httpx.get(
            f"{at.url}/atservicesrest/v1.0/zoneInformation", params={"user": at.username}, verify=verify
        ).json()
        assert zone["url"] != old_root and zone["zoneName"] == "EU1 (English)"
        ok = httpx.get(f"{zone['url']}V1.0/ThresholdInformation", headers=at.headers(), verify=verify)
        assert ok.status_code == 200
    finally:
        at.admin("POST", "zone", {"zone": 14})


# ---- URLs, verbs and bad input (§3, §9, §12 #9) ------------------------------------------------------------


def test_unknown_entity_and_unsupported_verbs_answer_in_the_error_shape(api):
    assert "Widgets" in errors(api.post("Widgets/query", json={"filter": EVERYTHING}), 404)[0]
    errors(api.get("Companies"), 405)  # a root GET is not a list call
    errors(api.delete("Companies/0"), 405)  # companies are inactivated, never deleted (§5.1)
    errors(api.post("Resources", json={"firstName": "New"}), 405)  # Resources: query only
    errors(api.patch("Resources", json={"id": 1, "title": "x"}), 405)
    errors(api.post("Countries", json={"name": "Atlantis"}), 405)


def test_contacts_are_created_only_under_their_company(api, owner):
    """§3/§5.2: POST Contacts is refused; POST Companies/{id}/Contacts creates and sets companyID."""
    cid = new_company(api, owner, companyName="Parent Of Contacts BV")
    body = {"firstName": "Ada", "lastName": "Lovelace", "isActive": 1}
    assert "Companies/{id}/Contacts" in errors(api.post("Contacts", json={**body, "companyID": cid}), 405)[0]
    resp = api.post(f"Companies/{cid}/Contacts", json=body)
    assert resp.status_code == 200, resp.text
    contact_id = resp.json()["itemId"]
    item = api.get(f"Contacts/{contact_id}").json()["item"]
    assert item["companyID"] == cid and item["isActive"] == 1
    assert api.get(f"Companies/{cid}/Contacts/{contact_id}").json()["item"]["id"] == contact_id
    # A companyID in the body that differs from the URL, or a parent that does not exist.
    errors(api.post(f"Companies/{cid}/Contacts", json={**body, "companyID": 0}), 500)
    errors(api.post("Companies/999999999/Contacts", json=body), 404)
    # Updates go through the child URL too; the root refuses them.
    errors(api.patch("Contacts", json={"id": contact_id, "title": "x"}), 405)
    assert api.patch(f"Companies/{cid}/Contacts", json={"id": contact_id, "title": "CTO"}).json() == {
        "itemId": contact_id
    }
    assert api.get(f"Contacts/{contact_id}").json()["item"]["title"] == "CTO"


def test_malformed_json_bodies_and_search_parameters_are_400(api):
    errors(api.post("Companies", content=b"{not json", headers={"Content-Type": "application/json"}), 400)
    errors(api.post("Companies/query", content=b"[1,", headers={"Content-Type": "application/json"}), 400)
    errors(api.get("Companies/query"), 400)  # no ?search=
    errors(api.get("Companies/query", params={"search": "{bad"}), 400)
    errors(api.post("Companies", json=["a", "list"]), 400)
    errors(api.post("Companies/query", json={"filter": []}), 400)  # a query needs a condition (§4.1)
    errors(api.post("Companies/query", json={"IncludeFields": ["id"]}), 400)


def test_get_by_id_returns_item_and_a_missing_id_is_an_error(api):
    """§4.2: get-by-id is {"item": {...}}; a missing id is an error (use a query to test existence)."""
    assert api.get("Companies/0").json()["item"]["companyName"] == "ERPSync Sandbox MSP"
    errors(api.get("Companies/999999999"), 404)
    errors(api.get("Companies/abc"), 404)


# ---- writes (§3, §5, §6, §11) -----------------------------------------------------------------------------


def test_patch_changes_only_what_it_names_and_put_clears_the_rest(api, owner):
    """§3/§12 #7: PATCH is partial; PUT replaces, clearing omitted fields (isActive becomes false)."""
    cid = new_company(
        api, owner, companyName="Patch Me BV", city="Delft", fax="+31 15 1", webAddress="https://a.example"
    )
    assert api.patch("Companies", json={"id": cid, "city": "Leiden"}).json() == {"itemId": cid}
    item = api.get(f"Companies/{cid}").json()["item"]
    assert (item["city"], item["fax"], item["webAddress"], item["isActive"]) == (
        "Leiden",
        "+31 15 1",
        "https://a.example",
        True,
    )
    put = {
        "id": cid,
        "companyName": "Patch Me BV",
        "companyType": 1,
        "ownerResourceID": owner,
        "phone": "+31 20 1",
    }
    assert api.put("Companies", json=put).json() == {"itemId": cid}
    item = api.get(f"Companies/{cid}").json()["item"]
    assert (item["city"], item["fax"], item["webAddress"], item["isActive"]) == (None, None, None, False)
    # PUT needs every required field; PATCH needs the id.
    assert "phone" in " ".join(
        errors(api.put("Companies", json={k: v for k, v in put.items() if k != "phone"}), 500)
    )
    assert "id" in errors(api.patch("Companies", json={"city": "Gouda"}), 500)[0]
    errors(api.patch("Companies", json={"id": 999999999, "city": "Gouda"}), 404)


def test_writes_are_validated_like_autotask_does(api, owner):
    """§5/§7/§9: required fields, lengths, literal booleans, integer Contacts.isActive, active picklist
    values and references; validation failures are HTTP 500 with readable messages."""
    base = {"companyName": "Valid BV", "companyType": 1, "ownerResourceID": owner, "phone": "+31 20 1"}
    missing = errors(api.post("Companies", json={"companyName": "No Type BV"}), 500)
    assert {"Required field 'companyType' is missing.", "Required field 'phone' is missing."} <= set(missing)
    assert errors(api.post("Companies", json={**base, "companyName": "x" * 101}), 500) == [
        "String value exceeds maximum length (field:companyName)."
    ]
    errors(api.post("Companies", json={**base, "isActive": 1}), 500)  # Companies.isActive is a boolean
    errors(api.post("Companies", json={**base, "isActive": None}), 500)
    errors(api.post("Companies", json={**base, "companyType": 99}), 500)  # not in the picklist
    errors(api.post("Companies", json={**base, "companyType": 5}), 500)  # inactive picklist value
    errors(api.post("Companies", json={**base, "marketSegmentID": 17}), 500)  # inactive market segment
    resources = api.post(
        "Resources/query", json={"filter": [{"op": "eq", "field": "isActive", "value": False}]}
    )
    errors(api.post("Companies", json={**base, "ownerResourceID": ids(resources)[0]}), 500)
    assert "Unable to find colour" in errors(api.post("Companies", json={**base, "colour": "red"}), 500)[0]
    # Any casing on input; camelCase on output (§3).
    cid = api.post(
        "Companies",
        json={"CompanyName": "Cased BV", "CompanyType": 1, "OwnerResourceId": owner, "Phone": "1"},
    )
    item = api.get(f"Companies/{cid.json()['itemId']}").json()["item"]
    assert item["companyName"] == "Cased BV" and "CompanyName" not in item
    # Contacts.isActive is an integer 1/0, not a boolean (§5.2).
    company = new_company(api, owner, companyName="Contact Rules BV")
    errors(
        api.post(f"Companies/{company}/Contacts", json={"firstName": "A", "lastName": "B", "isActive": True}),
        500,
    )
    errors(api.post(f"Companies/{company}/Contacts", json={"firstName": "A", "lastName": "B"}), 500)


def test_parent_company_must_exist_and_cycles_are_refused(api, owner):
    top = new_company(api, owner, companyName="Holding BV")
    child = new_company(api, owner, companyName="Werkmaatschappij BV", parentCompanyID=top)
    errors(api.patch("Companies", json={"id": top, "parentCompanyID": child}), 500)
    errors(
        api.post(
            "Companies",
            json={
                "companyName": "Orphan",
                "companyType": 1,
                "ownerResourceID": owner,
                "phone": "1",
                "parentCompanyID": 999999999,
            },
        ),
        500,
    )


def test_primary_contact_cannot_be_deleted_others_can(api, owner):
    """§5.2: a contact that is primary contact cannot be deleted; deleting a missing one is a 500 (§9)."""
    cid = new_company(api, owner, companyName="Delete Contacts BV")
    primary = api.post(
        f"Companies/{cid}/Contacts",
        json={"firstName": "P", "lastName": "Q", "isActive": 1, "primaryContact": True},
    )
    other = api.post(f"Companies/{cid}/Contacts", json={"firstName": "R", "lastName": "S", "isActive": 1})
    errors(api.delete(f"Companies/{cid}/Contacts/{primary.json()['itemId']}"), 500)
    assert api.delete(f"Companies/{cid}/Contacts/{other.json()['itemId']}").json() == {
        "itemId": other.json()["itemId"]
    }
    errors(api.delete(f"Companies/{cid}/Contacts/{other.json()['itemId']}"), 500)


# ---- metadata and UDFs (§6, §7) -------------------------------------------------------------------------------


def test_field_metadata_has_picklists_with_string_values(api):
    """§7: entityInformation/fields, camelCase keys, picklist values as strings, inactive values flagged."""
    fields = {f["name"]: f for f in api.get("Companies/entityInformation/fields").json()["fields"]}
    company_type = fields["companyType"]
    assert company_type["isPickList"] and company_type["isRequired"] and company_type["dataType"] == "integer"
    labels = {p["label"]: p for p in company_type["picklistValues"]}
    assert labels["Customer"]["value"] == "1" and isinstance(labels["Customer"]["value"], str)
    assert labels["Suspect"]["isActive"] is False
    segments = {p["label"]: p for p in fields["marketSegmentID"]["picklistValues"]}
    assert {"Construction", "Manufacturing", "Retail", "Technology"} <= set(segments)
    assert segments["Transportation"]["isActive"] is False
    assert {p["label"] for p in fields["classification"]["picklistValues"]} >= {"Hot", "Warm", "Cold"}
    assert (
        fields["ownerResourceID"]["isReference"]
        and fields["ownerResourceID"]["referenceEntityType"] == "Resource"
    )
    assert fields["companyName"]["length"] == 100
    contact_fields = {f["name"]: f for f in api.get("Contacts/entityInformation/fields").json()["fields"]}
    assert contact_fields["isOptedOutFromBulkEmail"]["isQueryable"] is False
    assert contact_fields["isActive"]["dataType"] == "integer"
    info = api.get("Companies/entityInformation").json()["info"]
    assert info["canCreate"] and not info["canDelete"] and info["hasUserDefinedFields"]


def test_udfs_are_created_through_the_api_then_read_and_written_as_name_value_pairs(at, api, owner):
    """§6 + Developer Help "UserDefinedFieldDefinitions" (create/update/query, no delete): the sync creates
    its two UDFs itself; reads list every UDF (nulls included); writes send only the ones to set."""
    fields = {
        f["name"]: f for f in api.get("UserDefinedFieldDefinitions/entityInformation/fields").json()["fields"]
    }
    udf_types = {p["label"]: int(p["value"]) for p in fields["udfType"]["picklistValues"]}
    data_types = {p["label"]: int(p["value"]) for p in fields["dataType"]["picklistValues"]}
    for name, kind in (("Salesforce Company ID", "Company"), ("Salesforce Contact ID", "Contact")):
        existing = query(api, "UserDefinedFieldDefinitions", {"op": "eq", "field": "name", "value": name})
        if not ids(existing):
            resp = api.post(
                "UserDefinedFieldDefinitions",
                json={"name": name, "udfType": udf_types[kind], "dataType": data_types["String"]},
            )
            assert resp.status_code == 200, resp.text
    duplicate = {
        "name": "salesforce company id",
        "udfType": udf_types["Company"],
        "dataType": data_types["String"],
    }
    assert "already exists" in errors(api.post("UserDefinedFieldDefinitions", json=duplicate), 500)[0]
    errors(api.delete("UserDefinedFieldDefinitions/1"), 405)  # UDFs cannot be deleted via the API
    udfs = [f["name"] for f in api.get("Companies/entityInformation/userDefinedFields").json()["fields"]]
    assert "Salesforce Company ID" in udfs and "Salesforce Contact ID" not in udfs

    cid = new_company(
        api,
        owner,
        companyName="UDF BV",
        userDefinedFields=[{"name": "Salesforce Company ID", "value": "001A"}],
    )
    item = api.get(f"Companies/{cid}").json()["item"]
    values = {u["name"]: u["value"] for u in item["userDefinedFields"]}
    assert values["Salesforce Company ID"] == "001A" and values["Lead Source"] is None  # all UDFs, nulls too
    api.patch(
        "Companies", json={"id": cid, "userDefinedFields": [{"name": "Lead Source", "value": "Referral"}]}
    )
    values = {u["name"]: u["value"] for u in api.get(f"Companies/{cid}").json()["item"]["userDefinedFields"]}
    assert values == {**values, "Salesforce Company ID": "001A", "Lead Source": "Referral"}
    # A user clearing the UDF (the seed's un-mapping) leaves null.
    api.patch(
        "Companies", json={"id": cid, "userDefinedFields": [{"name": "Salesforce Company ID", "value": None}]}
    )
    values = {u["name"]: u["value"] for u in api.get(f"Companies/{cid}").json()["item"]["userDefinedFields"]}
    assert values["Salesforce Company ID"] is None and values["Lead Source"] == "Referral"
    # Names are exact; an unknown UDF is refused.
    errors(
        api.patch(
            "Companies",
            json={"id": cid, "userDefinedFields": [{"name": "salesforce company id", "value": "x"}]},
        ),
        500,
    )
    errors(
        api.patch("Companies", json={"id": cid, "userDefinedFields": [{"name": "Nope", "value": "x"}]}), 500
    )


def test_query_by_one_udf_condition_at_most(api, owner):
    """§4.1/§6: "udf": true queries a UDF by name; a second UDF condition is refused."""
    existing = query(
        api, "UserDefinedFieldDefinitions", {"op": "eq", "field": "name", "value": "Salesforce Company ID"}
    )
    if not ids(existing):
        api.post(
            "UserDefinedFieldDefinitions", json={"name": "Salesforce Company ID", "udfType": 1, "dataType": 1}
        )
    cid = new_company(
        api,
        owner,
        companyName="UDF Query BV",
        userDefinedFields=[{"name": "Salesforce Company ID", "value": "001Q"}],
    )
    found = query(
        api, "Companies", {"op": "eq", "field": "Salesforce Company ID", "value": "001Q", "udf": True}
    )
    assert ids(found) == [cid]
    two = query(
        api,
        "Companies",
        {"op": "eq", "field": "Salesforce Company ID", "value": "001Q", "udf": True},
        {"op": "eq", "field": "Lead Source", "value": "x", "udf": True},
    )
    assert "one user-defined field" in errors(two, 400)[0]
    errors(query(api, "Companies", {"op": "eq", "field": "No Such UDF", "value": "x", "udf": True}), 500)


# ---- the filter language (§4.1, §12 #3) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def filter_rows(at):
    """Five companies with known values, tagged by companyNumber prefix FLT-."""
    with at.api() as api:
        owner = at.info["default_account_manager_id"]
        rows = {}
        for n, (name, city, revenue, web) in enumerate(
            [
                ("Alpha Techniek BV", "Amsterdam", 100.0, "https://alpha.example"),
                ("alpha logistics", "Rotterdam", 250.0, None),
                ("Beta Bouw BV", "Amsterdam", 500.0, "https://beta.example"),
                ("Gamma Retail NV", "Utrecht", None, None),
                ("Delta Foods BV", "Delft", 1000.0, "https://delta.example"),
            ]
        ):
            rows[name] = new_company(
                api,
                owner,
                companyName=name,
                city=city,
                assetValue=revenue,
                webAddress=web,
                companyNumber=f"FLT-{n}",
            )
        return rows


def _flt(api, *conditions):
    return set(
        ids(
            query(
                api, "Companies", {"op": "beginsWith", "field": "companyNumber", "value": "FLT-"}, *conditions
            )
        )
    )


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (
            {"op": "eq", "field": "companyName", "value": "ALPHA LOGISTICS"},
            {"alpha logistics"},
        ),  # case-insensitive
        (
            {"op": "noteq", "field": "city", "value": "Amsterdam"},
            {"alpha logistics", "Gamma Retail NV", "Delta Foods BV"},
        ),
        ({"op": "gt", "field": "assetValue", "value": 250}, {"Beta Bouw BV", "Delta Foods BV"}),
        (
            {"op": "gte", "field": "assetValue", "value": 250},
            {"alpha logistics", "Beta Bouw BV", "Delta Foods BV"},
        ),
        ({"op": "lt", "field": "assetValue", "value": 250}, {"Alpha Techniek BV"}),
        ({"op": "lte", "field": "assetValue", "value": "250"}, {"Alpha Techniek BV", "alpha logistics"}),
        (
            {"op": "beginsWith", "field": "companyName", "value": "alpha"},
            {"Alpha Techniek BV", "alpha logistics"},
        ),
        (
            {"op": "endsWith", "field": "companyName", "value": " bv"},
            {"Alpha Techniek BV", "Beta Bouw BV", "Delta Foods BV"},
        ),
        ({"op": "contains", "field": "companyName", "value": "BOUW"}, {"Beta Bouw BV"}),
        ({"op": "exist", "field": "webAddress"}, {"Alpha Techniek BV", "Beta Bouw BV", "Delta Foods BV"}),
        ({"op": "notExist", "field": "assetValue"}, {"Gamma Retail NV"}),
        ({"op": "in", "field": "city", "value": ["Delft", "utrecht"]}, {"Gamma Retail NV", "Delta Foods BV"}),
        (
            {"op": "notIn", "field": "city", "value": ["Amsterdam", "Delft"]},
            {"alpha logistics", "Gamma Retail NV"},
        ),
        ({"op": "BEGINSWITH", "field": "CompanyName", "value": "gamma"}, {"Gamma Retail NV"}),  # any casing
    ],
)
def test_each_operator(api, filter_rows, condition, expected):
    assert _flt(api, condition) == {filter_rows[name] for name in expected}


def test_nested_and_or_groups(api, filter_rows):
    """§4.1: top-level entries are AND-ed; {"op": "or"|"and", "items": [...]} nests."""
    nested = {
        "op": "or",
        "items": [
            {
                "op": "and",
                "items": [
                    {"op": "eq", "field": "city", "value": "Amsterdam"},
                    {"op": "gt", "field": "assetValue", "value": 200},
                ],
            },
            {"op": "eq", "field": "city", "value": "Utrecht"},
        ],
    }
    assert _flt(api, nested) == {filter_rows["Beta Bouw BV"], filter_rows["Gamma Retail NV"]}
    # The GET form carries the same document in ?search= and gives the same answer.
    search = json.dumps({"filter": [{"op": "beginsWith", "field": "companyNumber", "value": "FLT-"}, nested]})
    assert set(ids(api.get("Companies/query", params={"search": search}))) == _flt(api, nested)


def test_unknown_field_is_500_and_unknown_operator_is_an_error(api):
    """§4.1/§12 #3: a wrong field name fails loudly with HTTP 500; `ne` (not an operator) is refused."""
    message = errors(query(api, "Companies", {"op": "eq", "field": "projectID", "value": 1}), 500)[0]
    assert message == "Unable to find projectID in the Company Entity."
    assert "ne" in errors(query(api, "Companies", {"op": "ne", "field": "id", "value": 0}), 400)[0]
    errors(query(api, "Contacts", {"op": "eq", "field": "surveyOptOut", "value": True}), 500)  # not queryable
    errors(query(api, "Companies", {"op": "in", "field": "id", "value": 5}), 400)  # in needs an array
    errors(query(api, "Companies", {"op": "eq", "field": "id"}), 400)  # no value
    errors(query(api, "Companies", {"op": "or", "items": []}), 400)
    errors(query(api, "Companies", {"op": "eq", "field": "id", "value": "abc"}), 500)  # not an integer


def test_unknown_operator_silently_dropped_behind_the_flag(tmp_path):
    """§4.1: the real service has been seen to drop `ne` and return unfiltered rows; the flag reproduces it."""
    with running_autotask(tmp_path, seed=False, drop_unknown_operators=True) as at, at.api() as api:
        everything = ids(query(api, "Resources", *EVERYTHING))
        dropped = ids(query(api, "Resources", {"op": "ne", "field": "id", "value": everything[0]}))
        assert dropped == everything and len(everything) >= 2


def test_at_most_500_or_conditions(api):
    """§4.1/§8: at most 500 OR conditions per query (an `in` list counts as its values)."""
    ors = [{"op": "eq", "field": "id", "value": n} for n in range(500)]
    assert query(api, "Companies", {"op": "or", "items": ors}).status_code == 200
    errors(
        query(api, "Companies", {"op": "or", "items": [*ors, {"op": "eq", "field": "id", "value": 501}]}), 400
    )
    assert query(api, "Companies", {"op": "in", "field": "id", "value": list(range(500))}).status_code == 200
    errors(query(api, "Companies", {"op": "in", "field": "id", "value": list(range(501))}), 400)


def test_include_fields_limits_columns(api, filter_rows):
    resp = query(
        api,
        "Companies",
        {"op": "eq", "field": "companyNumber", "value": "FLT-0"},
        IncludeFields=["id", "companyName"],
    )
    assert resp.json()["items"] == [
        {"id": filter_rows["Alpha Techniek BV"], "companyName": "Alpha Techniek BV"}
    ]
    with_udfs = query(
        api,
        "Companies",
        {"op": "eq", "field": "companyNumber", "value": "FLT-0"},
        IncludeFields=["id", "userDefinedFields"],
    )
    assert set(with_udfs.json()["items"][0]) == {"id", "userDefinedFields"}
    errors(query(api, "Companies", *EVERYTHING, IncludeFields=["id", "bogus"]), 500)


# ---- paging and counts (§4.2, §12 #4) ---------------------------------------------------------------------


def test_pages_of_500_by_id_follow_next_and_prev_page_urls(tmp_path):
    """§4.2: at most 500 per page, id ascending, nextPageUrl a full GET URL until null; prevPageUrl back."""
    with running_autotask(tmp_path, seed=False, threshold_latency_scale=0) as at:
        tenant = at.simulator.tenant
        owner = next(iter(tenant.records["resources"]))
        from erpsync.sandbox.autotask._schema import COMPANIES

        for n in range(1203):  # set up in-process; everything below goes over the socket
            tenant.create(
                COMPANIES,
                {"companyName": f"Bulk {n}", "companyType": 1, "ownerResourceID": owner, "phone": "1"},
                now=0,
                creator=owner,
            )
        with at.api() as api:
            first = query(api, "Companies", {"op": "beginsWith", "field": "companyName", "value": "Bulk "})
            details = first.json()["pageDetails"]
            assert (
                details["count"] == 500 and details["requestCount"] == 500 and details["prevPageUrl"] is None
            )
            assert details["nextPageUrl"].startswith(at.zone_url) and "/query/next?" in details["nextPageUrl"]
            seen, pages, resp = [], [], first
            while True:
                page = resp.json()
                seen += [i["id"] for i in page["items"]]
                pages.append(page)
                if not page["pageDetails"]["nextPageUrl"]:
                    break
                resp = api.get(page["pageDetails"]["nextPageUrl"])  # same headers, opaque URL
                assert resp.status_code == 200, resp.text
            assert [p["pageDetails"]["count"] for p in pages] == [500, 500, 203]
            assert seen == sorted(seen) and len(set(seen)) == 1203
            back = api.get(pages[1]["pageDetails"]["prevPageUrl"]).json()
            assert [i["id"] for i in back["items"]] == seen[:500]
            count = api.post(
                "Companies/query/count",
                json={"filter": [{"op": "beginsWith", "field": "companyName", "value": "Bulk "}]},
            )
            assert count.json() == {"queryCount": 1203}
            small = query(api, "Companies", *EVERYTHING, MaxRecords=7)
            assert small.json()["pageDetails"]["count"] == 7
            errors(query(api, "Companies", *EVERYTHING, MaxRecords=501), 400)
            errors(query(api, "Companies", *EVERYTHING, MaxRecords=0), 400)
            # More than 500 rows: IncludeFields must name id (§4.1).
            errors(query(api, "Companies", *EVERYTHING, IncludeFields=["companyName"]), 500)


def test_count_by_get_and_post(api, filter_rows):
    doc = {"filter": [{"op": "beginsWith", "field": "companyNumber", "value": "FLT-"}]}
    assert api.post("Companies/query/count", json=doc).json() == {"queryCount": 5}
    assert api.get("Companies/query/count", params={"search": json.dumps(doc)}).json() == {"queryCount": 5}


# ---- the seed (dirty on purpose) -----------------------------------------------------------------------------


def test_seed_has_the_dirt_the_sync_must_handle(api):
    def count(entity, *conditions):
        return api.post(f"{entity}/query/count", json={"filter": list(conditions)}).json()["queryCount"]

    # Names are not unique (§5.1): the same company twice, and two active resources named Carla Bakker.
    assert count("Companies", {"op": "eq", "field": "companyName", "value": "Bakkerij Van Dijk"}) == 2
    carla = [
        {"op": "eq", "field": "firstName", "value": "Carla"},
        {"op": "eq", "field": "lastName", "value": "Bakker"},
    ]
    assert count("Resources", *carla, {"op": "eq", "field": "isActive", "value": True}) == 2
    # Salesforce owners that are not (active) resources.
    assert count("Resources", {"op": "eq", "field": "lastName", "value": "Mulder"}) == 0
    assert (
        count(
            "Resources",
            {"op": "eq", "field": "lastName", "value": "Visser"},
            {"op": "eq", "field": "isActive", "value": False},
        )
        == 1
    )
    # A company owned by an inactive resource, and an inactive company.
    assert count("Companies", {"op": "eq", "field": "isActive", "value": False}) >= 1
    # Companies that are Salesforce sandbox accounts (same name, address 1, city, state).
    assert count("Companies", {"op": "beginsWith", "field": "companyNumber", "value": "AT-70"}) == 6


# ---- threshold and latency (§8, §12 #1-2) ------------------------------------------------------------------


def test_threshold_is_per_tenant_rolling_and_429_above_it(tmp_path):
    """§8: every caller of the tenant counts; ThresholdInformation shows the live count; above the limit
    every caller gets 429 in the error shape; refused calls are not counted; the window rolls."""
    with running_autotask(tmp_path, seed=False, threshold=20, threshold_latency_scale=0) as at:
        clock = at.simulator.clock
        with at.api() as ours, at.api(other=True) as theirs:
            info = ours.get("ThresholdInformation").json()
            assert info == {
                "externalRequestThreshold": 20,
                "requestThresholdTimeframe": 60,
                "currentTimeframeRequestCount": 1,
            }
            for _ in range(9):
                assert theirs.get("ThresholdInformation").status_code == 200
            clock.advance(1800)  # half an hour later
            at.admin("POST", "threshold", {"add": 9})  # other integrations' traffic
            assert ours.get("ThresholdInformation").json()["currentTimeframeRequestCount"] == 20
            assert "threshold" in errors(ours.post("Companies/query", json={"filter": EVERYTHING}), 429)[0]
            errors(theirs.get("ThresholdInformation"), 429)  # the other integration is locked out too
            assert at.simulator.threshold.current() == 20  # refused calls are not counted
            clock.advance(1800)  # the first ten calls leave the rolling hour
            info = ours.get("ThresholdInformation").json()
            assert info["currentTimeframeRequestCount"] == 11
            clock.advance(1800)  # the half-hour's ten leave; the call at the hour and this one remain
            assert ours.get("ThresholdInformation").json()["currentTimeframeRequestCount"] == 2


def test_latency_grows_from_50_and_75_percent_of_the_threshold(tmp_path):
    """§8: about +0.5 s per call from 50 % and +1 s from 75 % (scaled by 0.1 here: 50 ms and 100 ms)."""
    with (
        running_autotask(tmp_path, seed=False, threshold=100, threshold_latency_scale=0.1) as at,
        at.api() as api,
    ):
        at.admin("POST", "threshold", {"add": 40})
        calm = api.get("ThresholdInformation")
        assert "X-Sandbox-Threshold-Latency" not in calm.headers
        at.admin("POST", "threshold", {"add": 10})
        started = time.monotonic()
        half = api.get("ThresholdInformation")
        assert half.headers["X-Sandbox-Threshold-Latency"] == "0.05" and time.monotonic() - started >= 0.05
        at.admin("POST", "threshold", {"add": 24})
        started = time.monotonic()
        three_quarters = api.get("ThresholdInformation")
        assert (
            three_quarters.headers["X-Sandbox-Threshold-Latency"] == "0.1"
            and time.monotonic() - started >= 0.1
        )


def test_fixed_latency_and_injected_faults(tmp_path):
    with (
        running_autotask(tmp_path, seed=False, latency_ms=150, threshold_latency_scale=0) as at,
        at.api() as api,
    ):
        started = time.monotonic()
        assert api.get("ThresholdInformation").status_code == 200
        assert time.monotonic() - started >= 0.15
        at.admin(
            "POST", "faults", {"rules": [{"status": 503, "count": 1, "path": "Companies", "method": "POST"}]}
        )
        errors(query(api, "Companies", *EVERYTHING), 503)
        assert query(api, "Companies", *EVERYTHING).status_code == 200
        stats = at.admin("GET", "stats")
        assert stats["calls"]["POST Companies/query"] == 2 and stats["threshold_count"] == 3


def test_bad_option_names_are_refused(tmp_path):
    from erpsync.errors import ConfigError

    with (
        pytest.raises(ConfigError, match="unknown Autotask simulator option"),
        running_autotask(tmp_path, seed=False, thresold=5),
    ):
        pass


# ---- persistence and sandbox up -----------------------------------------------------------------------------


def test_tenant_survives_a_restart(tmp_path):
    with running_autotask(tmp_path, seed=False) as at, at.api() as api:
        owner = ids(query(api, "Resources", *EVERYTHING))[0]
        api.post(
            "UserDefinedFieldDefinitions", json={"name": "Salesforce Company ID", "udfType": 1, "dataType": 1}
        )
        cid = new_company(
            api,
            owner,
            companyName="Persistent BV",
            userDefinedFields=[{"name": "Salesforce Company ID", "value": "001P"}],
        )
    with running_autotask(tmp_path, seed=False) as at, at.api() as api:
        item = api.get(f"Companies/{cid}").json()["item"]
        assert item["companyName"] == "Persistent BV"
        assert {"name": "Salesforce Company ID", "value": "001P"} in item["userDefinedFields"]
        assert new_company(api, owner, companyName="Next BV") == cid + 1  # ids keep counting


def test_sandbox_up_only_autotask_writes_a_working_state_file(tmp_path):
    from erpsync.sandbox.autotask import airflow_connection

    state_file = tmp_path / "state.json"
    env = {**os.environ, "ERPSYNC_SANDBOX_AUTOTASK": json.dumps({"threshold_latency_scale": 0})}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erpsync.sandbox.cli",
            "up",
            "--only",
            "autotask",
            "--random-ports",
            "--no-seed",
            "--state-file",
            str(state_file),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not state_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"sandbox up wrote no state file: {proc.communicate()[1][-2000:]}")
            time.sleep(0.1)
        state = json.loads(state_file.read_text())
        conn = airflow_connection(state["systems"]["autotask"], state["ca_bundle"])
        assert conn["conn_type"] == "autotask" and set(conn["extra"]) == {"integration_code", "ca_bundle"}
        import ssl

        verify = ssl.create_default_context(cafile=conn["extra"]["ca_bundle"])
        zone = httpx.get(
            f"{conn['host']}/atservicesrest/v1.0/zoneInformation",
            params={"user": conn["login"]},
            verify=verify,
        ).json()
        headers = {
            "UserName": conn["login"],
            "Secret": conn["password"],
            "ApiIntegrationcode": conn["extra"]["integration_code"],
        }
        resp = httpx.get(f"{zone['url']}V1.0/ThresholdInformation", headers=headers, verify=verify)
        assert resp.json()["currentTimeframeRequestCount"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert (tmp_path / "data" / "autotask" / "tenant.json").is_file()


def test_connection_json_names_the_documented_fields(at):
    conn = json.loads(at.connection_json(zone_url=at.zone_url, impersonation_resource_id=29682801))
    assert conn == {
        "conn_type": "autotask",
        "host": at.url,
        "login": at.username,
        "password": at.secret,
        "extra": {
            "integration_code": at.integration_code,
            "ca_bundle": at.ca_bundle,
            "zone_url": at.zone_url,
            "impersonation_resource_id": 29682801,
        },
    }
    assert urllib.parse.urlparse(conn["host"]).scheme == "https" and Path(at.ca_bundle).is_file()
