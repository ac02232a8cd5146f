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

import json
import os
import re
import secrets
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

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
def bridge(tmp_path_factory):
    """The QuickBooks Web Connector bridge with one company file, served over HTTP on loopback."""
    from erpsync.sandbox.runner import SandboxCA, SandboxContext
    from erpsync.sandbox.webconnector import start_bridge
    from tests.integration.test_bridge_support import TOKEN

    tmp = tmp_path_factory.mktemp("bridge")
    b = start_bridge(
        SandboxContext(data_dir=tmp, ca=SandboxCA(tmp / "ca")), companies={"acme": "pw"}, api_token=TOKEN
    )
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, metadata_db, bridge):
    """Simulators in this process; api-server, scheduler and dag-processor as processes."""
    from cryptography.fernet import Fernet

    from erpsync.flows import POOLS
    from erpsync.sandbox.exact.testing import running_exact
    from erpsync.sandbox.salesforce.testing import running_salesforce
    from tests.integration.test_bridge_support import TOKEN

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
            "AIRFLOW_CONN_QBWC_BRIDGE_DEFAULT": json.dumps(
                {
                    "conn_type": "qbwc_bridge",
                    "host": urlsplit(bridge.url).hostname,
                    "port": urlsplit(bridge.url).port,
                    "schema": urlsplit(bridge.url).scheme,
                    "password": TOKEN,
                }
            ),
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
    expect.set_options(timeout=UI_TIMEOUT_MS)  # a busy 2-core machine: wait for the condition, longer
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
    return {i["ID"]: dict(i) for i in div.tables["logistics/Items"].values() if i.get("IsSalesItem")}


def _edit_item(stack, item_id: str, *, raw: bool = False, **fields) -> None:
    """Change an item as a user in Exact would: through the simulator's own update rules, which
    stamp Modified and the sync Timestamp. `raw` writes what Exact's API refuses (an empty
    description, as some seeded items have) straight into the record, stamped the same way."""
    from erpsync.sandbox.exact._entities import ENTITIES

    exact = stack["exact"]
    store = exact.simulator.store
    div = store.division(int(exact.info["default_division"]))
    if raw:
        record = div.tables["logistics/Items"][item_id]
        record.update(fields)
        store._stamp(div, record, created=False)
    else:
        store.update(div, ENTITIES["logistics/items"], item_id, fields)


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


def _dirty_item(stack) -> dict:
    dirty = [i for i in _items(stack).values() if not str(i.get("Description") or "").strip()]
    assert len(dirty) == 1, "the seed has one item without a description"
    return dirty[0]


def test_retry_a_fixed_quarantined_record_from_the_page_and_see_it_go_through(stack, page):
    from playwright.sync_api import expect

    dirty = _dirty_item(stack)
    key, code = dirty["ID"], dirty["Code"].strip()
    assert key in _open_keys(stack)
    _edit_item(stack, key, Description="Fixed in Exact")

    page.goto(f"{stack['url']}/erpsync/flows/{FLOW}")
    row = page.locator(f"tr.q[data-key='{key}']")
    expect(row).to_be_visible()
    expect(row).to_contain_text("Description")  # the rule that refused it
    row.locator("input[type=checkbox]").check()
    shot(stack, page, "03-quarantine-selected")
    page.locator("#retry").click()
    message = page.locator("#message")
    expect(message).to_contain_text("Started run")
    run_id = re.search(r"Started run (\S+) retrying", message.inner_text()).group(1)
    shot(stack, page, "04-retry-started")

    row_after = _finished(stack, run_id)
    run = stack["api"].run(FLOW, run_id)
    assert run["conf"]["retry_keys"] == [key], run["conf"]
    assert (row_after["created"], row_after["updated"], row_after["quarantined"]) == (1, 0, 0), row_after
    assert (row_after["report"]["counts"]["extracted"]) == 1, "only the chosen record was read"
    assert key not in _open_keys(stack)
    assert _products(stack)[code]["Name"] == "Fixed in Exact"

    page.reload()
    expect(page.locator(f"tr.run[data-run-id='{run_id}'] td.created")).to_have_text("1")
    expect(page.locator(f"tr.q[data-key='{key}']")).to_have_count(0)
    activity = page.locator(f"tr.activity[data-key='{key}']").first
    expect(activity).to_contain_text("created")
    expect(activity).to_contain_text("Fixed in Exact")  # from the source and as sent
    shot(stack, page, "05-retried-record-went-through")


