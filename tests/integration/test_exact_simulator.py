"""Contract tests of the Exact Online simulator over real sockets, with plain httpx (no hook).

Each test pins one behaviour of reference/exact-online.md that integrators trip over, so the hook's
tests run against a server that really behaves that way.
"""

from __future__ import annotations

import re
import time
import urllib.parse

import httpx
import pytest

from erpsync.sandbox.exact.testing import running_exact

DIV, TEST_DIV, BE_DIV = 1001234, 1001235, 2002001


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    with running_exact(
        tmp_path_factory.mktemp("exact"), minutely_limit=10_000, daily_limit=100_000, error_budget=0
    ) as running:
        yield running


def _refresh(exact, refresh_token: str) -> httpx.Response:
    return exact.http.post(
        f"{exact.url}/api/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": exact.info["client_id"],
            "client_secret": exact.info["client_secret"],
        },
    )


def _client(exact, divisions: list[int] | None = None) -> httpx.Client:
    pair = _refresh(exact, exact.new_consent(divisions)).json()
    return exact.client(
        base_url=exact.url,
        headers={
            "Authorization": f"Bearer {pair['access_token']}",
            "Accept": "application/json",
            "Prefer": "return=representation",
        },
    )


def _fresh_window(seconds: float) -> None:
    """Sleep into the start of a new fixed window, so a test's calls never straddle a reset."""
    time.sleep(seconds - time.time() % seconds + 0.02)


def _error_value(resp: httpx.Response) -> str:
    body = resp.json()
    assert (
        set(body) == {"error"}
        and body["error"]["code"] == ""
        and set(body["error"]["message"]) == {"lang", "value"}
    )
    return body["error"]["message"]["value"]


# ---- OAuth ----------------------------------------------------------------------------------------------


def test_authorization_code_flow_redirects_with_a_percent_encoded_code(exact):
    """The authorize page redirects back with a code containing '!'; decoded once, it buys a token pair."""
    info = exact.info
    resp = exact.http.get(
        f"{exact.url}/api/oauth2/auth",
        params={
            "client_id": info["client_id"],
            "redirect_uri": info["redirect_uri"],
            "response_type": "code",
            "state": "xyz",
        },
    )
    assert resp.status_code == 302
    location = resp.headers["location"]
    assert location.startswith(info["redirect_uri"] + "?")
    assert "%21" in location  # '!' arrives percent-encoded
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    code = query["code"][0]
    assert "!" in code and query["state"] == ["xyz"]
    form = {
        "grant_type": "authorization_code",
        "redirect_uri": info["redirect_uri"],
        "client_id": info["client_id"],
        "client_secret": info["client_secret"],
    }
    double = exact.http.post(f"{exact.url}/api/oauth2/token", data={**form, "code": urllib.parse.quote(code)})
    assert double.status_code == 400 and "percent-encoded twice" in double.json()["error_description"]
    pair = exact.http.post(f"{exact.url}/api/oauth2/token", data={**form, "code": code})
    assert pair.status_code == 200
    body = pair.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == "600"  # a string, as Exact sends it
    assert body["refresh_token"].startswith("Gcp7!")
    again = exact.http.post(f"{exact.url}/api/oauth2/token", data={**form, "code": code})
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"  # codes are single-use


def test_authorize_refuses_a_redirect_uri_that_is_not_registered(exact):
    resp = exact.http.get(
        f"{exact.url}/api/oauth2/auth",
        params={
            "client_id": exact.info["client_id"],
            "redirect_uri": "https://evil.example/cb",
            "response_type": "code",
        },
    )
    assert resp.status_code == 400 and "redirect_uri" in resp.json()["error_description"]


def test_token_endpoint_wants_a_form_body_and_the_right_secret(exact):
    as_json = exact.http.post(f"{exact.url}/api/oauth2/token", json={"grant_type": "refresh_token"})
    assert as_json.status_code == 400 and "x-www-form-urlencoded" in as_json.json()["error_description"]
    wrong = exact.http.post(
        f"{exact.url}/api/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": "x",
            "client_id": exact.info["client_id"],
            "client_secret": "no",
        },
    )
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_client"


def test_refresh_rotates_and_a_reused_refresh_token_is_refused(tmp_path):
    """Every refresh returns a new refresh token; the old one is dead at once (no grace window)."""
    with running_exact(tmp_path, min_token_age=0) as exact:
        first = exact.info["refresh_token"]
        pair = _refresh(exact, first).json()
        assert pair["refresh_token"] != first
        reused = _refresh(exact, first)
        assert reused.status_code == 400
        assert reused.json() == {"error": "invalid_grant", "error_description": "Old refresh token used."}
        unknown = _refresh(exact, "Gcp7!nonsense")
        assert (
            unknown.json()["error_description"] == "Token is not allowed, because of invalid or empty chainId"
        )
        assert _refresh(exact, pair["refresh_token"]).status_code == 200  # the newest one still works


def test_reuse_error_can_take_the_2018_shape(tmp_path):
    with running_exact(tmp_path, min_token_age=0, reuse_error="unauthorized_client") as exact:
        first = exact.info["refresh_token"]
        assert _refresh(exact, first).status_code == 200
        reused = _refresh(exact, first)
        assert reused.status_code == 401 and reused.json()["error"] == "unauthorized_client"


