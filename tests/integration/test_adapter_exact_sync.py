"""ExactOnlineAdapter.read_since against the simulator over HTTPS: Exact's sync API with the `Timestamp`
cursor (1,000 rows a call, `$filter=Timestamp gt N`), deletions from `sync/Deleted`, the cursor token."""

from __future__ import annotations

import uuid

import pytest

from erpsync.adapters.exact_online import parse_sync_token, sync_token
from erpsync.adapters.registry import get_adapter
from erpsync.errors import ConfigError
from erpsync.sandbox.exact.testing import running_exact

DIV = 1001234
ITEMS = 2_100  # three sync pages
COLUMNS = ["Code", "Description", "IsSalesItem", "Timestamp"]


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    with running_exact(
        tmp_path_factory.mktemp("exact-sync"),
        minutely_limit=100_000,
        daily_limit=1_000_000,
        error_budget=0,
        item_count=ITEMS,
    ) as running:
        yield running


@pytest.fixture
def adapter(exact, monkeypatch, tmp_path):
    conn = exact.connection_json(
        refresh_token=exact.new_consent(),
        token_store_url=f"sqlite:///{tmp_path / f'tok-{uuid.uuid4().hex}.db'}",
    )
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_ONLINE_DEFAULT", conn)
    made = get_adapter("exact_online", conn_id="exact_online_default")
    yield made
    made.close()


def _read(adapter, token, **kw):
    feed = adapter.read_since("logistics/Items", token, columns=COLUMNS, **kw)
    frames = list(feed)
    rows = [r for f in frames for r in f.to_dict("records")]
    return feed, rows


def test_first_read_takes_every_item_in_pages_of_1000_and_a_rerun_reads_nothing(exact, adapter):
    store_items = exact.simulator.store.divisions[DIV].tables["logistics/Items"]
    feed, rows = _read(adapter, None)
    assert sorted(r["Code"] for r in rows) == sorted(i["Code"] for i in store_items.values())
    pages = [c for c in adapter.call_log.calls if c["method"] == "read_sync"]
    assert [c["rows"] for c in pages] == [1000, 1000, ITEMS - 2000]
    top = max(int(i["Timestamp"]) for i in store_items.values())
    rows_ts, _ = parse_sync_token(feed.cursor)
    assert rows_ts == top and feed.deleted == []
    again, rows = _read(adapter, feed.cursor)
    assert rows == [] and again.cursor == feed.cursor


def test_a_change_and_a_deletion_arrive_once_each(exact, adapter):
    first, _ = _read(adapter, None)
    hook = adapter.hook
    items = sorted(
        exact.simulator.store.divisions[DIV].tables["logistics/Items"].values(), key=lambda i: i["Code"]
    )
    changed, gone = items[0], items[1]
    hook.update("logistics/Items", changed["ID"], {"Description": "Changed for sync"})
    hook.delete("logistics/Items", gone["ID"])
    # A deleted account is another entity type: not reported by an items read.
    account = hook.create("crm/Accounts", {"Name": "Also deleted"})
    hook.delete("crm/Accounts", account["ID"])

    feed, rows = _read(adapter, first.cursor)
    assert [(r["Code"], r["Description"]) for r in rows] == [(changed["Code"], "Changed for sync")]
    assert feed.deleted == [gone["ID"]]
    assert feed.cursor > first.cursor  # tokens order as text, as the state store compares them
    again, rows = _read(adapter, feed.cursor)
    assert rows == [] and again.deleted == [] and again.cursor == feed.cursor


def test_deletions_before_the_first_read_are_not_reported_and_restart_rereads_rows_only(exact, adapter):
    hook = adapter.hook
    doomed = hook.create("logistics/Items", {"Code": f"DEL-{uuid.uuid4().hex[:6]}", "Description": "x"})
    hook.delete("logistics/Items", doomed["ID"])
    first, rows = _read(adapter, None)
    assert first.deleted == [] and first.deleted_before_first_run >= 1
    assert doomed["ID"] not in {r.get("ID") for r in rows}

    other = hook.create("logistics/Items", {"Code": f"DEL-{uuid.uuid4().hex[:6]}", "Description": "y"})
    hook.delete("logistics/Items", other["ID"])
    full, rows = _read(adapter, first.cursor, restart=True)
    assert len(rows) == len(exact.simulator.store.divisions[DIV].tables["logistics/Items"])
    assert full.deleted == [other["ID"]]  # a full refresh still reports what was deleted since


def test_stock_positions_have_a_sync_feed_and_vat_codes_do_not(exact, adapter):
    feed = adapter.read_since(
        "inventory/StockPositions", None, columns=["ItemCode", "FreeStock", "Timestamp"]
    )
    rows = [r for f in feed for r in f.to_dict("records")]
    stock_items = [
        i for i in exact.simulator.store.divisions[DIV].tables["logistics/Items"].values() if i["IsStockItem"]
    ]
    assert len(rows) == len(stock_items) > 0
    with pytest.raises(ConfigError, match="no sync endpoint for vat/VATCodes"):
        adapter.read_since("vat/VATCodes", None, columns=["Code"])


def test_cursor_tokens(adapter):
    assert parse_sync_token(sync_token(12, 3)) == (12, 3)
    assert sync_token(9, 1) < sync_token(10, 1) < sync_token(10, 2)
    assert parse_sync_token(None) is None and parse_sync_token("") is None
    # The Modified time the flow stored before it read the sync API: read from the beginning.
    assert parse_sync_token("2026-06-01T10:15:00+00:00") is None
    with pytest.raises(ConfigError, match="neither an Exact sync cursor"):
        parse_sync_token("exact-sync:12:3")


@pytest.mark.parametrize("calculation", ["available", "in_stock", "projected"])
def test_stock_is_the_chosen_calculation_by_sync_and_by_key(exact, monkeypatch, tmp_path, calculation):
    conn = exact.connection_json(
        refresh_token=exact.new_consent(), token_store_url=f"sqlite:///{tmp_path / 'tok.db'}"
    )
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_ONLINE_DEFAULT", conn)
    adapter = get_adapter("exact_online", conn_id="exact_online_default", stock_calculation=calculation)
    positions = exact.simulator.store.divisions[DIV].tables["inventory/StockPositions"]
    expected = {
        "available": lambda p: p["CurrentStock"] - p["ReservedStock"],
        "in_stock": lambda p: p["CurrentStock"],
        "projected": lambda p: p["ProjectedStock"],
    }[calculation]
    feed = adapter.read_since("inventory/StockPositions", None, columns=["ItemId", "ItemCode", "Stock"])
    rows = {r["ItemId"]: r for f in feed for r in f.to_dict("records")}
    assert rows and all(r["Stock"] == pytest.approx(expected(positions[k])) for k, r in rows.items())
    # Retrying a quarantined position by key: one read/logistics/StockPosition call per item.
    some = sorted(rows)[:2]
    again = adapter.read_by_keys("inventory/StockPositions", "ItemId", some, columns=["ItemCode", "Stock"])
    assert {r["ItemId"]: (r["ItemCode"], r["Stock"]) for r in again.to_dict("records")} == {
        k: (rows[k]["ItemCode"], pytest.approx(rows[k]["Stock"])) for k in some
    }
    adapter.close()
    with pytest.raises(ConfigError, match="stock_calculation must be one of"):
        get_adapter("exact_online", conn_id="exact_online_default", stock_calculation="guess")