def test_retry_keys_from_the_rest_api_and_the_cli_read_and_write_only_those_records(stack):
    store = _store(stack)
    cursor_before = store.get_cursor(FLOW, "logistics/Items")
    clean = sorted(
        (i for i in _items(stack).values() if str(i["Description"]).strip()), key=lambda i: i["Code"]
    )
    by_api, by_cli = clean[0], clean[1]
    _edit_item(stack, by_api["ID"], Description="Renamed for the API retry")
    _edit_item(stack, by_cli["ID"], Description="Renamed for the CLI retry")

    run_id = stack["api"].trigger(FLOW, {"retry_keys": [by_api["ID"]]})
    row = _finished(stack, run_id)
    assert (row["created"], row["updated"]) == (0, 1), row
    assert row["report"]["counts"]["extracted"] == 1
    products = _products(stack)
    assert products[by_api["Code"].strip()]["Name"] == "Renamed for the API retry"
    assert products[by_cli["Code"].strip()]["Name"] != "Renamed for the CLI retry"

    out = subprocess.run(
        airflow_argv(
            "dags", "trigger", FLOW, "--conf", json.dumps({"retry_keys": [by_cli["ID"]]}), "-o", "json"
        ),
        env=stack["env"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cli_run = json.loads(out[out.index("[{") :])[0]["dag_run_id"]  # after any warning lines
    row = _finished(stack, cli_run)
    assert (row["created"], row["updated"]) == (0, 1), row
    assert _products(stack)[by_cli["Code"].strip()]["Name"] == "Renamed for the CLI retry"
    # Runs limited to chosen keys leave the cursor where it was.
    assert store.get_cursor(FLOW, "logistics/Items") == cursor_before


def test_a_record_fixed_at_the_source_leaves_quarantine_on_the_next_plain_run(stack):
    item = sorted(
        (i for i in _items(stack).values() if str(i["Description"]).strip()), key=lambda i: i["Code"]
    )[2]
    _edit_item(stack, item["ID"], raw=True, Description="")
    # The run reads this one changed item: 1 of 1 rows refused is over the default 10 % threshold.
    row = _finished(stack, stack["api"].trigger(FLOW, {"quarantine_threshold": 1.0}))
    assert row["quarantined"] == 1 and item["ID"] in _open_keys(stack), row

    _edit_item(stack, item["ID"], Description="Fixed again")
    row = _finished(stack, stack["api"].trigger(FLOW, {}))
    assert item["ID"] not in _open_keys(stack), row
    assert row["quarantined"] == 0 and row["updated"] == 1, row
    assert _products(stack)[item["Code"].strip()]["Name"] == "Fixed again"


def test_trigger_form_starts_a_run_with_a_changed_param(stack, page):
    from playwright.sync_api import expect

    before = {r["dag_run_id"] for r in stack["api"].dag_runs(FLOW)}
    page.goto(f"{stack['url']}/dags/{FLOW}")
    page.get_by_role("button", name=re.compile("^Trigger")).first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Run Parameters")
    (stack["shots"] / "trigger-dialog.html").write_text(dialog.inner_html())
    batch = dialog.locator("input[name='element_batch_size']")
    batch.fill("57")
    expect(batch).to_have_value("57")
    shot(stack, page, "06-trigger-form-batch-size-changed")
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    expect(dialog).to_be_hidden()

    runs = [r for r in stack["api"].dag_runs(FLOW) if r["dag_run_id"] not in before]
    assert len(runs) == 1, runs
    assert runs[0]["conf"]["batch_size"] == 57, runs[0]["conf"]
    row = _finished(stack, runs[0]["dag_run_id"])
    assert row["failed"] == 0, row
    shot(stack, page, "07-run-started-from-the-form")


def test_the_bridge_status_page_opens_and_the_sync_pages_show_web_connector_health(
    stack, bridge, browser, page, tmp_path
):
    from playwright.sync_api import expect

    from tests.integration.test_bridge_support import TOKEN, customer_add, enqueue, make_company_file, wc

    qb = make_company_file(tmp_path / "acme.qbw")
    wc(bridge, qb).run_once()  # an idle poll
    enqueue(bridge, [customer_add("UI Health Co")], key="k-ui-health").raise_for_status()
    wc(bridge, qb).run_once()  # a session that does the work
    wc(bridge, qb).run_once()  # and an idle poll after it

    context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {TOKEN}"})
    context.set_default_timeout(UI_TIMEOUT_MS)
    pg = context.new_page()
    resp = pg.goto(f"{bridge.url}/status")
    assert resp is not None and resp.status == 200
    expect(pg.locator("body")).to_contain_text("acme")
    shot(stack, pg, "08-bridge-status")
    context.close()

    page.goto(f"{stack['url']}/erpsync/")
    row = page.locator("#bridge-health tr.company[data-company='acme']")
    expect(row).to_be_visible()
    expect(row.locator("td.last-poll")).not_to_have_text("never")
    expect(row.locator("td.last-ok")).not_to_have_text("never")
    expect(row.locator("td.idle")).to_have_text("1")
    expect(row.locator("td.queue")).to_have_text("0")
    expect(row.locator("td.doubt")).to_have_text("0")
    shot(stack, page, "09-web-connector-health")


def test_every_flow_has_a_trigger_form_with_the_sync_params(stack, page):
    """Each sync DAG's trigger form shows the shared params, retry_keys among them (a run of the
    products flow with a changed param is started above; the others need their own systems)."""
    from playwright.sync_api import expect

    listed = stack["api"]._request("GET", "/api/v2/dags?tags=erpsync&limit=100")["dags"]
    # A sync flow is tagged with its source and target systems too (erpsync_smoke is not a flow).
    dags = [d["dag_id"] for d in listed if len({t["name"] for t in d["tags"]} - {"erpsync"}) >= 2]
    assert FLOW in dags and "erpsync_smoke" not in dags and len(dags) >= 4, dags
    for n, dag_id in enumerate(sorted(dags)):
        page.goto(f"{stack['url']}/dags/{dag_id}")
        page.get_by_role("button", name=re.compile("^Trigger")).first.click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("Run Parameters")
        for name in ("dry_run", "full_refresh", "batch_size", "retry_keys"):
            expect(dialog.locator(f"[name='element_{name}']")).to_have_count(1)
        shot(stack, page, f"10-{n}-trigger-form-{dag_id}")
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