def test_refresh_inside_the_minimum_token_age_is_refused_and_the_old_pair_stays_valid(exact):
    pair = _refresh(exact, exact.new_consent()).json()
    early = _refresh(exact, pair["refresh_token"])
    assert early.status_code == 400
    assert early.json() == {
        "error": "access_denied",
        "error_description": "Rate limit exceeded: access_token not expired",
    }
    assert early.headers["Reason"].startswith("TooEarlyToRefreshTokens")
    me = exact.http.get(
        f"{exact.url}/api/v1/current/Me", headers={"Authorization": f"Bearer {pair['access_token']}"}
    )
    assert me.status_code == 200


def test_access_tokens_expire(tmp_path):
    with running_exact(tmp_path, access_token_ttl=1, min_token_age=0) as exact:
        pair = _refresh(exact, exact.info["refresh_token"]).json()
        assert pair["expires_in"] == "1"
        headers = {"Authorization": f"Bearer {pair['access_token']}"}
        assert exact.http.get(f"{exact.url}/api/v1/current/Me", headers=headers).status_code == 200
        time.sleep(1.2)
        expired = exact.http.get(f"{exact.url}/api/v1/current/Me", headers=headers)
        assert expired.status_code == 401 and "invalid_token" in expired.headers["WWW-Authenticate"]


def test_revoked_consent_kills_access_and_refresh_tokens(tmp_path):
    with running_exact(tmp_path, min_token_age=0) as exact:
        pair = _refresh(exact, exact.info["refresh_token"]).json()
        assert exact.http.post(f"{exact.url}/admin/revoke").json() == {"revoked_chains": 1}
        headers = {"Authorization": f"Bearer {pair['access_token']}"}
        assert exact.http.get(f"{exact.url}/api/v1/{DIV}/vat/VATCodes", headers=headers).status_code == 401
        refused = _refresh(exact, pair["refresh_token"])
        assert refused.status_code == 400 and "revoked" in refused.json()["error_description"]


def test_expired_refresh_token_gets_exacts_message(tmp_path):
    with running_exact(tmp_path, min_token_age=0) as exact:
        token = exact.info["refresh_token"]
        chain = next(c for c in exact.simulator.oauth.chains.values() if c.refresh_token == token)
        chain.refresh_expires_at = time.time() - 60
        resp = _refresh(exact, token)
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"
        assert re.match(
            r"The refresh token expired at .* and it is now .*\.", resp.json()["error_description"]
        )


# ---- divisions, Me, rate limits ----------------------------------------------------------------------------------


def test_me_has_the_current_division_inside_results_and_no_rate_limit_headers(exact):
    with _client(exact) as client:
        resp = client.get("/api/v1/current/Me")
    me = resp.json()["d"]["results"][0]
    assert me["CurrentDivision"] == DIV and me["UserName"]
    assert not any(h.lower().startswith("x-ratelimit") for h in resp.headers)


def test_divisions_and_division_scoped_consent(exact):
    with _client(exact, [TEST_DIV]) as client:
        assert client.get("/api/v1/current/Me").json()["d"]["results"][0]["CurrentDivision"] == TEST_DIV
        granted = client.get(f"/api/v1/{TEST_DIV}/hrm/Divisions").json()["d"]["results"]
        assert [(d["Code"], d["Description"]) for d in granted] == [(TEST_DIV, "ERPSync Demo B.V. (test)")]
        everything = client.get(f"/api/v1/{TEST_DIV}/system/Divisions").json()["d"]["results"]
        assert {d["Code"] for d in everything} == {DIV, TEST_DIV, BE_DIV}
        refused = client.get(f"/api/v1/{DIV}/vat/VATCodes")
        assert refused.status_code == 403 and str(DIV) in _error_value(refused)


def test_rate_limit_headers_are_epoch_ms_and_per_division(tmp_path):
    with (
        running_exact(tmp_path, minutely_limit=3, minute_seconds=4, daily_limit=1000) as exact,
        _client(exact) as client,
    ):
        _fresh_window(4)
        before = time.time() * 1000
        first = client.get(f"/api/v1/{DIV}/vat/VATCodes")
        h = first.headers
        assert h["X-RateLimit-Limit"] == "1000" and h["X-RateLimit-Remaining"] == "999"
        assert h["X-RateLimit-Minutely-Limit"] == "3" and h["X-RateLimit-Minutely-Remaining"] == "2"
        assert before < int(h["X-RateLimit-Minutely-Reset"]) <= before + 4_000  # epoch milliseconds
        assert before < int(h["X-RateLimit-Reset"]) <= before + 86_400_000
        client.get(f"/api/v1/{DIV}/vat/VATCodes")
        client.get(f"/api/v1/{DIV}/vat/VATCodes")
        refused = client.get(f"/api/v1/{DIV}/vat/VATCodes")
        assert refused.status_code == 429 and refused.headers["X-RateLimit-Minutely-Remaining"] == "0"
        assert refused.text == "Too Many Requests"  # not JSON, as Exact sends it
        other = client.get(f"/api/v1/{TEST_DIV}/vat/VATCodes")  # other divisions are unaffected
        assert other.status_code == 200 and other.headers["X-RateLimit-Minutely-Remaining"] == "2"


def test_minute_window_resets_and_daily_limit_holds(tmp_path):
    with (
        running_exact(tmp_path, minutely_limit=2, minute_seconds=2, daily_limit=3) as exact,
        _client(exact) as client,
    ):
        _fresh_window(2)
        for _ in range(2):
            assert client.get(f"/api/v1/{DIV}/vat/VATCodes").status_code == 200
        assert client.get(f"/api/v1/{DIV}/vat/VATCodes").status_code == 429
        time.sleep(
            float(client.get(f"/api/v1/{DIV}/vat/VATCodes").headers["X-RateLimit-Minutely-Reset"]) / 1000
            - time.time()
            + 0.05
        )
        assert (
            client.get(f"/api/v1/{DIV}/vat/VATCodes").status_code == 200
        )  # new minute, third call of the day
        daily = client.get(f"/api/v1/{DIV}/vat/VATCodes")
        assert daily.status_code == 429 and daily.headers["X-RateLimit-Remaining"] == "0"
        assert exact.simulator.limits.refused["daily"] >= 1


