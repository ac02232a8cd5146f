"""The real SalesforceHook (and the provider's hook) against the simulator over HTTPS.

Connections come from ``AIRFLOW_CONN_*`` variables, as in production; nothing is patched.
"""

from __future__ import annotations

import json

import pytest

from erpsync.errors import AuthError, ConfigError, FatalSourceError, RateLimitedError, RetriableSourceError
from erpsync.sandbox.salesforce.testing import running_salesforce

FAST = {"retry_base_delay": 0.01, "bulk_poll_interval": 0.02, "max_retries": 3}


@pytest.fixture(scope="module")
def sf(tmp_path_factory):
    with running_salesforce(tmp_path_factory.mktemp("sfhook")) as sandbox:
        yield sandbox


@pytest.fixture
def hook(sf, monkeypatch):
    from erpsync.hooks.salesforce import SalesforceHook

    sf.admin("DELETE", "faults")
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_TEST", sf.connection_json("password", **FAST))
    hook = SalesforceHook("salesforce_test")
    yield hook
    hook.close()
    sf.admin("DELETE", "faults")


def _new_hook(sf, monkeypatch, flow="password", **extra):
    from erpsync.hooks.salesforce import SalesforceHook

    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_OTHER", sf.connection_json(flow, **{**FAST, **extra}))
    return SalesforceHook("salesforce_other")


# ----- connection and auth -----------------------------------------------------------------------
@pytest.mark.parametrize("flow", ["password", "client_credentials", "jwt"])
def test_test_connection_with_each_oauth_flow(sf, monkeypatch, flow):
    ok, message = _new_hook(sf, monkeypatch, flow).test_connection()
    assert ok, message
    assert "remaining" in message and sf.url.split("//")[1] in message


def test_test_connection_reports_a_refused_login(sf, monkeypatch):
    ok, message = _new_hook(sf, monkeypatch, security_token="stale").test_connection()
    assert ok is False and "invalid_grant" in message and "authentication failure" in message


def test_wrong_ca_bundle_is_a_config_error_not_an_insecure_call(sf, monkeypatch, tmp_path):
    other = tmp_path / "other-ca.pem"
    import trustme

    trustme.CA().cert_pem.write_to_path(str(other))
    hook = _new_hook(sf, monkeypatch, ca_bundle=str(other))
    with pytest.raises(ConfigError, match="TLS verification"):
        hook.get_conn()
    missing = _new_hook(sf, monkeypatch, ca_bundle=str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match="ca_bundle"):
        missing.get_conn()


def test_provider_hook_in_direct_mode_queries_the_simulator(sf, monkeypatch, hook):
    """The provider's own hook (simple-salesforce direct mode) works with a token and the CA session."""
    from airflow.providers.salesforce.hooks.salesforce import SalesforceHook as ProviderHook

    client = hook.get_conn()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALESFORCE_DIRECT",
        '{"conn_type": "salesforce", "extra": {"instance_url": "' + sf.url + '", "version": "62.0"}}',
    )
    provider = ProviderHook("salesforce_direct", session_id=client.session_id, session=client.session)
    result = provider.make_query("SELECT Id, Name FROM Account WHERE Name LIKE 'A%'")
    assert result["done"] is True and result["totalSize"] == len(result["records"]) > 0
    assert "Name" in provider.get_available_fields("Account")
    assert provider.get_conn().api_usage["api-usage"].total == 100_000


def test_expired_session_is_renewed_once_mid_stream(sf, hook):
    pages = hook.query_batches("SELECT Id FROM Contact", batch_size=200)
    first = next(pages)
    sf.admin("POST", "sessions/expire")
    rest = [r for batch in pages for r in batch]
    assert len(first) == 200 and len(first) + len(rest) > 400
    assert hook.calls["auth"] == 2


def test_session_refused_twice_is_an_auth_error(sf, hook):
    sf.admin("POST", "faults", {"rules": [{"kind": "invalid_session", "count": 2}]})
    with pytest.raises(AuthError, match="INVALID_SESSION_ID"):
        hook.describe("Account")


