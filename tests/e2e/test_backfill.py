"""`airflow backfill create` replays history: three past hourly intervals of exact_items_to_sf_products,
executed by a real scheduler (LocalExecutor, PostgreSQL metadata DB) with its dag-processor and api-server,
against the Exact Online and Salesforce simulators over real sockets.

Exact holds two items in each of three consecutive intervals [T0, T0+1h), [T0+1h, T0+2h),
[T0+2h, T0+3h) (one on the interval's first millisecond, one on its last) and one item on each side of
the whole range. The backfill must make exactly three runs, each of which creates exactly the two
products whose `Modified` lies in its own data interval; the two items outside stay out of Salesforce.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from erpsync.localstack import AirflowApi, LocalProcess, airflow_argv, free_port, wait_for_http
from tests.conftest import PROJECT

DAG_ID = "exact_items_to_sf_products"
HOUR = timedelta(hours=1)
MS = timedelta(milliseconds=1)
#: The first interval: a past hour after the DAG's start_date, on its ":15" tick.
T0 = datetime(2026, 6, 1, 10, 15, tzinfo=UTC)
INTERVALS = [(T0 + i * HOUR, T0 + (i + 1) * HOUR) for i in range(3)]
#: code -> (Modified, index of the interval that must create it, or None: outside the backfill)
ITEMS: dict[str, tuple[datetime, int | None]] = {
    "BF-BEFORE": (T0 - MS, None),
    "BF-1A": (INTERVALS[0][0], 0),  # an interval's start is inside it ...
    "BF-1B": (INTERVALS[0][1] - MS, 0),
    "BF-2A": (INTERVALS[1][0], 1),  # ... and its end belongs to the next one
    "BF-2B": (INTERVALS[1][1] - MS, 1),
    "BF-3A": (INTERVALS[2][0], 2),
    "BF-3B": (INTERVALS[2][1] - MS, 2),
    "BF-AFTER": (INTERVALS[2][1], None),
}
GROUP_FAMILY = {"HW": "Hardware", "SW": "Software", "SRV": "Services"}


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _put_items(exact) -> dict[str, dict]:
    """Create the items through the simulator's own create rules, then stamp them as Exact would have
    when they were last edited at `Modified` (Exact's API never lets a client set Modified, nor the
    read-only price and item group: they come from Exact's own screens)."""
    from erpsync.sandbox.exact._entities import ENTITIES
    from erpsync.sandbox.exact._odata import ms_to_date

    store = exact.simulator.store
    div = store.division(int(exact.info["default_division"]))
    spec = ENTITIES["logistics/items"]
    assert not div.table(spec), "the default division must start without items"
    created = {}
    for n, (code, (modified, _)) in enumerate(ITEMS.items()):
        record = store.create(
            div,
            spec,
            {
                "Code": code,
                "Description": f"Backfill item {code}",
                "ExtraDescription": f"Changed at {modified.isoformat()}",
                "Unit": "pc",
                "SalesVatCode": "2",
                "IsSalesItem": True,
                "Barcode": f"87{1000000000 + n:010d}",
            },
        )
        record.update(
            StandardSalesPrice=round(10.5 + n, 2),
            ItemGroupCode=list(GROUP_FAMILY)[n % 3],
            Modified=ms_to_date(_ms(modified)),
        )
        created[code] = record
    return created


@pytest.fixture
def stack(tmp_path, airflow_metadata_url):
    """Exact and Salesforce simulators in this process; api-server, scheduler and dag-processor as
    processes on a fresh PostgreSQL metadata DB with LocalExecutor. On SQLite, `airflow backfill
    create` failed under load with "database is locked" (the scheduler held the file's write lock
    past the CLI's busy timeout); PostgreSQL locks rows, not the database."""
    from cryptography.fernet import Fernet

    from erpsync.flows import POOLS
    from erpsync.sandbox.exact.testing import running_exact
    from erpsync.sandbox.salesforce.testing import running_salesforce

    with (
        running_exact(tmp_path / "exact", minutely_limit=10000, error_budget=0, item_count=0) as exact,
        running_salesforce(tmp_path / "sf", seed=False) as sf,
    ):
        items = _put_items(exact)
        api_port = free_port()
        home = tmp_path / "home"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_metadata_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # Every DAG stays paused but this one (unpaused below), and the scheduler creates no run
            # from the timetable (no "latest interval" run on unpause, no asset-triggered orders run):
            # the backfill's runs are the only ones. Backfill runs are still executed.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_SALESFORCE_DEFAULT": sf.connection_json(),
            "AIRFLOW_CONN_EXACT_ONLINE_DEFAULT": exact.connection_json(),
            "ERPSYNC_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
            "ERPSYNC_STAGING_ROOT": str(tmp_path / "staging"),
            "GX_ANALYTICS_ENABLED": "false",
        }
        subprocess.run(airflow_argv("db", "migrate"), env=env, check=True, capture_output=True)
        logs = tmp_path / "logs"
        procs = [
            LocalProcess(
                "api-server", airflow_argv("api-server", "--port", str(api_port)), env, logs / "api.log"
            ),
            LocalProcess("scheduler", airflow_argv("scheduler"), env, logs / "scheduler.log"),
            LocalProcess("dag-processor", airflow_argv("dag-processor"), env, logs / "dag-processor.log"),
        ]
        try:
            for proc in procs:
                proc.start()
            wait_for_http(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", process=procs[0], timeout=90)
            api = AirflowApi(f"http://127.0.0.1:{api_port}")
            for name, pool in POOLS.items():
                api.ensure_pool(name, pool["slots"], pool["description"])
            yield api, env, procs, sf, items
        finally:
            for proc in reversed(procs):
                proc.stop()


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _soql(sf, soql: str) -> list[dict]:
    version = sf.info["api_version"]
    resp = httpx.get(
        f"{sf.url}/services/data/v{version}/query",
        params={"q": soql},
        headers={"Authorization": f"Bearer {sf.token()}"},
        verify=sf.ssl_context(),
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["done"], body
    return body["records"]


def _last_writer(state_url: str) -> dict[str, tuple[str | None, str | None]]:
    """Exact item ID -> (Salesforce Id, run id that last wrote it), from the flow's state store."""
    from sqlalchemy import select

    from erpsync.state import StateStore
    from erpsync.state.models import RecordIdentity

    t = RecordIdentity.__table__
    with StateStore(state_url).engine.connect() as conn:
        rows = conn.execute(select(t.c.source_key, t.c.target_id, t.c.last_run_id).where(t.c.flow == DAG_ID))
        return {key: (target_id, run_id) for key, target_id, run_id in rows}


def test_backfill_three_intervals_each_run_creates_its_own_items(stack):
    api, env, procs, sf, items = stack
    api.wait_for_dag(DAG_ID, timeout=120)
    api.unpause(DAG_ID)
    started = time.monotonic()

    # Logical dates T0, T0+1h, T0+2h: the interval timetable's runs whose data interval starts there.
    argv = airflow_argv(
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        INTERVALS[0][0].isoformat(),
        "--to-date",
        INTERVALS[-1][0].isoformat(),
        "--max-active-runs",
        "3",
    )
    created = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr

    scheduler = procs[1]
    try:
        runs = api.wait_for_runs(DAG_ID, 3, timeout=240)
    except TimeoutError as exc:
        runs = api.dag_runs(DAG_ID)
        states = {r["dag_run_id"]: api.task_instances(DAG_ID, r["dag_run_id"]) for r in runs}
        pytest.fail(f"{exc}\nruns: {json.dumps(states, default=str)[:4000]}\n{scheduler.log_tail(60)}")
    elapsed = time.monotonic() - started

    # Airflow: exactly the three backfill runs, each successful with every task, each its own interval.
    assert len(runs) == 3, runs
    for run, (start, end) in zip(runs, INTERVALS, strict=True):
        tis = {ti["task_id"]: ti["state"] for ti in api.task_instances(DAG_ID, run["dag_run_id"])}
        assert run["state"] == "success", (run, tis, scheduler.log_tail(60))
        # report runs ALL_DONE, so a green run alone does not prove every step succeeded.
        assert len(tis) == 9 and set(tis.values()) == {"success"}, tis
        assert run["run_type"] == "backfill" and run["triggered_by"] == "backfill", run
        assert _iso(run["logical_date"]) == start, run
        assert (_iso(run["data_interval_start"]), _iso(run["data_interval_end"])) == (start, end), run
    [backfill] = api.backfills(DAG_ID)
    # The runs live in the PostgreSQL metadata DB the processes were given (not a SQLite file).
    import psycopg

    with psycopg.connect(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg", "")) as db:
        [(in_pg,)] = db.execute("SELECT count(*) FROM dag_run WHERE dag_id = %s", (DAG_ID,)).fetchall()
    assert in_pg == 3
    assert _iso(backfill["from_date"]) == INTERVALS[0][0] and _iso(backfill["to_date"]) == INTERVALS[-1][0]

    # Salesforce: exactly the six products of the three intervals, with their standard prices.
    inside = {code: items[code] for code, (_, which) in ITEMS.items() if which is not None}
    products = {
        p["ProductCode"]: p
        for p in _soql(sf, "SELECT Id, ProductCode, Name, Family, Exact_Item_Id__c, IsActive FROM Product2")
    }
    assert set(products) == set(inside), sorted(products)
    for code, item in inside.items():
        product = products[code]
        assert product["Name"] == item["Description"] and product["IsActive"] is True, product
        assert product["Exact_Item_Id__c"] == item["ID"], product
        assert product["Family"] == GROUP_FAMILY[item["ItemGroupCode"]], product
    entries = _soql(
        sf,
        "SELECT Product2Id, UnitPrice, IsActive FROM PricebookEntry "
        f"WHERE Pricebook2Id = '{sf.info['standard_pricebook_id']}'",
    )
    price_by_product = {e["Product2Id"]: e["UnitPrice"] for e in entries if e["IsActive"]}
    assert len(entries) == 6, entries
    assert {code: price_by_product.get(products[code]["Id"]) for code in inside} == {
        code: item["StandardSalesPrice"] for code, item in inside.items()
    }

    # Each product was created by the run whose data interval holds its item's Modified stamp.
    from erpsync.state import StateStore

    run_by_interval = {i: runs[i]["dag_run_id"] for i in range(3)}
    writers = _last_writer(env["ERPSYNC_STATE_URL"])
    assert set(writers) == {item["ID"] for item in inside.values()}, writers
    for code, item in inside.items():
        modified, which = ITEMS[code]
        start, end = INTERVALS[which]
        assert start <= modified < end
        assert writers[item["ID"]] == (products[code]["Id"], run_by_interval[which]), (code, writers)

    history = {r["run_id"]: r for r in StateStore(env["ERPSYNC_STATE_URL"]).list_runs(DAG_ID)}
    assert set(history) == set(run_by_interval.values()), sorted(history)
    for which, run_id in run_by_interval.items():
        entry = history[run_id]
        assert entry["status"] == "success", entry
        assert (entry["interval_start"], entry["interval_end"]) == INTERVALS[which], entry
        counts = {k: entry[k] for k in ("created", "updated", "skipped", "failed", "quarantined")}
        assert counts == {"created": 2, "updated": 0, "skipped": 0, "failed": 0, "quarantined": 0}, entry
        assert entry["report"]["counts"]["extracted"] == 2, entry["report"]

    print(f"backfill create -> 3 runs done: {elapsed:.1f}s")