def test_realistic_429_drops_the_other_limits_headers(tmp_path):
    with (
        running_exact(tmp_path, minutely_limit=1, realistic_429_headers=True) as exact,
        _client(exact) as client,
    ):
        client.get(f"/api/v1/{DIV}/vat/VATCodes")
        refused = client.get(f"/api/v1/{DIV}/vat/VATCodes")
        assert refused.status_code == 429 and "X-RateLimit-Minutely-Reset" in refused.headers
        assert "X-RateLimit-Remaining" not in refused.headers


def test_ten_errors_per_endpoint_per_hour_block_the_endpoint(tmp_path):
    with running_exact(tmp_path, error_budget=3) as exact, _client(exact) as client:
        for _ in range(3):
            assert (
                client.get(f"/api/v1/{DIV}/logistics/Items", params={"$filter": "Nope eq 1"}).status_code
                == 400
            )
        blocked = client.get(f"/api/v1/{DIV}/logistics/Items", params={"$top": "1"})
        assert blocked.status_code == 403 and "blocked for an hour" in _error_value(blocked)
        assert client.get(f"/api/v1/{DIV}/vat/VATCodes").status_code == 200  # other endpoints still work


# ---- reading: envelope, paging, OData -------------------------------------------------------------------------------


def test_regular_endpoint_pages_by_60_with_an_opaque_next_link(exact):
    with _client(exact) as client:
        url, sizes, ids = f"/api/v1/{DIV}/logistics/Items?$select=ID,Code", [], []
        while url:
            d = client.get(url).json()["d"]
            sizes.append(len(d["results"]))
            ids += [r["ID"] for r in d["results"]]
            url = d.get("__next")
            assert url is None or "$skiptoken=guid'" in urllib.parse.unquote(url)
    assert sizes == [60, 60, 60, 60, 10] and len(set(ids)) == 250


def test_bulk_needs_select_and_pages_by_1000(tmp_path):
    with running_exact(tmp_path, item_count=2100) as exact, _client(exact) as client:
        missing = client.get(f"/api/v1/{DIV}/bulk/Logistics/Items")
        assert missing.status_code == 400 and "$select" in _error_value(missing)
        star = client.get(f"/api/v1/{DIV}/bulk/Logistics/Items", params={"$select": "*"})
        assert star.status_code == 400
        url, sizes = f"/api/v1/{DIV}/bulk/logistics/items?$select=ID,Code", []
        while url:
            d = client.get(url).json()["d"]
            sizes.append(len(d["results"]))
            url = d.get("__next")
        assert sizes == [1000, 1000, 100]


def test_sync_timestamp_cursor_returns_each_change_once(exact):
    with _client(exact) as client:
        sync = f"/api/v1/{DIV}/sync/Logistics/Items"
        rows = client.get(sync, params={"$select": "ID,Code,Timestamp", "$filter": "Timestamp gt 1L"}).json()[
            "d"
        ]["results"]
        assert len(rows) == 250
        stamps = [int(r["Timestamp"]) for r in rows]
        assert all(isinstance(r["Timestamp"], str) for r in rows)  # Edm.Int64 travels as a string
        assert stamps == sorted(stamps)
        cursor = max(stamps)
        target = rows[5]["ID"]
        assert (
            client.put(
                f"/api/v1/{DIV}/logistics/Items(guid'{target}')", json={"Notes": "changed"}
            ).status_code
            == 204
        )
        changed = client.get(
            sync, params={"$select": "ID,Notes", "$filter": f"Timestamp gt {cursor}L"}
        ).json()["d"]["results"]
        assert [(r["ID"], r["Notes"]) for r in changed] == [(target, "changed")]
        regular = client.get(f"/api/v1/{DIV}/logistics/Items", params={"$filter": "Timestamp gt 1L"})
        assert regular.status_code == 400  # Timestamp exists only on sync/bulk


def test_filters_literals_and_padded_account_codes(exact):
    with _client(exact) as client:

        def q(entity, **params):
            resp = client.get(f"/api/v1/{DIV}/{entity}", params=params)
            assert resp.status_code == 200, resp.text
            return resp.json()["d"]["results"]

        assert q("crm/Accounts", **{"$filter": "Code eq '1001'"}) == []  # unpadded: no match, as on Exact
        padded = q("crm/Accounts", **{"$filter": f"Code eq '{'1001':>18}'", "$select": "ID,Code,Name"})
        assert [r["Code"] for r in padded] == ["              1001"]
        assert q("crm/Accounts", **{"$filter": "trim(Code) eq '1001'"})[0]["ID"] == padded[0]["ID"]
        by_guid = q("crm/Accounts", **{"$filter": f"ID eq guid'{padded[0]['ID']}'"})
        assert len(by_guid) == 1 and by_guid[0]["Modified"].startswith("/Date(")
        assert len(q("crm/Accounts", **{"$filter": "Modified ge datetime'2024-01-01T00:00:00'"})) == 8
        assert q("crm/Accounts", **{"$filter": "Modified gt datetime'2024-01-01T00:00:00'"}) == []
        chairs = q(
            "logistics/Items",
            **{"$filter": "startswith(Code,'CHAIR') eq true and StandardSalesPrice gt 100", "$top": "500"},
        )
        assert chairs and all(r["Code"].startswith("CHAIR") and r["StandardSalesPrice"] > 100 for r in chairs)
        either = q(
            "vat/VATCodes",
            **{"$filter": "(Code eq '1' or Code eq '2') and IsBlocked eq false", "$orderby": "Code desc"},
        )
        assert [r["Code"] for r in either] == ["2", "1"]
        assert [
            r["Percentage"]
            for r in q("vat/VATCodes", **{"$filter": "Code ne '0' and Percentage ge 19", "$orderby": "Code"})
        ] == [21.0, 19.0, 21.0]
        found = q("crm/Accounts", **{"$filter": "substringof('korrel', Name) eq true"})
        assert [r["Name"] for r in found] == ["Bakkerij De Gouden Korrel B.V."]
        quoted = q("crm/Accounts", **{"$filter": "Name eq 'Café ''t Hoekje'"})  # a doubled quote escapes
        assert [r["Name"] for r in quoted] == ["Café 't Hoekje"]