# ----- streamed SOQL -----------------------------------------------------------------------------
@pytest.mark.parametrize(("limit", "pages"), [(0, 0), (1, 1), (200, 1), (201, 2), (450, 3)])
def test_query_batches_paging_edges(hook, limit, pages):
    soql = "SELECT Id, Name, Account.Name FROM Contact ORDER BY Id" + (f" LIMIT {limit}" if limit else "")
    if limit == 0:
        soql = "SELECT Id FROM Contact WHERE LastName = 'nobody-has-this-name'"
    batches = list(hook.query_batches(soql, batch_size=200))
    assert [len(b) for b in batches] == ([200] * (limit // 200) + ([limit % 200] if limit % 200 else []))[
        :pages
    ]
    assert len(batches) == pages
    for batch in batches:
        assert all("attributes" not in r for r in batch)
        assert all("attributes" not in (r.get("Account") or {}) for r in batch)


def test_repeated_next_records_url_is_an_error(sf, hook):
    sf.admin("POST", "faults", {"rules": [{"kind": "repeat_next", "count": 5}]})
    batches = hook.query_batches("SELECT Id FROM Contact", batch_size=200)
    with pytest.raises(FatalSourceError, match="came back twice"):
        list(batches)


def test_bad_soql_is_a_config_error_naming_the_column(hook):
    with pytest.raises(ConfigError, match="No such column 'Nmae'") as info:
        list(hook.query_batches("SELECT Nmae FROM Account"))
    assert info.value.details["errorCode"] == "INVALID_FIELD"


def test_bulk_query_streams_csv_pages(hook):
    batches = list(hook.bulk_query_batches("SELECT Id, Name FROM Account", max_records=100))
    assert len(batches) >= 3 and all(len(b) <= 100 for b in batches)
    assert sum(map(len, batches)) == sum(map(len, hook.query_batches("SELECT Id FROM Account")))


# ----- writes ------------------------------------------------------------------------------------
def test_collection_upsert_chunks_of_200_with_per_record_results(hook, sf):
    records = [{"External_Id__c": f"HK-{n}", "Name": f"Hook Ünïcødé {n} 株式会社"} for n in range(450)]
    records.append({"External_Id__c": "HK-long", "Name": "x" * 256})
    records.append({"External_Id__c": "HK-mail-owner", "Name": "ok", "QB_ListID__c": "80000001-1"})
    records.append({"External_Id__c": "HK-dup-qb", "Name": "dup", "QB_ListID__c": "80000001-1"})
    before = sf.admin("GET", "stats")["calls"].get("PATCH composite/sobjects", 0)
    results = hook.upsert("Account", "External_Id__c", records)
    assert sf.admin("GET", "stats")["calls"]["PATCH composite/sobjects"] - before == 3  # 452 records / 200
    assert [r.index for r in results] == list(range(len(records)))
    assert all(r.success and r.created and r.id.startswith("001") for r in results[:450])
    assert results[450].via == "preflight" and results[450].errors[0].code == "STRING_TOO_LONG"
    assert results[451].success
    assert results[452].errors[0].code == "DUPLICATE_VALUE" and results[452].via == "collections"
    again = hook.upsert("Account", "External_Id__c", records[:450])
    assert all(r.success and r.created is False for r in again)
    stored = next(hook.query_batches("SELECT Name FROM Account WHERE External_Id__c = 'HK-7'"))
    assert stored[0]["Name"] == "Hook Ünïcødé 7 株式会社"


def test_duplicate_keys_in_one_call_fail_only_the_earlier_copy(hook):
    results = hook.upsert(
        "Account",
        "External_Id__c",
        [{"External_Id__c": "HK-d", "Name": "first"}, {"External_Id__c": "hk-D", "Name": "second"}],
    )
    assert results[0].errors[0].code == "DUPLICATE_EXTERNAL_ID" and results[1].success


def test_describe_checks_refuse_unknown_and_read_only_fields_before_writing(hook, sf):
    before = sf.admin("GET", "stats")["total"]
    with pytest.raises(ConfigError, match="Bogus__c: no such field on Account"):
        hook.upsert("Account", "External_Id__c", [{"External_Id__c": "x", "Name": "n", "Bogus__c": 1}])
    with pytest.raises(ConfigError, match="CreatedDate: not createable"):
        hook.upsert("Account", "External_Id__c", [{"External_Id__c": "x", "CreatedDate": "2024-01-01"}])
    with pytest.raises(ConfigError, match="Name: not an External ID field"):
        hook.upsert("Account", "Name", [{"Name": "x"}])
    with pytest.raises(ConfigError, match="OrderId: not updateable"):
        hook.update("OrderItem", [{"Id": "802Dn0000000001IAA", "OrderId": "801Dn0000000001IAA"}])
    assert sf.admin("GET", "stats")["total"] - before <= 2  # two describes, no write was sent
    results = hook.upsert(
        "Product2",
        "SKU__c",
        [{"SKU__c": "HK-P1", "Name": "p", "Family": "Toys"}, {"SKU__c": "HK-P2", "Name": None}],
    )
    assert results[0].errors[0].code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert results[1].errors[0].code == "REQUIRED_FIELD_MISSING" and results[1].via == "preflight"


def test_row_locks_are_retried_per_record(hook, sf):
    sf.admin("POST", "faults", {"rules": [{"kind": "lock_row", "count": 3}]})
    records = [{"External_Id__c": f"HK-lock-{n}", "Name": "locked?"} for n in range(10)]
    results = hook.upsert("Account", "External_Id__c", records)
    assert all(r.success for r in results)
    assert sorted(r.attempts for r in results) == [1] * 7 + [2] * 3


def test_row_locks_past_the_budget_come_back_as_failures(sf, monkeypatch):
    hook = _new_hook(sf, monkeypatch, max_retries=1)
    sf.admin("POST", "faults", {"rules": [{"kind": "lock_row", "count": 4}]})
    results = hook.upsert(
        "Account",
        "External_Id__c",
        [{"External_Id__c": "HK-lock-x", "Name": "x"}, {"External_Id__c": "HK-lock-y", "Name": "y"}],
    )
    assert [r.errors[0].code for r in results] == ["UNABLE_TO_LOCK_ROW"] * 2 and not any(
        r.success for r in results
    )
    sf.admin("DELETE", "faults")


def test_5xx_drops_and_malformed_json_are_retried(hook, sf):
    sf.admin(
        "POST",
        "faults",
        {
            "rules": [
                {"kind": "status", "status": 503, "count": 2, "path": "composite"},
                {"kind": "drop", "count": 1, "path": "composite"},
                {"kind": "malformed_json", "count": 1, "path": "/query"},
            ]
        },
    )
    results = hook.upsert("Account", "External_Id__c", [{"External_Id__c": "HK-5xx", "Name": "retry me"}])
    assert results[0].success
    assert (
        next(hook.query_batches("SELECT Name FROM Account WHERE External_Id__c = 'HK-5xx'"))[0]["Name"]
        == "retry me"
    )


def test_5xx_past_the_budget_is_retriable_error(hook, sf):
    sf.admin(
        "POST", "faults", {"rules": [{"kind": "status", "status": 503, "count": 10, "path": "describe"}]}
    )
    with pytest.raises(RetriableSourceError, match="SERVER_UNAVAILABLE") as info:
        hook.describe("Contact")
    assert info.value.details["status"] == 503


def test_insert_is_not_resent_after_a_dropped_connection(hook, sf):
    sf.admin("POST", "faults", {"rules": [{"kind": "drop", "count": 1, "path": "composite"}]})
    with pytest.raises(RetriableSourceError, match="connection to Salesforce failed"):
        hook.insert("Account", [{"Name": "maybe created"}])


def test_concurrency_limit_backs_off_but_daily_limit_stops(hook, sf):
    sf.admin("POST", "faults", {"rules": [{"kind": "request_limit", "count": 1}]})
    assert hook.describe("Order")["name"] == "Order"
    used = sf.admin("GET", "stats")["api_used"]
    sf.admin("POST", "limits", {"used": 100_000})
    try:
        with pytest.raises(RateLimitedError, match="TotalRequests") as info:
            hook.describe("Pricebook2")
        assert info.value.retry_after == 3600.0
    finally:
        sf.admin("POST", "limits", {"used": used})


def test_hook_stops_before_exhausting_the_daily_quota(hook, sf):
    used = sf.admin("GET", "stats")["api_used"]
    sf.admin("POST", "limits", {"used": 96_000})
    try:
        hook.describe("User")  # this answer says 96,001/100,000
        calls = sf.admin("GET", "stats")["total"]
        with pytest.raises(RateLimitedError, match="over the stop mark"):
            hook.describe("Contact")
        assert sf.admin("GET", "stats")["total"] == calls  # refused without calling
    finally:
        sf.admin("POST", "limits", {"used": used})


def test_bulk_upsert_above_the_threshold_maps_all_three_result_files(sf, monkeypatch):
    hook = _new_hook(sf, monkeypatch, bulk_threshold=100)
    records = [{"External_Id__c": f"HK-bulk-{n}", "Name": f"Bulk {n}", "Website": None} for n in range(150)]
    records[5]["QB_ListID__c"] = records[6]["QB_ListID__c"] = "HK-same-listid"  # second one: DUPLICATE_VALUE
    records[7] = {
        "External_Id__c": "HK-bulk-7",
        "Name": "needs a valid Parent",
        "ParentId": "001Dn000000zzzzIAA",
    }
    results = hook.upsert("Account", "External_Id__c", records)
    assert hook.calls["bulk"] >= 5 and "collections" not in hook.calls
    assert [r.index for r in results] == list(range(150))
    failed = {r.index: r.errors[0].code for r in results if not r.success}
    assert failed == {6: "DUPLICATE_VALUE", 7: "INVALID_CROSS_REFERENCE_KEY"}
    assert all(r.via == "bulk" and r.created for r in results if r.success)
    again = hook.upsert("Account", "External_Id__c", records[:120])
    assert sum(r.created is False for r in again) == 118


def test_bulk_row_locks_are_resent(sf, monkeypatch):
    hook = _new_hook(sf, monkeypatch, bulk_threshold=50)
    sf.admin("POST", "faults", {"rules": [{"kind": "lock_row", "count": 2}]})
    results = hook.upsert(
        "Contact",
        "External_Id__c",
        [{"External_Id__c": f"HK-c-{n}", "LastName": f"Łukasz {n}"} for n in range(60)],
    )
    assert all(r.success for r in results) and sum(r.attempts == 2 for r in results) == 2


# ----- flows' shapes -----------------------------------------------------------------------------
def test_query_window_tiles_systemmodstamp_windows(hook):
    from datetime import UTC, datetime, timedelta

    end = datetime.now(UTC) + timedelta(minutes=1)
    start = end - timedelta(days=40)
    cut = end - timedelta(days=10)
    whole = [r for b in hook.query_window("Account", ["Name", "Owner.LastName"], start, end) for r in b]
    halves = [r for b in hook.query_window("Account", ["Name"], start, cut) for r in b] + [
        r for b in hook.query_window("Account", ["Name"], cut, end) for r in b
    ]
    assert len(whole) >= 300 and sorted(r["Id"] for r in whole) == sorted(r["Id"] for r in halves)
    stamps = [r["SystemModstamp"] for r in whole]
    assert stamps == sorted(stamps) and "LastName" in whole[0]["Owner"]
    typed = [
        r for b in hook.query_window("Account", ["Type"], start, end, where="Type = 'Prospect'") for r in b
    ]
    assert 0 < len(typed) < len(whole) and {r["Type"] for r in typed} == {"Prospect"}
    with pytest.raises(ConfigError, match="timezone-aware"):
        hook.query_window("Account", ["Name"], datetime(2024, 1, 1), end)
    with pytest.raises(ConfigError, match="empty window"):
        hook.query_window("Account", ["Name"], end, start)


def test_update_by_id_returns_failures_per_record(hook):
    rows = next(hook.query_batches("SELECT Id FROM Account WHERE QB_ListID__c = null ORDER BY Id LIMIT 2"))
    gone = hook.insert("Account", [{"Name": "to be deleted"}])[0].id
    hook.request("DELETE", f"sobjects/Account/{gone}")
    results = hook.update(
        "Account",
        [
            {"Id": rows[0]["Id"], "QB_ListID__c": "8000ABCD-1700000000"},
            {"Id": gone, "QB_ListID__c": "8000ABCD-1700000001"},
            {"Id": "001nonsense", "QB_ListID__c": "x"},
            {"QB_ListID__c": "no id"},
        ],
    )
    assert results[0].success and results[0].id == rows[0]["Id"] and results[0].created is False
    assert [r.errors[0].code for r in results[1:]] == [
        "ENTITY_IS_DELETED",
        "MALFORMED_ID",
        "MISSING_ARGUMENT",
    ]
    assert results[3].via == "preflight"


def test_all_or_none_commits_nothing_when_one_record_fails(hook):
    results = hook.upsert(
        "Account",
        "External_Id__c",
        [
            {"External_Id__c": "HK-aon-1", "Name": "fine"},
            {"External_Id__c": "HK-aon-2", "Name": "x", "ParentId": "001Dn000000zzzzIAA"},
        ],
        all_or_none=True,
    )
    assert [r.errors[0].code for r in results] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "INVALID_CROSS_REFERENCE_KEY",
    ]
    assert list(hook.query_batches("SELECT Id FROM Account WHERE External_Id__c = 'HK-aon-1'")) == []
    with pytest.raises(ConfigError, match="no all-or-none"):
        hook.upsert(
            "Account", "External_Id__c", [{"External_Id__c": "a", "Name": "b"}], all_or_none=True, mode="bulk"
        )
    with pytest.raises(ConfigError, match="cannot be matched back"):
        hook.insert("Account", [{"Name": "b"}], mode="bulk")


