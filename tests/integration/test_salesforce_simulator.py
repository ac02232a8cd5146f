"""The Salesforce simulator on real HTTPS sockets behaves the way reference/salesforce-api.md says."""

from __future__ import annotations

import csv
import io
import time
import uuid
from pathlib import Path

import httpx
import pytest

from erpsync.sandbox.salesforce.testing import running_salesforce

V = "/services/data/v62.0"


@pytest.fixture(scope="module")
def sf(tmp_path_factory):
    with running_salesforce(tmp_path_factory.mktemp("sf")) as sandbox:
        yield sandbox


@pytest.fixture
def api(sf):
    sf.admin("DELETE", "faults")
    with httpx.Client(
        base_url=sf.url,
        verify=sf.ssl_context(),
        headers={"Authorization": f"Bearer {sf.token()}"},
        timeout=30,
    ) as client:
        yield client
    sf.admin("DELETE", "faults")


def uid() -> str:
    return uuid.uuid4().hex[:12]


def q(api, soql: str, **headers) -> dict:
    resp = api.get(f"{V}/query", params={"q": soql}, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


# ----- transport and auth ------------------------------------------------------------------------
def test_https_only_with_the_sandbox_ca(sf):
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{sf.url}/services/data")
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(sf.url.replace("https://", "http://") + "/services/data")
    assert httpx.get(f"{sf.url}/services/data", verify=sf.ssl_context()).json()[-1]["version"] == "62.0"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"password": "wrong"}, "invalid_grant"),
        ({"password": None}, "invalid_grant"),  # password without the security token
        ({"client_id": "nope"}, "invalid_client_id"),
        ({"client_secret": "nope"}, "invalid_client"),
        ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
    ],
)
def test_password_flow_refusals_use_the_oauth_error_shape(sf, change, error):
    i = sf.info
    form = {
        "grant_type": "password",
        "client_id": i["client_id"],
        "client_secret": i["client_secret"],
        "username": i["username"],
        "password": i["password"] + i["security_token"],
    }
    form.update({k: (v if v is not None else i["password"]) for k, v in change.items()})
    resp = httpx.post(f"{sf.url}/services/oauth2/token", data=form, verify=sf.ssl_context())
    assert resp.status_code == 400
    assert resp.json()["error"] == error and resp.json()["error_description"]


def test_token_flows_return_token_and_instance_url(sf):
    import jwt

    i = sf.info
    good = httpx.post(
        f"{sf.url}/services/oauth2/token",
        verify=sf.ssl_context(),
        data={
            "grant_type": "client_credentials",
            "client_id": i["client_id"],
            "client_secret": i["client_secret"],
        },
    ).json()
    assert good["instance_url"] == sf.url and good["token_type"] == "Bearer" and "!" in good["access_token"]
    key = Path(i["jwt_private_key_file"]).read_text()

    def assertion(**claims):
        base = {
            "iss": i["client_id"],
            "sub": i["username"],
            "aud": "https://login.salesforce.com",
            "exp": int(time.time()) + 120,
        }
        return jwt.encode({**base, **claims}, key, algorithm="RS256")

    def post(a):
        return httpx.post(
            f"{sf.url}/services/oauth2/token",
            verify=sf.ssl_context(),
            data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": a},
        )

    assert post(assertion()).json()["instance_url"] == sf.url
    assert (
        post(assertion(sub="someone@else")).json()["error_description"]
        == "user hasn't approved this consumer"
    )
    assert post(assertion(exp=int(time.time()) - 10)).json()["error"] == "invalid_grant"
    assert post(assertion()[:-4] + "AAAA").json()["error_description"] == "invalid assertion"


def test_invalid_and_expired_sessions_answer_401_invalid_session_id(sf, api):
    body = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    resp = httpx.get(
        f"{sf.url}{V}/limits", headers={"Authorization": "Bearer forged"}, verify=sf.ssl_context()
    )
    assert (resp.status_code, resp.json()) == (401, body)
    assert api.get(f"{V}/limits").status_code == 200
    sf.admin("POST", "sessions/expire")
    resp = api.get(f"{V}/limits")
    assert (resp.status_code, resp.json()) == (401, body)


def test_unknown_api_version_is_not_found(api):
    resp = api.get("/services/data/v12.0/limits")
    assert resp.status_code == 404 and resp.json()[0]["errorCode"] == "NOT_FOUND"