def test_bad_filters_get_an_odata_error_that_names_the_problem(exact):
    with _client(exact) as client:
        for bad, words in [
            ("Nope eq 1", "Nope"),
            ("Code eq", "end of filter"),
            ("ID eq guid'123'", "guid"),
            ("Modified gt datetime'yesterday'", "datetime"),
            ("SalesOrderLines/Item eq 1", "navigation"),
        ]:
            resp = client.get(
                f"/api/v1/{DIV}/salesorder/SalesOrders"
                if "Lines" in bad
                else f"/api/v1/{DIV}/logistics/Items",
                params={"$filter": bad},
            )
            assert resp.status_code == 400, bad
            assert words in _error_value(resp), (bad, _error_value(resp))


def test_top_orderby_inlinecount_count_and_select(exact):
    with _client(exact) as client:
        base = f"/api/v1/{DIV}/logistics/Items"
        d = client.get(
            base, params={"$top": "70", "$orderby": "Code", "$inlinecount": "allpages", "$select": "Code"}
        ).json()["d"]
        assert d["__count"] == "250" and len(d["results"]) == 60
        rest = client.get(d["__next"]).json()["d"]
        codes = [r["Code"] for r in d["results"] + rest["results"]]
        assert len(codes) == 70 and codes == sorted(codes) and "__next" not in rest
        assert set(d["results"][0]) == {"__metadata", "Code"}
        assert client.get(f"{base}/$count").text == "250"
        bad = client.get(base, params={"$select": "Code,Bogus"})
        assert bad.status_code == 400 and "Bogus" in _error_value(bad)


def test_single_entity_envelope_and_deferred_lines(exact):
    with _client(exact) as client:
        item = client.get(f"/api/v1/{DIV}/logistics/Items", params={"$top": "1"}).json()["d"]["results"][0]
        single = client.get(f"/api/v1/{DIV}/logistics/Items(guid'{item['ID']}')").json()
        assert (
            single["d"]["ID"] == item["ID"]
            and single["d"]["__metadata"]["type"] == "Exact.Web.Api.Models.Logistics.Item"
        )
        missing = client.get(f"/api/v1/{DIV}/logistics/Items(guid'00000000-0000-0000-0000-000000000000')")
        assert missing.status_code == 404 and "not found" in _error_value(missing)


def test_seed_data_is_realistic_and_dirty_where_promised(exact):
    with _client(exact) as client:
        items = []
        url = f"/api/v1/{DIV}/logistics/Items?$select=Code,Description,StandardSalesPrice,SalesVatCode,Unit"
        while url:
            d = client.get(url).json()["d"]
            items += d["results"]
            url = d.get("__next")
        vat = {r["Code"]: r for r in client.get(f"/api/v1/{DIV}/vat/VATCodes").json()["d"]["results"]}
        accounts = client.get(f"/api/v1/{DIV}/crm/Accounts").json()["d"]["results"]
        conditions = client.get(f"/api/v1/{DIV}/cashflow/PaymentConditions").json()["d"]["results"]
    assert len(items) == 250
    assert any(r["Description"] == "" for r in items)
    assert any(" " in r["Code"] for r in items)
    assert any(len(r["Description"]) > 255 for r in items)
    assert any(r["StandardSalesPrice"] == 0 for r in items)
    assert any("Ø" in r["Description"] for r in items)
    assert {vat[c]["Percentage"] for c in ("0", "1", "2", "3")} == {0.0, 9.0, 21.0}
    assert vat["0"]["Type"] == "N"  # the "no VAT" code
    assert {"00", "14", "30"} <= {c["Code"] for c in conditions}
    assert all(len(a["Code"]) == 18 for a in accounts)
    assert any(a["Name"] == "Diverse debiteuren" for a in accounts)  # the default debtor
    assert sum(1 for a in accounts if a["Email"]) >= 6


# ---- writing -----------------------------------------------------------------------------------------------------------


