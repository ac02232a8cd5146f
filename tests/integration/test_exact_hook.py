"""Contract tests: the real ExactOnlineHook against the Exact simulator over real sockets.

Connections come from `AIRFLOW_CONN_EXACT_ONLINE_DEFAULT` (JSON form), as in production; each test
gets its own consent (refresh token) and its own SQLite token store.
"""

from __future__ import annotations

import json
import time

import pytest

from erpsync.errors import (
    AuthError,
    ConfigError,
    FatalSourceError,
    RateLimitedError,
    RecordError,
    RetriableSourceError,
)
from erpsync.hooks.exact_online import ExactOnlineHook, pad_account_code
from erpsync.sandbox.exact.testing import running_exact

DIV, TEST_DIV = 1001234, 1001235


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    with running_exact(
        tmp_path_factory.mktemp("exact"), minutely_limit=100_000, daily_limit=1_000_000, error_budget=0
    ) as running:
        yield running


def _make_hook(exact, monkeypatch, tmp_path, *, conn: dict | None = None, **extra) -> ExactOnlineHook:
    extra.setdefault("refresh_token", exact.new_consent())
    extra.setdefault("token_store_url", f"sqlite:///{tmp_path / 'tokens.db'}")
    data = json.loads(exact.connection_json(**extra))
    data.update(conn or {})
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_ONLINE_DEFAULT", json.dumps(data))
    return ExactOnlineHook()


@pytest.fixture
def make_hook(exact, monkeypatch, tmp_path):
    hooks = []

    def make(**kwargs) -> ExactOnlineHook:
        hooks.append(_make_hook(exact, monkeypatch, tmp_path, **kwargs))
        return hooks[-1]

    yield make
    for hook in hooks:
        hook.close()


def _fault(exact, **fault) -> None:
    exact.http.post(f"{exact.url}/admin/faults", json=fault).raise_for_status()


@pytest.fixture(autouse=True)
def _clear_faults(exact):
    yield
    exact.http.delete(f"{exact.url}/admin/faults")


# ---- connection, divisions ------------------------------------------------------------------------------


def test_test_connection_reports_user_and_division(make_hook):
    ok, message = make_hook().test_connection()
    assert ok, message
    assert "Demo Integrator" in message and str(DIV) in message


def test_test_connection_with_a_wrong_secret_says_so(make_hook):
    ok, message = make_hook(conn={"password": "wrong"}).test_connection()
    assert not ok and "client id or secret is wrong" in message


def test_division_by_exact_name(make_hook):
    hook = make_hook(division=None, division_name="ERPSync Demo B.V. (test)")
    assert hook.division == TEST_DIV
    assert hook.url("vat/VATCodes").endswith(f"/api/v1/{TEST_DIV}/vat/VATCodes")


def test_division_name_must_match_exactly_and_the_error_lists_the_divisions(make_hook):
    hook = make_hook(division=None, division_name="erpsync demo b.v.")
    with pytest.raises(ConfigError) as err:
        _ = hook.division
    text = str(err.value)
    assert "did you mean 'ERPSync Demo B.V.'" in text
    assert "1001234: 'ERPSync Demo B.V.'" in text and "2002001: 'Voorbeeld Groothandel BV'" in text


def test_unknown_division_code_lists_the_available_ones(make_hook):
    with pytest.raises(ConfigError, match=r"division 999 is not available.*1001234: 'ERPSync Demo B.V.'"):
        _ = make_hook(division=999).division


def test_division_outside_the_consent_is_refused_clearly(exact, make_hook):
    hook = make_hook(refresh_token=exact.new_consent([TEST_DIV]), division=DIV)
    with pytest.raises(ConfigError) as err:
        _ = hook.division
    assert "available: 1001235: 'ERPSync Demo B.V. (test)'" in str(err.value)


def test_missing_division_and_credentials_are_config_errors(make_hook, exact, monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="no division"):
        _ = make_hook(division=None).division
    with pytest.raises(ConfigError, match="client id"):
        _ = make_hook(conn={"login": None}).settings