# ----- SOQL --------------------------------------------------------------------------------------
def test_query_paging_uses_relative_next_records_url_and_batch_size(api):
    first = q(api, "SELECT Id, Name FROM Contact ORDER BY Id", **{"Sforce-Query-Options": "batchSize=200"})
    total, seen = first["totalSize"], [r["Id"] for r in first["records"]]
    assert total > 400 and len(seen) == 200 and first["done"] is False
    assert first["nextRecordsUrl"].startswith(f"{V}/query/01g") and first["nextRecordsUrl"].endswith("-200")
    page = first
    while not page["done"]:
        page = api.get(page["nextRecordsUrl"], headers={"Sforce-Query-Options": "batchSize=200"}).json()
        seen += [r["Id"] for r in page["records"]]
    assert len(seen) == len(set(seen)) == total and seen == sorted(seen)
    default = q(api, "SELECT Id FROM Contact")
    assert default["done"] is True and len(default["records"]) == total  # under 2,000: one page
    bad = api.get(f"{V}/query/01gDn0000000zzz-2000")
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_where_subset_for_modstamp_windows_in_lists_and_relationships(api):
    rows = q(api, "SELECT Id, SystemModstamp FROM Account ORDER BY SystemModstamp DESC LIMIT 20")["records"]
    hi, lo = rows[2]["SystemModstamp"], rows[10]["SystemModstamp"]
    assert hi.endswith("+0000") and len(hi) == 28  # 2024-05-02T08:15:30.000+0000
    to_lit = lambda s: s[:19] + "Z"  # noqa: E731
    window = q(
        api,
        f"SELECT Id FROM Account WHERE SystemModstamp >= {to_lit(lo)} AND SystemModstamp < "
        f"{to_lit(hi)} ORDER BY SystemModstamp, Id",
    )["records"]
    assert 6 <= len(window) <= 9
    ids = [r["Id"] for r in rows[:3]]
    found = q(api, f"SELECT Id FROM Account WHERE Id IN ('{ids[0][:15]}', '{ids[1]}', '{ids[2].lower()}')")
    assert sorted(r["Id"] for r in found["records"]) == sorted(ids)
    rel = q(
        api,
        "SELECT Id, Owner.FirstName, Owner.LastName FROM Account WHERE Owner.FirstName = 'anna' "
        "OR (BillingCity = null AND NOT Name LIKE 'zzz%') LIMIT 5",
    )["records"]
    assert rel and all(set(r["Owner"]) == {"attributes", "FirstName", "LastName"} for r in rel)
    count = q(api, "SELECT COUNT() FROM Account WHERE BillingCity != null")
    assert count["records"] == [] and 280 < count["totalSize"] < 300


@pytest.mark.parametrize(
    ("soql", "code", "needle"),
    [
        ("SELECT Id, Foo FROM Account", "INVALID_FIELD", "No such column 'Foo' on entity 'Account'"),
        ("SELECT Id FROM Acount", "INVALID_TYPE", "sObject type 'Acount' is not supported"),
        (
            "SELECT Id FROM Account WHERE SystemModstamp > '2024-01-01'",
            "INVALID_FIELD",
            "should not be enclosed",
        ),
        ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY", "unexpected token"),
        ("SELECT Id FROM Account LIMIT x", "MALFORMED_QUERY", "unexpected token: 'x'"),
    ],
)
def test_soql_errors_point_at_the_column(api, soql, code, needle):
    resp = api.get(f"{V}/query", params={"q": soql})
    assert resp.status_code == 400
    [err] = resp.json()
    assert (
        err["errorCode"] == code and needle in err["message"] and "ERROR at Row:1:Column:" in err["message"]
    )


# ----- records, describe, upsert -----------------------------------------------------------------
def test_crud_maintains_system_fields_and_soft_delete(api):
    created = api.post(f"{V}/sobjects/Account", json={"Name": "Crud Test BV", "BillingCity": "Zwolle"})
    assert created.status_code == 201 and created.json()["success"] is True
    rid = created.json()["id"]
    assert rid.startswith("001") and len(rid) == 18
    before = api.get(f"{V}/sobjects/Account/{rid[:15]}").json()
    assert before["attributes"]["url"] == f"{V}/sobjects/Account/{rid}" and before["Name"] == "Crud Test BV"
    assert before["CreatedDate"] == before["SystemModstamp"] and before["OwnerId"].startswith("005")
    assert api.post("/__admin/clock", json={"advance": 1}).json()["offset"] >= 1  # a later millisecond
    assert api.patch(f"{V}/sobjects/Account/{rid}", json={"Phone": "+31 1"}).status_code == 204
    after = api.get(
        f"{V}/sobjects/Account/{rid}", params={"fields": "Phone,SystemModstamp,LastModifiedDate"}
    ).json()
    assert after["Phone"] == "+31 1" and after["SystemModstamp"] > before["SystemModstamp"]
    assert api.delete(f"{V}/sobjects/Account/{rid}").status_code == 204
    assert q(api, f"SELECT Id FROM Account WHERE Id = '{rid}'")["totalSize"] == 0
    gone = api.get(
        f"{V}/queryAll", params={"q": f"SELECT Id, IsDeleted FROM Account WHERE Id = '{rid}'"}
    ).json()
    assert gone["records"][0]["IsDeleted"] is True
    assert api.get(f"{V}/sobjects/Account/{rid}").status_code == 404


def test_describe_reports_lengths_picklists_and_flags(api):
    d = api.get(f"{V}/sobjects/Product2/describe").json()
    fields = {f["name"]: f for f in d["fields"]}
    assert d["keyPrefix"] == "01t"
    assert fields["Name"]["length"] == 255 and fields["Name"]["nillable"] is False
    assert fields["SKU__c"]["externalId"] is True and fields["SKU__c"]["unique"] is True
    assert fields["Family"]["restrictedPicklist"] is True
    assert {p["value"] for p in fields["Family"]["picklistValues"]} >= {"Hardware", "Services"}
    assert fields["CreatedDate"]["createable"] is False and fields["CreatedDate"]["updateable"] is False
    order = {f["name"]: f for f in api.get(f"{V}/sobjects/OrderItem/describe").json()["fields"]}
    assert order["OrderId"]["createable"] and not order["OrderId"]["updateable"]
    assert order["PricebookEntryId"]["referenceTo"] == ["PricebookEntry"]