def test_post_validates_required_read_only_and_unknown_fields(exact):
    with _client(exact) as client:
        url = f"/api/v1/{DIV}/logistics/Items"
        missing = client.post(url, json={"Code": "NEW-1"})
        assert missing.status_code == 400 and _error_value(missing) == "Mandatory: Description"
        read_only = client.post(url, json={"Code": "NEW-1", "Description": "x", "Stock": 5})
        assert read_only.status_code == 400 and "read-only" in _error_value(read_only)
        unknown = client.post(url, json={"Code": "NEW-1", "Description": "x", "Colour": "red"})
        assert unknown.status_code == 400 and "Colour" in _error_value(unknown)
        broken = client.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
        assert broken.status_code == 400 and "JSON" in _error_value(broken)
        too_long = client.post(url, json={"Code": "NEW-1", "Description": "x" * 61})
        assert too_long.status_code == 400 and "60" in _error_value(too_long)
        created = client.post(
            url, json={"Code": "NEW-1", "Description": "Nieuw ☕ artikel", "SalesVatCode": "2"}
        )
        assert created.status_code == 201
        record = created.json()["d"]
        assert (
            record["Description"] == "Nieuw ☕ artikel"
            and record["SalesVatCodeDescription"] == "BTW hoog 21%"
        )
        duplicate = client.post(url, json={"Code": "NEW-1", "Description": "again"})
        assert duplicate.status_code == 400 and "already exists" in _error_value(duplicate)
        put = client.put(f"{url}(guid'{record['ID']}')", json={"Description": "Renamed"})
        assert put.status_code == 204 and put.content == b""
        assert client.put(f"{url}(guid'{record['ID']}')", json={"Description": ""}).status_code == 400


def test_accounts_get_padded_codes(exact):
    with _client(exact) as client:
        created = client.post(
            f"/api/v1/{DIV}/crm/Accounts", json={"Name": "Nieuwe Klant", "Code": "77", "Email": "a@b.example"}
        )
        assert created.status_code == 201 and created.json()["d"]["Code"] == " " * 16 + "77"
        assert created.json()["d"]["IsSales"] is True
        auto = client.post(f"/api/v1/{DIV}/crm/Accounts", json={"Name": "Auto Code"}).json()["d"]
        assert auto["Code"].strip().isdigit() and len(auto["Code"]) == 18
        dup = client.post(f"/api/v1/{DIV}/crm/Accounts", json={"Name": "Dup", "Code": "  77"})
        assert dup.status_code == 400
        contact = client.post(
            f"/api/v1/{DIV}/crm/Contacts", json={"Account": auto["ID"], "Email": "x@y.example"}
        )
        assert contact.status_code == 400 and "FirstName or LastName" in _error_value(contact)


def test_sales_order_deep_insert_keys_and_goods_delivery(exact):
    with _client(exact) as client:
        account = client.get(
            f"/api/v1/{DIV}/crm/Accounts", params={"$filter": f"Code eq '{'1002':>18}'"}
        ).json()["d"]["results"][0]
        items = client.get(
            f"/api/v1/{DIV}/logistics/Items",
            params={"$filter": "IsStockItem eq true and StandardSalesPrice gt 0", "$top": "2"},
        ).json()["d"]["results"]
        stock_before = client.get(
            f"/api/v1/{DIV}/read/logistics/StockPosition", params={"itemId": f"guid'{items[0]['ID']}'"}
        ).json()["d"]["results"][0]
        bad_line = client.post(
            f"/api/v1/{DIV}/salesorder/SalesOrders",
            json={"OrderedBy": account["ID"], "SalesOrderLines": [{"Item": items[0]["ID"]}, {"Quantity": 1}]},
        )
        assert bad_line.status_code == 400 and _error_value(bad_line) == "SalesOrderLines[1]: Mandatory: Item"
        order = client.post(
            f"/api/v1/{DIV}/salesorder/SalesOrders",
            json={
                "OrderedBy": account["ID"],
                "YourRef": "SF-00000042",
                "SalesOrderLines": [
                    {"Item": items[0]["ID"], "Quantity": 3},
                    {"Item": items[1]["ID"], "Quantity": 1, "UnitPrice": 10},
                ],
            },
        )
        assert order.status_code == 201, order.text
        header = order.json()["d"]
        assert "ID" not in header and re.fullmatch(r"[0-9a-f-]{36}", header["OrderID"])
        assert isinstance(header["OrderNumber"], int) and header["Status"] == 12
        assert header["PaymentCondition"] == "14"  # from the account
        assert "__deferred" in header["SalesOrderLines"]
        expanded = client.get(
            f"/api/v1/{DIV}/salesorder/SalesOrders(guid'{header['OrderID']}')",
            params={"$expand": "SalesOrderLines"},
        ).json()["d"]
        lines = expanded["SalesOrderLines"]["results"]
        assert [ln["LineNumber"] for ln in lines] == [1, 2] and lines[1]["AmountFC"] == 10.0
        position = client.get(
            f"/api/v1/{DIV}/read/logistics/StockPosition", params={"itemId": f"guid'{items[0]['ID']}'"}
        ).json()["d"]["results"][0]
        assert position["ReservedStock"] == stock_before["ReservedStock"] + 3
        delivery = client.post(
            f"/api/v1/{DIV}/salesorder/GoodsDeliveries",
            json={
                "TrackingNumber": "3SABC123",
                "GoodsDeliveryLines": [{"SalesOrderLineID": lines[0]["ID"], "QuantityDelivered": 3}],
            },
        )
        assert delivery.status_code == 201, delivery.text
        entry = delivery.json()["d"]
        assert "EntryID" in entry and "ID" not in entry and entry["DeliveryAccount"] == account["ID"]
        after = client.get(
            f"/api/v1/{DIV}/read/logistics/StockPosition", params={"itemId": f"guid'{items[0]['ID']}'"}
        ).json()["d"]["results"][0]
        assert (
            after["InStock"] == stock_before["InStock"] - 3
            and after["ReservedStock"] == stock_before["ReservedStock"]
        )
        status = client.get(
            f"/api/v1/{DIV}/salesorder/SalesOrders(guid'{header['OrderID']}')",
            params={"$select": "DeliveryStatus"},
        ).json()["d"]
        assert status["DeliveryStatus"] == 20  # partially delivered
        too_much = client.post(
            f"/api/v1/{DIV}/salesorder/GoodsDeliveries",
            json={"GoodsDeliveryLines": [{"SalesOrderLineID": lines[0]["ID"], "QuantityDelivered": 1}]},
        )
        assert too_much.status_code == 400 and "open quantity 0" in _error_value(too_much)
        no_delete = client.delete(f"/api/v1/{DIV}/salesorder/GoodsDeliveries(guid'{entry['EntryID']}')")
        assert no_delete.status_code == 405
        stock_feed = client.get(
            f"/api/v1/{DIV}/sync/Inventory/StockPositions",
            params={
                "$select": "ItemId,CurrentStock,FreeStock",
                "$filter": f"ItemId eq guid'{items[0]['ID']}'",
            },
        ).json()["d"]["results"]
        assert stock_feed[0]["CurrentStock"] == after["InStock"]