# ---- reading ---------------------------------------------------------------------------------------------------


def _sorted_codes(hook) -> list[str]:
    return sorted(r["Code"] for r in hook.iter_records("logistics/Items", select="Code"))


def test_paging_edges_zero_one_exactly_one_page_and_many(make_hook):
    hook = make_hook()
    codes = _sorted_codes(hook)

    def pages(filter_: str) -> list[int]:
        return [len(p) for p in hook.iter_pages("logistics/Items", select="ID,Code", filter=filter_)]

    assert pages("Code eq 'does-not-exist'") == [0]
    assert pages(f"Code eq '{codes[0]}'") == [1]
    assert pages(f"Code le '{codes[59]}'") == [60]  # exactly one full page: no __next
    assert pages(f"Code le '{codes[60]}'") == [60, 1]
    calls = hook.calls
    assert [len(p) for p in hook.iter_pages("logistics/Items", select="ID")] == [60, 60, 60, 60, 10]
    assert hook.calls - calls == 5


def test_a_repeated_next_link_is_an_error_not_a_loop(exact, make_hook):
    hook = make_hook()
    url = hook.url("crm/Contacts")
    _fault(
        exact,
        status=200,
        count=10,
        match="crm/Contacts",
        body=json.dumps({"d": {"results": [{"ID": "x"}], "__next": url}}),
    )
    with pytest.raises(FatalSourceError, match="same __next link twice"):
        list(hook.iter_pages("crm/Contacts"))


def test_a_next_link_to_another_host_is_refused(exact, make_hook):
    hook = make_hook()
    _ = hook.division
    _fault(
        exact,
        status=200,
        count=1,
        match="crm/Contacts",
        body=json.dumps({"d": {"results": [], "__next": "https://evil.example/steal"}}),
    )
    with pytest.raises(FatalSourceError, match="another host"):
        list(hook.iter_pages("crm/Contacts"))


def test_malformed_json_from_the_server_names_the_url(exact, make_hook):
    hook = make_hook()
    _ = hook.division
    _fault(exact, status=200, count=1, match="vat/VATCodes", body="<html>maintenance</html>")
    with pytest.raises(FatalSourceError) as err:
        hook.get_records("vat/VATCodes")
    assert (
        "not JSON" in str(err.value) and "vat/VATCodes" in str(err.value) and "maintenance" in str(err.value)
    )
    _fault(exact, status=200, count=1, match="vat/VATCodes", body=json.dumps({"value": []}))
    with pytest.raises(FatalSourceError, match="envelope"):
        hook.get_records("vat/VATCodes")
    assert len(hook.get_records("vat/VATCodes")) == 7  # the next good answer goes through


def test_sync_cursor_yields_each_change_once(make_hook):
    hook = make_hook()
    full = list(hook.iter_sync("logistics/Items", ["ID", "Code"]))
    assert len(full) == 1 and len(full[0][0]) == 250
    cursor = full[-1][1]
    assert cursor == max(int(r["Timestamp"]) for r in full[0][0])
    targets = [full[0][0][10]["ID"], full[0][0][20]["ID"]]
    for key in targets:
        hook.update("logistics/Items", key, {"Notes": "touched"})
    changed = list(hook.iter_sync("logistics/Items", "ID,Notes", timestamp_from=cursor))
    assert sorted(r["ID"] for r in changed[0][0]) == sorted(targets) and changed[-1][1] > cursor
    nothing = list(hook.iter_sync("logistics/Items", "ID", timestamp_from=changed[-1][1]))
    assert nothing == [([], changed[-1][1])]


def test_bulk_and_sync_need_select(make_hook):
    hook = make_hook()
    with pytest.raises(ConfigError, match=r"\$select"):
        list(hook.iter_bulk("logistics/Items", ""))
    with pytest.raises(ConfigError, match=r"\$select"):
        list(hook.iter_sync("logistics/Items", []))
    pages = list(hook.iter_bulk("logistics/Items", "ID,Code,Description"))
    assert [len(p) for p in pages] == [250]