def test_upsert_by_external_id_status_codes(api):
    key = uid()
    url = f"{V}/sobjects/Account/External_Id__c/{key}"
    first = api.patch(url, json={"Name": "Upsert BV"})
    assert first.status_code == 201 and first.json()["created"] is True
    second = api.patch(url, json={"Name": "Upsert BV 2"})
    assert second.status_code == 200 and second.json() == {
        "id": first.json()["id"],
        "success": True,
        "errors": [],
        "created": False,
    }
    old = api.patch(f"/services/data/v45.0/sobjects/Account/External_Id__c/{key}", json={"Phone": "1"})
    assert old.status_code == 204 and old.content == b""
    dup = api.post(f"{V}/sobjects/Account", json={"Name": "Dup", "External_Id__c": key.upper()})
    assert dup.status_code == 400 and dup.json()[0]["errorCode"] == "DUPLICATE_VALUE"
    assert first.json()["id"] in dup.json()[0]["message"]
    for n in range(2):  # Legacy_Id__c is an external id but not unique: two rows may share it
        assert (
            api.post(f"{V}/sobjects/Account", json={"Name": f"L{n}", "Legacy_Id__c": key}).status_code == 201
        )
    many = api.patch(f"{V}/sobjects/Account/Legacy_Id__c/{key}", json={"Name": "which?"})
    assert (
        many.status_code == 300
        and len(many.json()) == 2
        and many.json()[0].startswith(f"{V}/sobjects/Account/")
    )
    not_ext = api.patch(f"{V}/sobjects/Account/Name/x", json={})
    assert not_ext.status_code == 404 and not_ext.json()[0]["errorCode"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("body", "code", "fields"),
    [
        ({"Phone": "1"}, "REQUIRED_FIELD_MISSING", ["Name"]),
        ({"Name": "x" * 256}, "STRING_TOO_LONG", ["Name"]),
        ({"Name": "a", "Foo__c": 1}, "INVALID_FIELD", ["Foo__c"]),
        (
            {"Name": "a", "CreatedDate": "2024-01-01T00:00:00Z"},
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            ["CreatedDate"],
        ),
        ({"Name": "a", "ParentId": "003Dn0000000001IAA"}, "FIELD_INTEGRITY_EXCEPTION", ["ParentId"]),
        ({"Name": "a", "ParentId": "001xx"}, "MALFORMED_ID", ["ParentId"]),
        ({"Name": "a", "ParentId": "001Dn0000009999IAA"}, "INVALID_CROSS_REFERENCE_KEY", ["ParentId"]),
        (
            {"Name": "a", "NumberOfEmployees": "many"},
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            ["NumberOfEmployees"],
        ),
    ],
)
def test_single_record_errors_are_lists_with_error_code(api, body, code, fields):
    resp = api.post(f"{V}/sobjects/Account", json=body)
    assert resp.status_code == 400
    [err] = resp.json()
    assert err["errorCode"] == code and err["fields"] == fields and err["message"]


