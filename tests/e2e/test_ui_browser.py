"""The erpsync pages in the Airflow UI, used as a person uses them: headless Chromium (Debian's
/usr/bin/chromium driven by Playwright) against a real api-server, scheduler and dag-processor
(LocalExecutor, PostgreSQL metadata database), the Exact Online and Salesforce simulators over real
sockets, and the QuickBooks Web Connector bridge.

The tests run in order on one stack: a run shows its counts on the sync page; a record fixed at the
source is retried from the page and goes through; `retry_keys` works from the REST API and the CLI too
(only the chosen record is read and written); a record fixed at the source leaves quarantine by itself
on the next plain run; the trigger form starts a run with a changed param; the bridge's status page
opens. Every step saves a screenshot under the test's tmp folder. No sleeps: Playwright's `expect`
and the REST API's run state are waited for.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from erpsync.localstack import AirflowApi, LocalProcess, airflow_argv, free_port, wait_for_http
from tests.conftest import POSTGRES_ADMIN_URL, PROJECT

FLOW = "exact_items_to_sf_products"
CHROMIUM = "/usr/bin/chromium"
UI_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def metadata_db():
    """A PostgreSQL database of its own for Airflow's metadata; fails when PostgreSQL is down."""
    import psycopg

    name = f"erpsync_ui_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required at {POSTGRES_ADMIN_URL}: {exc}", pytrace=False)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def stack(tmp_path_factory, metadata_db):
    """Simulators in this process; api-server, scheduler and dag-processor as processes."""
    from cryptography.fernet import Fernet

    from erpsync.flows import POOLS
    from erpsync.sandbox.exact.testing import running_exact
    from erpsync.sandbox.salesforce.testing import running_salesforce

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make install does)", pytrace=False)
    tmp = tmp_path_factory.mktemp("ui")
    with (
        running_exact(
            tmp / "exact", minutely_limit=100_000, daily_limit=1_000_000, error_budget=0, item_count=12
        ) as exact,
        running_salesforce(tmp / "sf") as sf,
    ):
        api_port = free_port()
        state_url = f"sqlite:///{tmp / 'state.db'}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(tmp / "home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW_CONN_SALESFORCE_DEFAULT": sf.connection_json(),
            "AIRFLOW_CONN_EXACT_ONLINE_DEFAULT": exact.connection_json(),
            "ERPSYNC_STATE_URL": state_url,
            "ERPSYNC_STAGING_ROOT": str(tmp / "staging"),
            "GX_ANALYTICS_ENABLED": "false",
        }
        subprocess.run(airflow_argv("db", "migrate"), env=env, check=True, capture_output=True)
        logs = tmp / "logs"
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
            wait_for_http(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", process=procs[0], timeout=120)
            api = AirflowApi(f"http://127.0.0.1:{api_port}")
            for name, pool in POOLS.items():
                api.ensure_pool(name, pool["slots"], pool["description"])
            api.wait_for_dag(FLOW, timeout=180)
            api.unpause(FLOW)
            yield {
                "api": api,
                "env": env,
                "procs": procs,
                "exact": exact,
                "sf": sf,
                "url": f"http://127.0.0.1:{api_port}",
                "state_url": state_url,
                "shots": tmp / "screenshots",
            }
        finally:
            for proc in reversed(procs):
                proc.stop()


@pytest.fixture(scope="module")
def browser(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser, stack):
    """One logged-in page (the simple auth manager lets everyone in as admin here)."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    pg = context.new_page()
    pg.goto(stack["url"] + "/")
    expect(pg.get_by_text("Dags", exact=False).first).to_be_visible()
    yield pg
    context.close()


def shot(stack, page, name: str) -> Path:
    stack["shots"].mkdir(parents=True, exist_ok=True)
    path = stack["shots"] / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _items(stack) -> dict[str, dict]:
    exact = stack["exact"]
    div = exact.simulator.store.divisions[int(exact.info["default_division"])]
    return {i["ID"]: i for i in div.tables["logistics/Items"].values() if i.get("IsSalesItem")}


def _edit_item(stack, item_id: str, **fields) -> None:
    """Change an item as a user in Exact would: the fields and its Modified stamp."""
    from erpsync.sandbox.exact._odata import ms_to_date

    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    _items(stack)[item_id].update(**fields, Modified=ms_to_date(now_ms))


def _store(stack):
    from erpsync.state import StateStore

    return StateStore(stack["state_url"])


def _open_keys(stack) -> set[str]:
    return set(_store(stack).open_quarantine_keys(FLOW))


def _products(stack) -> dict[str, dict]:
    org = stack["sf"].simulator.org
    return {r["ProductCode"]: r for r in org.tables["Product2"].values() if not r.get("IsDeleted")}


def _finished(stack, run_id: str) -> dict:
    run = stack["api"].wait_for_run(FLOW, run_id, timeout=300)
    assert run["state"] == "success", (run, stack["procs"][1].log_tail())
    return _store(stack).get_run(FLOW, run_id)


def test_sync_page_shows_the_counts_of_a_run_that_just_happened(stack, page):
    from playwright.sync_api import expect

    run_id = stack["api"].trigger(FLOW, {"full_refresh": True})
    row = _finished(stack, run_id)
    assert row["created"] + row["updated"] > 0 and row["quarantined"] == 1, row

    page.goto(f"{stack['url']}/erpsync/flows/{FLOW}")
    run_row = page.locator(f"tr.run[data-run-id='{run_id}']")
    expect(run_row).to_be_visible()
    for name in ("created", "updated", "skipped", "quarantined", "failed"):
        expect(run_row.locator(f"td.{name}")).to_have_text(str(row[name]))
    calls = (row["report"] or {}).get("api_calls")
    assert calls and calls > 0
    expect(run_row.locator("td.api-calls")).to_have_text(str(calls))
    expect(page.locator("svg.chart")).to_have_count(3)
    expect(run_row.locator("a.run-link")).to_have_attribute("href", re.compile(f"/dags/{FLOW}/runs/"))
    # The page lives inside the Airflow UI too: the DAG's "Sync page" tab and the nav entry.
    shot(stack, page, "01-sync-page")
    page.goto(f"{stack['url']}/dags/{FLOW}/plugin/erpsync-flow")
    frame = page.frame_locator("iframe").first
    expect(frame.locator(f"tr.run[data-run-id='{run_id}']")).to_be_visible()
    shot(stack, page, "02-sync-page-in-airflow-ui")