def test_find_one_by_padded_account_code_and_get_by_key(make_hook):
    hook = make_hook()
    account = hook.find_one("crm/Accounts", f"Code eq '{pad_account_code(1003)}'", select="ID,Name,Code")
    assert account["Name"] == "Müller & Söhne GmbH"
    assert hook.get("crm/Accounts", account["ID"], select="Name")["Name"] == "Müller & Söhne GmbH"
    assert hook.find_one("crm/Accounts", "Code eq '1003'") is None  # unpadded codes never match


# ---- writing ------------------------------------------------------------------------------------------------------


def test_create_many_returns_per_record_errors_and_goes_on(make_hook):
    hook = make_hook()
    records = [
        {"Code": "HOOK-1", "Description": "Koffiemolen ☕ «deluxe»"},
        {"Code": "HOOK-2"},
        {"Code": "HOOK-3", "Description": "Ø" * 60},
        {"Code": "HOOK-4", "Description": "x" * 500},
        {"Code": "HOOK-1", "Description": "duplicate"},
    ]
    results = hook.create_many("logistics/Items", records)
    assert [r.ok for r in results] == [True, False, True, False, False]
    assert results[0].record["Description"] == "Koffiemolen ☕ «deluxe»"
    assert results[2].record["Description"] == "Ø" * 60
    assert "Mandatory: Description" in str(results[1].error) and "record 1" in str(results[1].error)
    assert results[1].error.details["index"] == 1 and results[1].error.details["status"] == 400
    assert "maximum length is 60" in str(results[3].error)
    assert "already exists" in str(results[4].error)
    assert results[0].key and hook.get("logistics/Items", results[0].key)["Code"] == "HOOK-1"


def test_sales_order_deep_insert_returns_order_id(make_hook):
    hook = make_hook()
    account = hook.find_one("crm/Accounts", f"Code eq '{pad_account_code(1001)}'", select="ID")
    item = hook.find_one("logistics/Items", "IsStockItem eq true", select="ID")
    created = hook.create(
        "salesorder/SalesOrders",
        {
            "OrderedBy": account["ID"],
            "YourRef": "SF-HOOK-1",
            "SalesOrderLines": [{"Item": item["ID"], "Quantity": 2}],
        },
    )
    assert created["OrderID"] and created["OrderNumber"] >= 1
    results = hook.create_many(
        "salesorder/SalesOrders", [{"OrderedBy": account["ID"], "SalesOrderLines": []}]
    )
    assert results[0].key is None and "at least one line" in str(results[0].error)
    again = hook.find_one("salesorder/SalesOrders", "YourRef eq 'SF-HOOK-1'", select="OrderID")
    assert again["OrderID"] == created["OrderID"]


def test_update_of_a_read_only_field_is_a_record_error(make_hook):
    hook = make_hook()
    item = hook.find_one("logistics/Items", "IsStockItem eq true", select="ID")
    with pytest.raises(RecordError, match="read-only"):
        hook.update("logistics/Items", item["ID"], {"Stock": 1000})


# ---- auth ---------------------------------------------------------------------------------------------------------------


def test_expired_access_token_is_refreshed_transparently(tmp_path, monkeypatch):
    with running_exact(tmp_path, access_token_ttl=2, min_token_age=1) as exact:
        hook = _make_hook(exact, monkeypatch, tmp_path)
        assert len(hook.get_records("vat/VATCodes")) == 7
        time.sleep(2.1)
        assert len(hook.get_records("vat/VATCodes")) == 7
        assert exact.simulator.oauth.stats == {
            "authorization_code": 0,
            "refresh_ok": 2,
            "refresh_failed": 0,
            "refused_too_early": 0,
        }
        hook.close()


def test_revoked_consent_is_an_auth_error(tmp_path, monkeypatch):
    with running_exact(tmp_path) as exact:
        hook = _make_hook(exact, monkeypatch, tmp_path)
        assert hook.get_records("vat/VATCodes")
        exact.http.post(f"{exact.url}/admin/revoke").raise_for_status()
        with pytest.raises(AuthError, match="consent again"):
            hook.get_records("vat/VATCodes")
        ok, message = ExactOnlineHook().test_connection()
        assert not ok and "consent" in message
        hook.close()