def test_restricted_picklist_and_email_rules(api):
    bad_family = api.post(f"{V}/sobjects/Product2", json={"Name": "P", "Family": "Toys"})
    assert bad_family.json()[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    open_type = api.post(f"{V}/sobjects/Account", json={"Name": "P", "Type": "Not in the list"})
    assert open_type.status_code == 201  # unrestricted picklists take any value, as in a real org
    email = api.post(f"{V}/sobjects/Contact", json={"LastName": "X", "Email": "a@@b"})
    assert email.json()[0]["errorCode"] == "INVALID_EMAIL_ADDRESS"
    malformed = api.post(
        f"{V}/sobjects/Account", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


# ----- price books and orders --------------------------------------------------------------------
def test_price_book_and_order_rules(api, sf):
    std = sf.info["standard_pricebook_id"]
    partner = q(api, "SELECT Id FROM Pricebook2 WHERE IsStandard = false")["records"][0]["Id"]
    prod = api.post(f"{V}/sobjects/Product2", json={"Name": "Rules", "IsActive": True}).json()["id"]
    early = api.post(
        f"{V}/sobjects/PricebookEntry", json={"Pricebook2Id": partner, "Product2Id": prod, "UnitPrice": 5}
    )
    assert early.json()[0]["errorCode"] == "STANDARD_PRICE_NOT_DEFINED"
    std_entry = {"Pricebook2Id": std, "Product2Id": prod, "UnitPrice": 10, "IsActive": True}
    entry = api.post(f"{V}/sobjects/PricebookEntry", json=std_entry).json()["id"]
    assert (
        api.post(f"{V}/sobjects/PricebookEntry", json=std_entry).json()[0]["errorCode"] == "DUPLICATE_VALUE"
    )
    partner_entry = api.post(
        f"{V}/sobjects/PricebookEntry",
        json={"Pricebook2Id": partner, "Product2Id": prod, "UnitPrice": 9, "IsActive": True},
    ).json()["id"]
    acc = api.post(f"{V}/sobjects/Account", json={"Name": "Order Rules BV"}).json()["id"]
    activated = api.post(
        f"{V}/sobjects/Order",
        json={"AccountId": acc, "EffectiveDate": "2024-05-01", "Status": "Activated", "Pricebook2Id": std},
    )
    assert activated.json()[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    order = api.post(
        f"{V}/sobjects/Order", json={"AccountId": acc, "EffectiveDate": "2024-05-01", "Pricebook2Id": std}
    ).json()["id"]
    empty = api.patch(f"{V}/sobjects/Order/{order}", json={"Status": "Activated"})
    assert empty.status_code == 400 and "no products" in empty.json()[0]["message"]
    wrong_book = api.post(
        f"{V}/sobjects/OrderItem",
        json={"OrderId": order, "PricebookEntryId": partner_entry, "Quantity": 1, "UnitPrice": 9},
    )
    assert wrong_book.json()[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    item = api.post(
        f"{V}/sobjects/OrderItem",
        json={"OrderId": order, "PricebookEntryId": entry, "Quantity": 3, "UnitPrice": 10},
    )
    assert item.status_code == 201, item.text
    got = q(
        api, f"SELECT Id, Product2Id, TotalPrice, Order.TotalAmount FROM OrderItem WHERE OrderId = '{order}'"
    )
    assert got["records"][0]["Product2Id"] == prod and got["records"][0]["TotalPrice"] == 30.0
    assert got["records"][0]["Order"]["TotalAmount"] == 30.0
    assert api.patch(f"{V}/sobjects/Order/{order}", json={"Status": "Activated"}).status_code == 204
    assert api.patch(f"{V}/sobjects/Order/{order}", json={"Status": "Paid"}).status_code == 204
    locked = api.patch(f"{V}/sobjects/Order/{order}", json={"PoNumber": "changed"})
    assert locked.status_code == 400 and "activated order" in locked.json()[0]["message"]
    late = api.post(
        f"{V}/sobjects/OrderItem",
        json={"OrderId": order, "PricebookEntryId": entry, "Quantity": 1, "UnitPrice": 10},
    )
    assert late.json()[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    by_rel = api.post(
        f"{V}/sobjects/Order",
        json={"Account": {"External_Id__c": "missing-key"}, "EffectiveDate": "2024-05-01"},
    )
    assert by_rel.json()[0]["errorCode"] == "INVALID_FIELD" and "missing-key" in by_rel.json()[0]["message"]


# ----- collections -------------------------------------------------------------------------------
def _acc(**fields) -> dict:
    return {"attributes": {"type": "Account"}, **fields}


def test_collection_upsert_reports_per_record_with_http_200(api):
    k = uid()
    body = {
        "allOrNone": False,
        "records": [
            _acc(External_Id__c=f"{k}-1", Name="Ok"),
            _acc(External_Id__c=f"{k}-2"),
            _acc(External_Id__c=f"{k}-3", Name="x" * 300),
            _acc(External_Id__c=f"{k}-4", Name="a"),
            _acc(External_Id__c=f"{k}-4", Name="b"),
        ],
    }
    resp = api.patch(f"{V}/composite/sobjects/Account/External_Id__c", json=body)
    assert resp.status_code == 200
    r = resp.json()
    assert r[0]["success"] and r[0]["created"] is True and r[0]["id"].startswith("001")
    assert r[1]["errors"] == [
        {
            "statusCode": "REQUIRED_FIELD_MISSING",
            "message": "Required fields are missing: [Name]",
            "fields": ["Name"],
        }
    ]
    assert r[2]["errors"][0]["statusCode"] == "STRING_TOO_LONG"
    assert r[3]["errors"][0]["statusCode"] == r[4]["errors"][0]["statusCode"] == "DUPLICATE_EXTERNAL_ID"
    again = api.patch(f"{V}/composite/sobjects/Account/External_Id__c", json={"records": body["records"][:1]})
    assert again.json()[0] == {"id": r[0]["id"], "success": True, "errors": [], "created": False}


def test_collection_all_or_none_rolls_everything_back(api):
    k = uid()
    body = {"allOrNone": True, "records": [_acc(Name=f"{k}-good"), _acc(Phone="no name")]}
    r = api.post(f"{V}/composite/sobjects", json=body).json()
    assert r[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK" and r[0]["success"] is False
    assert r[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert q(api, f"SELECT COUNT() FROM Account WHERE Name = '{k}-good'")["totalSize"] == 0


def test_collections_create_update_delete_and_the_200_cap(api):
    k = uid()
    created = api.post(
        f"{V}/composite/sobjects", json={"records": [_acc(Name=f"{k}-{n}") for n in range(3)]}
    ).json()
    ids = [c["id"] for c in created]
    assert created[0] == {"id": ids[0], "success": True, "errors": []}  # "created" is only on upserts
    upd = api.patch(
        f"{V}/composite/sobjects", json={"records": [_acc(Id=ids[0], Phone="9"), _acc(Phone="no id")]}
    )
    assert upd.json()[0]["success"] and upd.json()[1]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    deleted = api.delete(
        f"{V}/composite/sobjects", params={"ids": ",".join(ids), "allOrNone": "false"}
    ).json()
    assert all(d["success"] for d in deleted)
    too_many = api.post(f"{V}/composite/sobjects", json={"records": [_acc(Name="n")] * 201})
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


# ----- Bulk API 2.0 ------------------------------------------------------------------------------
def _wait(api, kind: str, job_id: str) -> dict:
    """Poll until the job reaches a final state (a condition; the deadline only stops a hung job)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = api.get(f"{V}/jobs/{kind}/{job_id}").json()
        if job["state"] in ("JobComplete", "Failed", "Aborted"):
            return job
        time.sleep(0.02)  # poll pause, not a wait for time to pass
    raise AssertionError(f"job {job_id} not finished after 120 s: {job['state']}")


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_bulk_ingest_lifecycle_and_result_files(api):
    k = uid()
    job = api.post(
        f"{V}/jobs/ingest",
        json={
            "object": "Account",
            "operation": "upsert",
            "externalIdFieldName": "External_Id__c",
            "lineEnding": "LF",
        },
    ).json()
    assert job["state"] == "Open" and job["id"].startswith("750")
    assert job["contentUrl"] == f"services/data/v62.0/jobs/ingest/{job['id']}/batches"
    early = api.get(f"{V}/jobs/ingest/{job['id']}/successfulResults/")
    assert early.status_code == 400 and early.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    data = (
        f"External_Id__c,Name,Website\n{k}-1,Bulk één,#N/A\n{k}-2,{'x' * 300},\n{k}-3,Third,w\n"
        f"{k}-4,Twice,\n{k.upper()}-4,Twice again,\n"
    )
    put = api.put(
        f"{V}/jobs/ingest/{job['id']}/batches", content=data.encode(), headers={"Content-Type": "text/csv"}
    )
    assert put.status_code == 201
    closed = api.patch(f"{V}/jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    assert closed.json()["state"] == "UploadComplete"
    again = api.put(
        f"{V}/jobs/ingest/{job['id']}/batches", content=b"x", headers={"Content-Type": "text/csv"}
    )
    assert again.status_code == 409 and again.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    done = _wait(api, "ingest", job["id"])
    assert (done["state"], done["numberRecordsProcessed"], done["numberRecordsFailed"]) == (
        "JobComplete",
        5,
        3,
    )
    ok = _rows(api.get(f"{V}/jobs/ingest/{job['id']}/successfulResults/").text)
    assert [r["sf__Created"] for r in ok] == ["true", "true"] and ok[0]["Name"] == "Bulk één"
    assert list(ok[0])[:2] == ["sf__Id", "sf__Created"] and ok[0]["sf__Id"].startswith("001")
    bad = _rows(api.get(f"{V}/jobs/ingest/{job['id']}/failedResults/").text)
    assert (
        bad[0]["sf__Error"].startswith("STRING_TOO_LONG:Name: data value too large")
        and bad[0]["sf__Id"] == ""
    )
    assert [b["sf__Error"].split(":")[0] for b in bad[1:]] == ["DUPLICATE_EXTERNAL_ID"] * 2
    assert _rows(api.get(f"{V}/jobs/ingest/{job['id']}/unprocessedrecords/").text) == []


def test_bulk_ingest_with_an_unknown_column_fails_and_lists_unprocessed_rows(api):
    job = api.post(f"{V}/jobs/ingest", json={"object": "Account", "operation": "insert"}).json()
    api.put(
        f"{V}/jobs/ingest/{job['id']}/batches",
        content=b"Name,Bogus__c\nA,1\nB,2\n",
        headers={"Content-Type": "text/csv"},
    )
    api.patch(f"{V}/jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    done = _wait(api, "ingest", job["id"])
    assert (
        done["state"] == "Failed" and done["errorMessage"] == "InvalidBatch : Field name not found : Bogus__c"
    )
    assert [r["Name"] for r in _rows(api.get(f"{V}/jobs/ingest/{job['id']}/unprocessedrecords/").text)] == [
        "A",
        "B",
    ]
    bad_job = api.post(f"{V}/jobs/ingest", json={"object": "Nope", "operation": "insert"})
    assert bad_job.status_code == 400 and bad_job.json()[0]["errorCode"] == "INVALIDENTITY"


def test_bulk_query_pages_with_sforce_locator(api):
    job = api.post(
        f"{V}/jobs/query",
        json={"operation": "query", "query": "SELECT Id, Name, Owner.FirstName FROM Account"},
    ).json()
    assert _wait(api, "query", job["id"])["state"] == "JobComplete"
    rows, locator, pages = [], None, 0
    while locator != "null":
        params = {"maxRecords": 120, **({"locator": locator} if locator else {})}
        resp = api.get(f"{V}/jobs/query/{job['id']}/results", params=params)
        rows += _rows(resp.text)
        assert int(resp.headers["Sforce-NumberOfRecords"]) <= 120
        locator, pages = resp.headers["Sforce-Locator"], pages + 1
    assert pages >= 3 and len(rows) == q(api, "SELECT COUNT() FROM Account")["totalSize"]
    assert set(rows[0]) == {"Id", "Name", "Owner.FirstName"}


# ----- limits and faults -------------------------------------------------------------------------
def test_limits_header_counts_calls_and_the_daily_cap_answers_403(api, sf):
    used = int(api.get(f"{V}/sobjects").headers["Sforce-Limit-Info"].split("=")[1].split("/")[0])
    assert api.get(f"{V}/sobjects").headers["Sforce-Limit-Info"].startswith(f"api-usage={used + 1}/")
    limits = api.get(f"{V}/limits").json()
    assert limits["DailyApiRequests"]["Remaining"] == limits["DailyApiRequests"]["Max"] - used - 1
    sf.admin("POST", "limits", {"used": limits["DailyApiRequests"]["Max"]})
    try:
        over = api.get(f"{V}/sobjects")
        assert over.status_code == 403
        assert over.json() == [
            {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        ]
    finally:
        sf.admin("POST", "limits", {"used": used})


def test_fault_injection_latency_status_drop_lock_and_malformed(api, sf):
    sf.admin("POST", "faults", {"latency_ms": 150})
    start = time.monotonic()
    api.get(f"{V}/limits")
    assert time.monotonic() - start >= 0.15
    sf.admin(
        "POST",
        "faults",
        {
            "rules": [
                {"kind": "status", "status": 503, "count": 1, "path": "/sobjects"},
                {"kind": "drop", "count": 1, "path": "/limits"},
                {"kind": "malformed_json", "count": 1, "path": "/query"},
                {"kind": "lock_row", "count": 1},
            ]
        },
    )
    assert api.get(f"{V}/sobjects").status_code == 503
    with pytest.raises(httpx.RemoteProtocolError):
        api.get(f"{V}/limits")
    truncated = api.get(f"{V}/query", params={"q": "SELECT Id FROM User"})
    with pytest.raises(ValueError):
        truncated.json()
    k = uid()
    res = api.post(
        f"{V}/composite/sobjects", json={"records": [_acc(Name=f"{k}a"), _acc(Name=f"{k}b")]}
    ).json()
    assert res[0]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW" and res[1]["success"] is True
    assert api.get(f"{V}/sobjects").status_code == 200  # every rule was used up


# ----- persistence and seed ----------------------------------------------------------------------
def test_org_persists_between_runs_and_the_seed_is_deterministic(tmp_path):
    with running_salesforce(tmp_path / "a") as first:
        tok = first.token()
        with httpx.Client(
            base_url=first.url, verify=first.ssl_context(), headers={"Authorization": f"Bearer {tok}"}
        ) as c:
            rid = c.post(f"{V}/sobjects/Account", json={"Name": "Persisted BV"}).json()["id"]
            names_a = [
                r["Name"]
                for r in c.get(
                    f"{V}/query", params={"q": "SELECT Name FROM Account ORDER BY Id LIMIT 50"}
                ).json()["records"]
            ]
    with (
        running_salesforce(tmp_path / "a") as again,
        httpx.Client(
            base_url=again.url,
            verify=again.ssl_context(),
            headers={"Authorization": f"Bearer {again.token()}"},
        ) as c,
    ):
        assert c.get(f"{V}/sobjects/Account/{rid}").json()["Name"] == "Persisted BV"
    with (
        running_salesforce(tmp_path / "b") as other,
        httpx.Client(
            base_url=other.url,
            verify=other.ssl_context(),
            headers={"Authorization": f"Bearer {other.token()}"},
        ) as c,
    ):
        names_b = [
            r["Name"]
            for r in c.get(
                f"{V}/query", params={"q": "SELECT Name FROM Account ORDER BY Id LIMIT 50"}
            ).json()["records"]
        ]
    assert names_a == names_b


def test_seed_has_the_dirty_rows_the_sync_must_quarantine(api):
    long_names = q(api, "SELECT Name FROM Account")["records"]
    assert sum(len(r["Name"]) > 41 for r in long_names) >= 8
    names = [r["Name"] for r in long_names]
    assert len(names) - len(set(names)) >= 3
    assert q(api, "SELECT COUNT() FROM Account WHERE BillingCity = null")["totalSize"] >= 6
    emails = [r["Email"] for r in q(api, "SELECT Email FROM Contact WHERE Email != null")["records"]]
    assert sum("@" not in e or e.count("@") > 1 or "." not in e.split("@")[-1] for e in emails) >= 4
    assert q(api, "SELECT COUNT() FROM OrderItem WHERE Product2.SKU__c LIKE 'SF-ONLY-%'")["totalSize"] >= 4
    statuses = {
        (r["Status"], r["StatusCode"]) for r in q(api, "SELECT Status, StatusCode FROM Order")["records"]
    }
    assert statuses == {
        ("Draft", "Draft"),
        ("Awaiting Payment", "Draft"),
        ("Activated", "Activated"),
        ("Paid", "Activated"),
    }
    assert q(api, "SELECT COUNT() FROM PricebookEntry WHERE Pricebook2.IsStandard = true")["totalSize"] >= 50


def test_idle_sessions_and_query_locators_expire(tmp_path):
    """Idleness is measured on the org's clock, moved by /__admin/clock: no sleeping, no timing window."""
    with running_salesforce(tmp_path, seed=False, session_timeout=600, cursor_timeout=300) as short:
        tok = short.token()
        with httpx.Client(
            base_url=short.url, verify=short.ssl_context(), headers={"Authorization": f"Bearer {tok}"}
        ) as c:
            body = {"records": [{"attributes": {"type": "Account"}, "Name": f"n{i}"} for i in range(200)]}
            for _ in range(3):  # three pages of 200
                assert c.post(f"{V}/composite/sobjects", json=body).status_code == 200
            page = c.get(
                f"{V}/query",
                params={"q": "SELECT Id FROM Account"},
                headers={"Sforce-Query-Options": "batchSize=200"},
            ).json()
            assert short.admin("POST", "clock", {"advance": 299})["offset"] == 299
            fresh = c.get(page["nextRecordsUrl"], headers={"Sforce-Query-Options": "batchSize=200"})
            # idle 299 s of 300: still open, and used again now
            assert fresh.status_code == 200, fresh.text
            short.admin("POST", "clock", {"advance": 301})
            stale = c.get(fresh.json()["nextRecordsUrl"])
            assert stale.status_code == 400 and stale.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"
            # The session is now 600 s old, its timeout, but was used just now: activity keeps it alive.
            assert c.get(f"{V}/limits").status_code == 200
            short.admin("POST", "clock", {"advance": 601})
            expired = c.get(f"{V}/limits")
            assert expired.status_code == 401 and expired.json()[0]["errorCode"] == "INVALID_SESSION_ID"
            assert c.post(f"{short.url}/__admin/clock", json={"advance": -1}).status_code == 400


def test_only_ten_query_locators_stay_open(api):
    pages = [q(api, "SELECT Id FROM Contact", **{"Sforce-Query-Options": "batchSize=200"}) for _ in range(11)]
    oldest = api.get(pages[0]["nextRecordsUrl"])
    assert oldest.status_code == 400 and oldest.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"
    assert api.get(pages[-1]["nextRecordsUrl"]).status_code == 200


def test_get_updated_and_get_deleted_windows(api):
    from datetime import UTC, datetime, timedelta

    start = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    rid = api.post(f"{V}/sobjects/Account", json={"Name": "Window BV"}).json()["id"]
    end = (datetime.now(UTC) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    updated = api.get(f"{V}/sobjects/Account/updated/", params={"start": start, "end": end}).json()
    assert rid in updated["ids"] and updated["latestDateCovered"].endswith("+0000")
    api.delete(f"{V}/sobjects/Account/{rid}")
    deleted = api.get(f"{V}/sobjects/Account/deleted/", params={"start": start, "end": end}).json()
    assert rid in [d["id"] for d in deleted["deletedRecords"]]
    assert (
        rid
        not in api.get(f"{V}/sobjects/Account/updated/", params={"start": start, "end": end}).json()["ids"]
    )
    too_old = api.get(
        f"{V}/sobjects/Account/deleted/", params={"start": "2020-01-01T00:00:00+00:00", "end": end}
    )
    assert too_old.status_code == 400 and too_old.json()[0]["errorCode"] == "INVALID_REPLICATION_DATE"


def test_collection_retrieve_by_ids(api):
    ids = [r["Id"] for r in q(api, "SELECT Id FROM Account ORDER BY Id LIMIT 2")["records"]]
    got = api.get(
        f"{V}/composite/sobjects/Account",
        params={"ids": ",".join([*ids, "003Dn0000000001IAA"]), "fields": "Id,Name"},
    ).json()
    assert (
        [g["Id"] for g in got[:2]] == ids and got[2] is None and set(got[0]) == {"attributes", "Id", "Name"}
    )


def test_bulk_refuses_bad_uploads_and_fails_ragged_rows_alone(api):
    job = api.post(f"{V}/jobs/ingest", json={"object": "Contact", "operation": "insert"}).json()
    wrong_type = api.put(
        f"{V}/jobs/ingest/{job['id']}/batches",
        content=b"LastName\nx\n",
        headers={"Content-Type": "application/json"},
    )
    assert wrong_type.status_code == 400 and wrong_type.json()[0]["errorCode"] == "INVALIDCONTENTTYPE"
    not_utf8 = api.put(
        f"{V}/jobs/ingest/{job['id']}/batches",
        content="LastName\nM\xfcller\n".encode("latin-1"),
        headers={"Content-Type": "text/csv"},
    )
    assert not_utf8.status_code == 400 and "not UTF-8" in not_utf8.json()[0]["message"]
    ragged = "LastName,Email\nGood,good@example.com\nRagged,a@example.com,extra\nBad Mail,not-an-email\n"
    api.put(
        f"{V}/jobs/ingest/{job['id']}/batches", content=ragged.encode(), headers={"Content-Type": "text/csv"}
    )
    api.patch(f"{V}/jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    done = _wait(api, "ingest", job["id"])
    assert (done["numberRecordsProcessed"], done["numberRecordsFailed"]) == (3, 2)
    failed = api.get(f"{V}/jobs/ingest/{job['id']}/failedResults/").text.splitlines()
    assert "Row has 3 columns, header has 2" in failed[1] and "INVALID_EMAIL_ADDRESS" in failed[2]
    bad_state = api.patch(f"{V}/jobs/ingest/{job['id']}", json={"state": "Open"})
    assert bad_state.status_code == 409 and bad_state.json()[0]["errorCode"] == "INVALIDJOBSTATE"


def test_soap_login_answers_session_and_server_url_or_a_login_fault(sf):
    i = sf.info

    def login(password: str) -> httpx.Response:
        body = (
            '<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/'
            'envelope/"><env:Body><n1:login xmlns:n1="urn:partner.soap.sforce.com">'
            f"<n1:username>{i['username']}</n1:username><n1:password>{password}</n1:password>"
            "</n1:login></env:Body></env:Envelope>"
        )
        return httpx.post(
            f"{sf.url}/services/Soap/u/62.0",
            content=body,
            verify=sf.ssl_context(),
            headers={"content-type": "text/xml", "SOAPAction": "login"},
        )

    good = login(i["password"] + i["security_token"])
    assert good.status_code == 200 and "<sessionId>00D" in good.text
    assert f"<serverUrl>{sf.url}/services/Soap/u/62.0/" in good.text
    bad = login(i["password"])  # the security token is missing
    assert bad.status_code == 500 and "<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>" in bad.text
    garbage = httpx.post(f"{sf.url}/services/Soap/u/62.0", content=b"<not xml", verify=sf.ssl_context())
    assert garbage.status_code == 500 and "malformed login request" in garbage.text


@pytest.mark.parametrize(
    "content", ["{not json", '{"tables": {}}', '{"tables": {"Nope": {}}, "counters": {}}']
)
def test_a_broken_org_file_is_named_with_what_is_wrong(tmp_path, content):
    from erpsync.errors import ConfigError
    from erpsync.sandbox.runner import SandboxCA, SandboxContext
    from erpsync.sandbox.salesforce import service

    path = tmp_path / "salesforce" / "org.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ConfigError, match="not a usable simulator org file") as info:
        service(SandboxContext(data_dir=tmp_path, ca=SandboxCA(tmp_path / "ca")))
    assert info.value.where == str(path)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ("{latency", "is not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"latency": 1}', "unknown Salesforce simulator option(s) latency"),
        ('{"latency_ms": "fast"}', "latency_ms must be a number"),
    ],
)
def test_bad_simulator_options_name_the_problem(tmp_path, monkeypatch, env, needle):
    from erpsync.errors import ConfigError
    from erpsync.sandbox.runner import SandboxCA, SandboxContext
    from erpsync.sandbox.salesforce import OPTIONS_ENV, service

    monkeypatch.setenv(OPTIONS_ENV, env)
    with pytest.raises(ConfigError) as info:
        service(SandboxContext(data_dir=tmp_path, ca=SandboxCA(tmp_path / "ca"), seed=False))
    assert needle in str(info.value) and info.value.where == OPTIONS_ENV


def test_options_from_the_environment_reach_the_simulator(tmp_path, monkeypatch):
    from erpsync.sandbox.salesforce import OPTIONS_ENV

    monkeypatch.setenv(OPTIONS_ENV, '{"latency_ms": 120, "daily_api_limit": 500}')
    with running_salesforce(tmp_path, seed=False) as env_sf:
        started = time.monotonic()
        limits = httpx.get(
            f"{env_sf.url}{V}/limits",
            verify=env_sf.ssl_context(),
            headers={"Authorization": f"Bearer {env_sf.token()}"},
        ).json()
        assert limits["DailyApiRequests"]["Max"] == 500 and time.monotonic() - started >= 0.24  # token + call


def test_ordered_products_carry_codes_the_exact_sandbox_has(api, tmp_path):
    """The orders flow looks products up in Exact by code: seeded orders must mostly find theirs."""
    from erpsync.sandbox.exact._seed import _items

    exact_codes = {i["Code"] for i in _items(250, __import__("random").Random(0))}
    ordered = {
        r["Product2"]["ProductCode"]
        for r in q(api, "SELECT Product2.ProductCode FROM OrderItem WHERE Order.PoNumber LIKE 'PO-%'")[
            "records"
        ]
    }
    missing = ordered - exact_codes
    assert missing == {"SF-ONLY-001", "SF-ONLY-002"} and len(ordered) > 20


def test_parent_to_child_subqueries_nest_results_or_null(api):
    rows = q(
        api,
        "SELECT Id, OrderNumber, (SELECT Id, Quantity, Product2.ProductCode FROM OrderItems ORDER BY Id) "
        "FROM Order WHERE PoNumber LIKE 'PO-%' ORDER BY Id LIMIT 3",
    )["records"]
    items = rows[0]["OrderItems"]
    assert items["done"] is True and items["totalSize"] == len(items["records"]) >= 1
    first = items["records"][0]
    assert first["attributes"]["type"] == "OrderItem" and set(first) == {
        "attributes",
        "Id",
        "Quantity",
        "Product2",
    }
    assert [r["Id"] for r in items["records"]] == sorted(r["Id"] for r in items["records"])
    acc = api.post(f"{V}/sobjects/Account", json={"Name": "No contacts BV"}).json()["id"]
    lonely = q(api, f"SELECT Id, (SELECT Id FROM Contacts) FROM Account WHERE Id = '{acc}'")["records"][0]
    assert lonely["Contacts"] is None
    bulk = api.post(
        f"{V}/jobs/query",
        json={"operation": "query", "query": "SELECT Id, (SELECT Id FROM Contacts) FROM Account"},
    )
    assert bulk.status_code == 400 and "subqueries" in bulk.json()[0]["message"]
    rels = {
        r["relationshipName"] for r in api.get(f"{V}/sobjects/Order/describe").json()["childRelationships"]
    }
    assert rels == {"OrderItems"}