def test_delete_is_logged_in_sync_deleted(exact):
    with _client(exact) as client:
        acc = client.post(f"/api/v1/{DIV}/crm/Accounts", json={"Name": "Short-lived"}).json()["d"]
        assert client.delete(f"/api/v1/{DIV}/crm/Accounts(guid'{acc['ID']}')").status_code == 204
        rows = client.get(
            f"/api/v1/{DIV}/sync/Deleted",
            params={"$select": "EntityKey,EntityType,Timestamp", "$filter": "Timestamp gt 1L"},
        ).json()["d"]["results"]
        assert {"EntityKey": acc["ID"], "EntityType": 2} in [
            {k: r[k] for k in ("EntityKey", "EntityType")} for r in rows
        ]


def test_deleting_a_stock_item_deletes_its_position_and_a_stock_count_feeds_sync(exact):
    def feed(client, path, since):
        return client.get(
            f"/api/v1/{DIV}/sync/{path}",
            params={
                "$select": "ItemId,CurrentStock,Timestamp"
                if "Stock" in path
                else "EntityKey,EntityType,Timestamp",
                "$filter": f"Timestamp gt {since}L",
            },
        ).json()["d"]["results"]

    with _client(exact) as client:
        item = client.post(
            f"/api/v1/{DIV}/logistics/Items",
            json={"Code": "STOCK-DEL", "Description": "x", "IsStockItem": True},
        ).json()["d"]
        start = max(int(r["Timestamp"]) for r in feed(client, "Inventory/StockPositions", 1))
        counted = exact.http.post(
            f"{exact.url}/admin/stock", json={"division": DIV, "code": "STOCK-DEL", "current": 7}
        )
        assert counted.status_code == 200 and int(counted.json()["Timestamp"]) > start
        assert [
            (r["ItemId"], r["CurrentStock"]) for r in feed(client, "Inventory/StockPositions", start)
        ] == [(item["ID"], 7.0)]
        assert client.delete(f"/api/v1/{DIV}/logistics/Items(guid'{item['ID']}')").status_code == 204
        gone = [(r["EntityKey"], r["EntityType"]) for r in feed(client, "Deleted", start)]
        assert gone == [(item["ID"], 9), (item["ID"], 15)]  # the item, then its stock position
        assert item["ID"] not in {r["ItemId"] for r in feed(client, "Inventory/StockPositions", 1)}
        unknown = exact.http.post(
            f"{exact.url}/admin/stock", json={"division": DIV, "code": "NOPE", "current": 1}
        )
        assert unknown.status_code == 404


# ---- faults and persistence -----------------------------------------------------------------------------------------------


def test_fault_injection_latency_5xx_and_429(tmp_path):
    with running_exact(tmp_path) as exact, _client(exact) as client:
        exact.http.post(
            f"{exact.url}/admin/faults", json={"status": 503, "count": 1, "match": "vat/VATCodes"}
        )
        assert client.get(f"/api/v1/{DIV}/vat/VATCodes").status_code == 503
        assert client.get(f"/api/v1/{DIV}/vat/VATCodes").status_code == 200
        exact.http.post(f"{exact.url}/admin/faults", json={"status": 429, "count": 1})
        assert client.get(f"/api/v1/{DIV}/vat/VATCodes").status_code == 429
        exact.http.post(f"{exact.url}/admin/faults", json={"latency": 0.3})
        started = time.monotonic()
        client.get(f"/api/v1/{DIV}/vat/VATCodes")
        assert time.monotonic() - started >= 0.3
        exact.http.delete(f"{exact.url}/admin/faults")
        assert exact.http.get(f"{exact.url}/admin/stats").json()["faults_served"] == 2


def test_data_and_consent_survive_a_restart(tmp_path):
    with running_exact(tmp_path, min_token_age=0) as exact:
        pair = _refresh(exact, exact.info["refresh_token"]).json()
        with _client(exact) as client:
            made = client.post(
                f"/api/v1/{DIV}/crm/Accounts", json={"Name": "Blijvertje", "Code": "9999"}
            ).json()["d"]
    with running_exact(tmp_path, min_token_age=0) as again:
        assert _refresh(again, pair["refresh_token"]).status_code == 200  # the chain was persisted
        with _client(again) as client:
            found = client.get(f"/api/v1/{DIV}/crm/Accounts(guid'{made['ID']}')")
            assert found.status_code == 200 and found.json()["d"]["Name"] == "Blijvertje"