def test_a_new_consent_in_the_connection_replaces_the_stored_chain(tmp_path, monkeypatch):
    with running_exact(tmp_path) as exact:
        store = f"sqlite:///{tmp_path / 'tokens.db'}"
        assert _make_hook(exact, monkeypatch, tmp_path, token_store_url=store).get_records("vat/VATCodes")
        exact.http.post(f"{exact.url}/admin/revoke").raise_for_status()
        fresh = exact.new_consent()
        assert _make_hook(
            exact, monkeypatch, tmp_path, token_store_url=store, refresh_token=fresh
        ).get_records("vat/VATCodes")


# ---- limits, retries --------------------------------------------------------------------------------------------------


def test_minutely_limit_makes_the_hook_wait_not_fail(tmp_path, monkeypatch):
    with running_exact(tmp_path, minutely_limit=3, minute_seconds=1) as exact:
        hook = _make_hook(exact, monkeypatch, tmp_path)
        rows = list(hook.iter_records("logistics/Items", select="ID"))
        assert len(rows) == 250
        assert exact.simulator.limits.refused == {"minutely": 0, "daily": 0}  # it waited before hitting 429
        assert hook.limits[DIV].waited_seconds > 0
        hook.close()


def test_a_429_caused_by_someone_else_is_waited_out(tmp_path, monkeypatch):
    with running_exact(tmp_path, minutely_limit=3, minute_seconds=2) as exact:
        hook = _make_hook(exact, monkeypatch, tmp_path)
        time.sleep(2 - time.time() % 2 + 0.02)  # start a fresh window: all calls below share it
        _ = hook.division  # one call, headers seen
        pair = exact.http.post(
            f"{exact.url}/api/oauth2/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": exact.new_consent(),
                "client_id": exact.info["client_id"],
                "client_secret": exact.info["client_secret"],
            },
        ).json()
        for _ in range(3):  # another worker spends the rest of the minute
            exact.http.get(
                f"{exact.url}/api/v1/{DIV}/vat/VATCodes",
                headers={"Authorization": f"Bearer {pair['access_token']}"},
            )
        hook.limits[DIV].minutely_remaining = 2  # what this hook last saw; now stale
        assert len(hook.get_records("vat/VATCodes")) == 7
        assert exact.simulator.limits.refused["minutely"] >= 2  # the other worker's last call and ours
        hook.close()


def test_exhausted_daily_limit_fails_clearly_and_is_not_retried(tmp_path, monkeypatch):
    with running_exact(tmp_path, daily_limit=3) as exact:
        hook = _make_hook(exact, monkeypatch, tmp_path)
        with pytest.raises(RateLimitedError) as err:
            list(hook.iter_records("logistics/Items", select="ID"))  # divisions + 5 pages > 3
        assert "daily API limit" in str(err.value) and err.value.retry_after > 0
        assert err.value.details["limit"] == "daily"
        refused = exact.simulator.limits.refused["daily"]
        requests = exact.simulator.stats.requests
        with pytest.raises(RateLimitedError, match="daily"):
            hook.get_records("vat/VATCodes")
        assert (
            exact.simulator.limits.refused["daily"] == refused and exact.simulator.stats.requests == requests
        )
        hook.close()


def test_5xx_on_reads_is_retried_and_on_posts_is_not(exact, make_hook):
    hook = make_hook(retry_backoff=0.05)
    _ = hook.division
    _fault(exact, status=503, count=2, match="vat/VATCodes")
    assert len(hook.get_records("vat/VATCodes")) == 7
    _fault(exact, status=503, count=1, match="crm/Accounts")
    with pytest.raises(RetriableSourceError, match="503"):
        hook.create("crm/Accounts", {"Name": "Maybe Created"})
    assert hook.find_one("crm/Accounts", "Name eq 'Maybe Created'") is None
    _fault(exact, status=500, count=10, match="cashflow/PaymentConditions")
    with pytest.raises(RetriableSourceError, match="500"):
        hook.get_records("cashflow/PaymentConditions")