def test_exact_items_to_products_shape_with_standard_price_entries(sf, monkeypatch):
    """Upsert Product2 by SKU__c, then create only the missing standard PricebookEntries (one SOQL)."""
    hook = _new_hook(sf, monkeypatch, bulk_threshold=40)
    items = [
        {
            "SKU__c": f"HK-ITEM-{n:03d}",
            "Name": f"Exact item {n} – Ωmega",
            "IsActive": True,
            "Family": "Hardware",
            "Description": "d" * 4000,
        }
        for n in range(45)
    ]
    items.append({"SKU__c": "ITEM-0001", "Name": "Seeded item renamed", "IsActive": True})  # seeded already
    products = hook.upsert("Product2", "SKU__c", items)
    assert all(p.success for p in products) and sum(p.created for p in products) == 45
    std = sf.info["standard_pricebook_id"]
    ids = ", ".join(f"'{p.id}'" for p in products)
    priced = {
        r["Product2Id"]
        for b in hook.query_batches(
            f"SELECT Product2Id FROM PricebookEntry WHERE Pricebook2Id = '{std}' AND Product2Id IN ({ids})"
        )
        for r in b
    }
    assert len(priced) == 1  # only the seeded ITEM-0001 had a standard price
    entries = hook.insert(
        "PricebookEntry",
        [
            {"Pricebook2Id": std, "Product2Id": p.id, "UnitPrice": 9.5, "IsActive": True}
            for p in products
            if p.id not in priced
        ],
    )
    assert len(entries) == 45 and all(e.success for e in entries)
    again = hook.insert(
        "PricebookEntry", [{"Pricebook2Id": std, "Product2Id": products[0].id, "UnitPrice": 1}]
    )
    assert again[0].errors[0].code == "DUPLICATE_VALUE"