def test_sales_item_prices_set_the_standard_price_and_feed_sync(exact):
    with _client(exact) as client:
        item = client.get(
            f"/api/v1/{DIV}/logistics/Items",
            params={"$filter": "startswith(Code,'DESK') eq true", "$top": "1"},
        ).json()["d"]["results"][0]
        sync = f"/api/v1/{DIV}/sync/Logistics/SalesItemPrices"
        cursor = max(
            int(r["Timestamp"])
            for r in client.get(
                sync, params={"$select": "ID,Timestamp", "$filter": "Timestamp gt 1L"}
            ).json()["d"]["results"]
        )
        missing = client.post(f"/api/v1/{DIV}/logistics/SalesItemPrices", json={"Item": item["ID"]})
        assert missing.status_code == 400 and _error_value(missing) == "Mandatory: Price"
        dangling = client.post(
            f"/api/v1/{DIV}/logistics/SalesItemPrices",
            json={"Item": "00000000-0000-0000-0000-0000000000aa", "Price": 1},
        )
        assert dangling.status_code == 400 and "does not exist" in _error_value(dangling)
        created = client.post(
            f"/api/v1/{DIV}/logistics/SalesItemPrices", json={"Item": item["ID"], "Price": 123.45}
        )
        assert created.status_code == 201 and created.json()["d"]["ItemCode"] == item["Code"]
        assert created.json()["d"]["Currency"] == "EUR"
        again = client.get(
            f"/api/v1/{DIV}/logistics/Items(guid'{item['ID']}')", params={"$select": "StandardSalesPrice"}
        )
        assert again.json()["d"]["StandardSalesPrice"] == 123.45
        fed = client.get(sync, params={"$select": "Item,Price", "$filter": f"Timestamp gt {cursor}L"}).json()[
            "d"
        ]["results"]
        assert [(r["Item"], r["Price"]) for r in fed] == [(item["ID"], 123.45)]


def test_post_without_prefer_representation_leaves_computed_fields_null(exact):
    with _client(exact) as client:
        url = f"/api/v1/{DIV}/crm/Accounts"
        bare = client.post(url, json={"Name": "Zonder Prefer"}, headers={"Prefer": "return=minimal"}).json()[
            "d"
        ]
        assert (
            bare["ID"]
            and bare["Name"] == "Zonder Prefer"
            and bare["Code"] is None
            and bare["Created"] is None
        )
        full = client.post(
            url, json={"Name": "Met Prefer"}, headers={"Prefer": "return=representation"}
        ).json()["d"]
        assert full["Code"].strip().isdigit() and full["Created"].startswith("/Date(")
        stored = client.get(f"{url}(guid'{bare['ID']}')").json()["d"]
        assert stored["Code"].strip().isdigit()  # the record itself is complete


def test_options_from_the_environment_and_clear_errors_for_bad_ones(tmp_path, monkeypatch):
    from erpsync.errors import ConfigError

    monkeypatch.setenv("ERPSYNC_SANDBOX_EXACT", '{"minutely_limit": 1, "error_budget": 0}')
    with running_exact(tmp_path / "a") as exact, _client(exact) as client:
        assert client.get(f"/api/v1/{DIV}/vat/VATCodes").headers["X-RateLimit-Minutely-Limit"] == "1"
        assert exact.simulator.options.error_budget == 0
    monkeypatch.setenv("ERPSYNC_SANDBOX_EXACT", '{"minutly_limit": 1}')
    with (
        pytest.raises(ConfigError, match=r"unknown option.s. minutly_limit.*minutely_limit"),
        running_exact(tmp_path / "b"),
    ):
        pass
    monkeypatch.setenv("ERPSYNC_SANDBOX_EXACT", "{minutely_limit: 1}")
    with pytest.raises(ConfigError, match="not valid JSON"), running_exact(tmp_path / "c"):
        pass