def test_refresh_refused_as_too_early_keeps_the_valid_token(tmp_path, monkeypatch):
    """Clock skew: the hook thinks the token is nearly expired, Exact says too early; the old pair goes on.

    The skew is written into the token store (our clock 580 s ahead of Exact's) instead of waited for, so
    the test does not depend on how fast a busy machine gets from one call to the next.
    """
    with running_exact(tmp_path) as exact:  # Exact: 600 s tokens, no refresh within 570 s of issuance
        consent = exact.new_consent()
        first = _make_hook(exact, monkeypatch, tmp_path, refresh_token=consent, refresh_margin=30)
        assert first.get_records("vat/VATCodes")
        store, key = first.token_store, first.settings.store_key
        token = store.read(key)["access_token"]
        now, t = time.time(), store.table
        with store.engine.begin() as conn:  # 20 s left by our clock: inside the 30 s margin, so refresh
            conn.execute(
                t.update().where(t.c.store_key == key).values(issued_at=now - 580, access_expires_at=now + 20)
            )
        hook = _make_hook(exact, monkeypatch, tmp_path, refresh_token=consent, refresh_margin=30)
        assert len(hook.get_records("vat/VATCodes", select="Code")) == 7
        stats = exact.simulator.oauth.stats
        assert stats["refused_too_early"] == 1 and stats["refresh_ok"] == 1, stats
        assert store.read(key)["access_token"] == token  # the old pair was kept, not dropped
        hook.close()
        first.close()


def test_malformed_token_endpoint_answer_is_clear_and_the_token_survives(exact, make_hook):
    hook = make_hook()
    _fault(exact, status=200, count=1, match="/api/oauth2/token", body="<html>gateway</html>")
    with pytest.raises(FatalSourceError, match=r"unreadable answer.*gateway"):
        hook.get_records("vat/VATCodes")
    assert len(hook.get_records("vat/VATCodes")) == 7  # the refresh token was never spent


def test_sync_rows_without_timestamp_are_refused_clearly(exact, make_hook):
    hook = make_hook()
    _ = hook.division
    _fault(
        exact,
        status=200,
        count=1,
        match="sync/CRM/Accounts",
        body=json.dumps({"d": {"results": [{"ID": "a"}]}}),
    )
    with pytest.raises(FatalSourceError, match="without a numeric Timestamp"):
        list(hook.iter_sync("crm/Accounts", "ID"))


def test_deletions_arrive_through_the_deleted_sync_feed(make_hook):
    hook = make_hook()
    start = max((c for _, c in hook.iter_sync("deleted", "EntityKey")), default=1)
    created = hook.create("crm/Accounts", {"Name": "Weg ermee"})
    hook.delete("crm/Accounts", created["ID"])
    rows = [
        r for page, _ in hook.iter_sync("deleted", "EntityKey,EntityType", timestamp_from=start) for r in page
    ]
    assert [(r["EntityKey"], r["EntityType"]) for r in rows] == [(created["ID"], 2)]
    with pytest.raises(RecordError, match="not found"):
        hook.delete("crm/Accounts", created["ID"])


@pytest.mark.parametrize("host", ["http://127.0.0.1:8502", "HTTP://localhost", "ftp://start.exactonline.nl"])
def test_a_base_url_other_than_https_is_refused_before_any_call(exact, tmp_path, monkeypatch, host):
    before = exact.simulator.stats.requests
    hook = _make_hook(exact, monkeypatch, tmp_path, conn={"host": host})
    with pytest.raises(ConfigError, match="must use https"):
        hook.get_records("vat/VATCodes")
    assert exact.simulator.stats.requests == before  # nothing was sent, not even the token refresh