def test_orders_reference_accounts_by_external_id_in_collections_and_bulk(sf, monkeypatch):
    hook = _new_hook(sf, monkeypatch, bulk_threshold=30)
    hook.upsert("Account", "External_Id__c", [{"External_Id__c": "HK-ord-acc", "Name": "Orders BV"}])
    std = sf.info["standard_pricebook_id"]
    orders = [
        {
            "Exact_Order_Id__c": f"HK-EO-{n}",
            "Account": {"External_Id__c": "HK-ord-acc"},
            "EffectiveDate": "2024-05-01",
            "Status": "Draft",
            "Pricebook2Id": std,
        }
        for n in range(35)
    ]
    orders[3]["Account"] = {"External_Id__c": "HK-no-such-account"}
    for mode in ("bulk", "collections"):
        results = hook.upsert("Order", "Exact_Order_Id__c", orders, mode=mode)
        assert {r.via for r in results} == {mode}
        assert [r.index for r in results if not r.success] == [3]
        assert "HK-no-such-account" in results[3].errors[0].message
    acc = [
        r
        for b in hook.query_batches(
            "SELECT Account.External_Id__c FROM Order WHERE Exact_Order_Id__c = 'HK-EO-0'"
        )
        for r in b
    ]
    assert acc[0]["Account"]["External_Id__c"] == "HK-ord-acc"