def test_addresses_and_a_sales_orders_delivery_address(exact):
    """crm/Addresses (Type 1 visit, 2 postal, 3 invoice, 4 delivery) belong to an account; the first of a
    type is the main one. A sales order's DeliveryAddress must be a delivery address of its DeliverTo."""
    with _client(exact) as client:
        accounts = client.get(
            f"/api/v1/{DIV}/crm/Accounts", params={"$filter": "Status eq 'C'", "$top": "2"}
        ).json()["d"]["results"]
        mine, other = accounts[0]["ID"], accounts[1]["ID"]
        item = client.get(
            f"/api/v1/{DIV}/logistics/Items", params={"$filter": "IsSalesItem eq true", "$top": "1"}
        ).json()["d"]["results"][0]
        no_type = client.post(f"/api/v1/{DIV}/crm/Addresses", json={"Account": mine, "City": "Utrecht"})
        assert no_type.status_code == 400 and _error_value(no_type) == "Mandatory: Type"
        bad_type = client.post(f"/api/v1/{DIV}/crm/Addresses", json={"Account": mine, "Type": 7})
        assert bad_type.status_code == 400 and "not a valid address type" in _error_value(bad_type)
        no_account = client.post(f"/api/v1/{DIV}/crm/Addresses", json={"Type": 4, "City": "Utrecht"})
        assert no_account.status_code == 400 and _error_value(no_account) == "Mandatory: Account"
        no_house_number = client.post(
            f"/api/v1/{DIV}/crm/Addresses", json={"Account": mine, "Type": 4, "HouseNumber": "12"}
        )
        assert no_house_number.status_code == 400
        assert "'HouseNumber' does not exist" in _error_value(no_house_number)

        def address(account, kind, line):
            resp = client.post(
                f"/api/v1/{DIV}/crm/Addresses",
                json={
                    "Account": account,
                    "Type": kind,
                    "AddressLine1": line,
                    "City": "Utrecht",
                    "Country": "NL",
                },
            )
            assert resp.status_code == 201, resp.text
            return resp.json()["d"]

        first = address(mine, 4, "Oudegracht 12 BIS")
        second = address(mine, 4, "Oudegracht 14")
        invoice = address(mine, 3, "Keizersgracht 123 A")
        foreign = address(other, 4, "Domplein 1")
        assert first["Main"] is True and second["Main"] is False and invoice["Main"] is True
        assert first["AccountName"] == accounts[0]["Name"]
        listed = client.get(
            f"/api/v1/{DIV}/crm/Addresses", params={"$filter": f"Account eq guid'{mine}' and Type eq 4"}
        ).json()["d"]["results"]
        assert {a["ID"] for a in listed} == {first["ID"], second["ID"]}

        def order(**header):
            return client.post(
                f"/api/v1/{DIV}/salesorder/SalesOrders",
                json={"OrderedBy": mine, "SalesOrderLines": [{"Item": item["ID"], "Quantity": 1}], **header},
            )

        for bad, message in (
            (invoice["ID"], "is not a delivery address"),
            (foreign["ID"], "does not belong to the delivery account"),
            ("00000000-0000-0000-0000-000000000001", "does not exist"),
        ):
            refused = order(DeliveryAddress=bad)
            assert refused.status_code == 400 and message in _error_value(refused), refused.text
        taken = order(DeliveryAddress=second["ID"])
        assert taken.status_code == 201, taken.text
        assert taken.json()["d"]["DeliveryAddress"] == second["ID"] and taken.json()["d"]["DeliverTo"] == mine
        elsewhere = order(DeliverTo=other, DeliveryAddress=foreign["ID"])
        assert elsewhere.status_code == 201, elsewhere.text
        moved = client.put(
            f"/api/v1/{DIV}/salesorder/SalesOrders(guid'{taken.json()['d']['OrderID']}')",
            json={"DeliveryAddress": foreign["ID"]},
        )
        assert moved.status_code == 400 and "does not belong" in _error_value(moved)


def test_sales_invoices_need_a_sales_journal_and_take_lines_by_deep_insert(exact):
    """salesinvoice/SalesInvoices: key InvoiceID, Journal (a sales journal's code) mandatory, Type 8020
    by default, Status 20 (open) and read-only, lines in SalesInvoiceLines by InvoiceID; no payment
    method field (it belongs to the payment condition)."""
    with _client(exact) as client:
        account = client.get(
            f"/api/v1/{DIV}/crm/Accounts", params={"$filter": f"Code eq '{'1002':>18}'"}
        ).json()["d"]["results"][0]
        item = client.get(
            f"/api/v1/{DIV}/logistics/Items", params={"$filter": "IsSalesItem eq true", "$top": "1"}
        ).json()["d"]["results"][0]
        journals = client.get(f"/api/v1/{DIV}/financial/Journals").json()["d"]["results"]
        assert {j["Code"]: j["Type"] for j in journals}["70"] == 20
        lines = [{"Item": item["ID"], "Quantity": 2, "NetPrice": 10, "VATCode": "2"}]

        def invoice(**header):
            return client.post(
                f"/api/v1/{DIV}/salesinvoice/SalesInvoices",
                json={"OrderedBy": account["ID"], "SalesInvoiceLines": lines, **header},
            )

        for header, message in (
            ({}, "Mandatory: Journal"),
            ({"Journal": "99"}, "journal '99' does not exist"),
            ({"Journal": "60"}, "is not a sales journal"),
            ({"Journal": "70", "Type": 8030}, "not a sales invoice type"),
            ({"Journal": "70", "Status": 50}, "read-only"),
            ({"Journal": "70", "PaymentMethod": "V"}, "'PaymentMethod' does not exist"),
            ({"Journal": "70", "SalesInvoiceLines": []}, "needs at least one line"),
        ):
            refused = invoice(**header)
            assert refused.status_code == 400 and message in _error_value(refused), (header, refused.text)
        made = invoice(Journal="70", YourRef="SF-INV-1", PaymentCondition="30I")
        assert made.status_code == 201, made.text
        head = made.json()["d"]
        assert "ID" not in head and re.fullmatch(r"[0-9a-f-]{36}", head["InvoiceID"])
        assert (head["Type"], head["Status"], head["StatusDescription"]) == (8020, 20, "Open")
        assert isinstance(head["InvoiceNumber"], int) and head["DeliverTo"] == account["ID"]
        assert head["PaymentConditionDescription"] == "30 dagen automatische incasso"
        assert head["AmountFCExclVat"] == 20.0 and head["AmountFC"] == 24.2
        got = client.get(
            f"/api/v1/{DIV}/salesinvoice/SalesInvoiceLines",
            params={"$filter": f"InvoiceID eq guid'{head['InvoiceID']}'"},
        ).json()["d"]["results"]
        assert [(ln["LineNumber"], ln["Quantity"], ln["VATAmountFC"]) for ln in got] == [(1, 2.0, 4.2)]
        expanded = client.get(
            f"/api/v1/{DIV}/salesinvoice/SalesInvoices(guid'{head['InvoiceID']}')",
            params={"$expand": "SalesInvoiceLines"},
        ).json()["d"]
        assert [ln["ID"] for ln in expanded["SalesInvoiceLines"]["results"]] == [got[0]["ID"]]
        moved = client.put(
            f"/api/v1/{DIV}/salesinvoice/SalesInvoices(guid'{head['InvoiceID']}')", json={"Journal": "71"}
        )
        assert moved.status_code == 400 and "cannot be changed" in _error_value(moved)