def test_a_host_without_scheme_is_https_and_an_http_scheme_extra_is_refused(exact, tmp_path, monkeypatch):
    host = exact.url.removeprefix("https://")
    assert len(_make_hook(exact, monkeypatch, tmp_path, conn={"host": host}).get_records("vat/VATCodes")) == 7
    refused = _make_hook(exact, monkeypatch, tmp_path, conn={"host": host}, scheme="http")
    with pytest.raises(ConfigError, match="must use https"):
        refused.get_records("vat/VATCodes")


def test_https_is_verified_against_the_ca_bundle_from_the_connection(tmp_path, monkeypatch):
    with running_exact(tmp_path) as exact:
        assert exact.url.startswith("https://")
        hook = _make_hook(exact, monkeypatch, tmp_path, ca_bundle=exact.info["ca_bundle"])
        assert len(hook.get_records("vat/VATCodes")) == 7
        hook.close()
        untrusted = _make_hook(exact, monkeypatch, tmp_path, refresh_token=exact.new_consent(), ca_bundle="")
        with pytest.raises(ConfigError, match="ca_bundle"):
            untrusted.get_records("vat/VATCodes")


def test_keep_alive_refreshes_an_old_chain_and_reports_days_left(tmp_path, monkeypatch):
    import sqlalchemy as sa

    with running_exact(tmp_path, min_token_age=0) as exact:
        hook = _make_hook(exact, monkeypatch, tmp_path)
        assert hook.token_status()["stored"] is False
        assert hook.get_records("vat/VATCodes")
        status = hook.keep_alive()  # young: nothing to do
        assert status["refresh_count"] == 1 and 29.9 < status["days_left"] <= 30
        store = hook.token_store
        with store.engine.begin() as conn:  # pretend the last refresh was 25 days ago
            conn.execute(
                sa.update(store.table)
                .where(store.table.c.store_key == hook.settings.store_key)
                .values(issued_at=time.time() - 25 * 86_400, refresh_expires_at=time.time() + 5 * 86_400)
            )
        assert hook.token_status()["days_left"] < 5.1
        status = hook.keep_alive(max_age_days=20)
        assert status["refresh_count"] == 2 and status["days_left"] > 29.9
        assert exact.simulator.oauth.stats["refresh_ok"] == 2
        hook.close()


def test_the_sandbox_state_file_is_enough_to_connect(tmp_path, monkeypatch):
    """What `sandbox up` writes (URL, client, seeded refresh token, divisions) makes a working connection."""
    from erpsync.sandbox.exact import connection_json
    from erpsync.sandbox.runner import SandboxCA, write_state_file

    with running_exact(tmp_path) as exact:
        state = write_state_file(tmp_path / "state.json", [exact.running], SandboxCA(tmp_path / "ca"))
        facts = json.loads((tmp_path / "state.json").read_text())["systems"]["exact"]
        assert facts == state["systems"]["exact"] and facts["divisions"]["1001234"] == "ERPSync Demo B.V."
        conn = connection_json(
            facts, division_name="ERPSync Demo B.V.", token_store_url=f"sqlite:///{tmp_path / 't.db'}"
        )
        monkeypatch.setenv("AIRFLOW_CONN_EXACT_ONLINE_DEFAULT", conn)
        ok, message = ExactOnlineHook().test_connection()
        assert ok and "1001234" in message, message


def test_bulk_reads_follow_next_links_at_1000_per_call(tmp_path, monkeypatch):
    with running_exact(tmp_path, item_count=2001) as exact:
        hook = _make_hook(exact, monkeypatch, tmp_path)
        _ = hook.division
        calls = hook.calls
        pages = [len(p) for p in hook.iter_bulk("logistics/Items", ["ID", "Code"])]
        assert pages == [1000, 1000, 1] and hook.calls - calls == 3
        sync_pages = [(len(rows), cursor) for rows, cursor in hook.iter_sync("logistics/Items", "ID")]
        assert [n for n, _ in sync_pages] == [1000, 1000, 1]
        assert [c for _, c in sync_pages] == sorted(c for _, c in sync_pages)  # the cursor only moves forward
        hook.close()