def test_persistently_malformed_json_is_a_clear_retriable_error(hook, sf):
    sf.admin("POST", "faults", {"rules": [{"kind": "malformed_json", "count": 10, "path": "describe"}]})
    with pytest.raises(RetriableSourceError, match="malformed JSON") as info:
        hook.describe("Product2")
    assert "sobjects/Product2/describe" in info.value.where


def test_hook_slows_down_near_the_quota(sf, monkeypatch):
    import time

    hook = _new_hook(sf, monkeypatch, throttle_seconds=0.3)
    used = sf.admin("GET", "stats")["api_used"]
    sf.admin("POST", "limits", {"used": 85_000})
    try:
        hook.describe("Account")  # learns 85,001/100,000 from the header
        assert hook.api_usage == (85_001, 100_000)
        start = time.monotonic()
        hook.describe("Contact")
        assert time.monotonic() - start >= 0.3
    finally:
        sf.admin("POST", "limits", {"used": used})


def _provider_login_connection(sf, monkeypatch, password_suffix: str = "") -> None:
    i = sf.info
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALESFORCE_SOAP",
        json.dumps(
            {
                "conn_type": "salesforce",
                "login": i["username"],
                "password": i["password"] + password_suffix,
                "extra": {
                    "security_token": i["security_token"],
                    "domain": sf.provider_domain(),
                    "version": "62.0",
                    "ca_bundle": sf.ca_bundle,
                    **FAST,
                },
            }
        ),
    )


def test_provider_hook_own_soap_login_reaches_the_simulator(sf, monkeypatch):
    """The provider's unmodified login (simple-salesforce SOAP, password + security token) works too."""
    import requests
    from airflow.providers.salesforce.hooks.salesforce import SalesforceHook as ProviderHook

    _provider_login_connection(sf, monkeypatch)
    session = requests.Session()
    session.verify, session.trust_env = sf.ca_bundle, False
    provider = ProviderHook("salesforce_soap", session=session)
    assert provider.get_conn().sf_instance == sf.url.removeprefix("https://")
    assert provider.make_query("SELECT Id FROM User")["totalSize"] == 9
    ok, message = provider.test_connection()
    assert ok, message


def test_hook_without_login_url_logs_in_through_the_provider(sf, monkeypatch):
    from erpsync.hooks.salesforce import SalesforceHook

    _provider_login_connection(sf, monkeypatch)
    hook = SalesforceHook("salesforce_soap", api_version="61.0")
    assert hook.get_conn().base_url.endswith("/services/data/v61.0/")  # pinned, not the provider's default
    [row] = next(
        hook.query_batches("SELECT Id, Username FROM User WHERE Username = 'integration@erpsync.sandbox'")
    )
    assert row["Id"].startswith("005") and hook.calls["auth"] == 1
    sf.admin("POST", "sessions/expire")
    assert hook.describe("Account")["name"] == "Account"  # renewed through the provider's login again
    assert hook.calls["auth"] == 2
    _provider_login_connection(sf, monkeypatch, password_suffix="-wrong")
    with pytest.raises(AuthError, match="INVALID_LOGIN"):
        SalesforceHook("salesforce_soap").get_conn()


def test_unreadable_jwt_key_file_is_a_config_error(sf, monkeypatch, tmp_path):
    hook = _new_hook(sf, monkeypatch, "jwt", private_key_file_path=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="private_key_file_path cannot be read"):
        hook.get_conn()


def test_all_or_none_chunk_with_a_row_lock_is_resent_whole(hook, sf):
    sf.admin("POST", "faults", {"rules": [{"kind": "lock_row", "count": 1}]})
    records = [{"External_Id__c": f"HK-aonl-{n}", "Name": f"n{n}"} for n in range(3)]
    results = hook.upsert("Account", "External_Id__c", records, all_or_none=True)
    assert all(r.success and r.attempts == 2 for r in results)
    assert (
        sum(map(len, hook.query_batches("SELECT Id FROM Account WHERE External_Id__c LIKE 'HK-aonl-%'"))) == 3
    )


def test_query_batches_strip_attributes_inside_child_subqueries(hook):
    [order] = next(
        hook.query_batches(
            "SELECT Id, (SELECT Id, Product2.ProductCode FROM OrderItems) FROM Order "
            "WHERE PoNumber = 'PO-2024000'"
        )
    )
    lines = order["OrderItems"]["records"]
    assert lines and all("attributes" not in line and "attributes" not in line["Product2"] for line in lines)
