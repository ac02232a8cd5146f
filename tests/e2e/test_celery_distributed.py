"""Two sync flows on a distributed Airflow: CeleryExecutor with Redis as broker, Airflow's metadata on a
fresh PostgreSQL database, a real triggerer, and TWO Celery workers that share no disk (each its own
AIRFLOW_HOME and local staging folder) and hand rows to each other through staging on an S3 API server
(moto's server mode, in its own process). The state store and the Exact token store are on PostgreSQL,
as on several hosts.

- `exact_items_to_sf_products` runs on the stack from Exact to Salesforce.
- `sf_accounts_to_qb_customers` runs its deferrable QuickBooks upsert through the bridge and the Web
  Connector simulator; while the upsert is in flight (batch 0 finished and saved on S3, batch 1's job
  accepted by the bridge, its answer held back from the worker by a small proxy), the worker running
  the task is killed with SIGKILL. Airflow sees the missed heartbeats, the retry runs on the other
  worker, resumes from the progress on S3 and re-attaches to the same bridge job: every customer is in
  QuickBooks exactly once, no CustomerAdd was sent twice and none is missing.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from erpsync.localstack import AirflowApi, LocalProcess, airflow_argv, free_port, wait_for_http
from tests.conftest import PROJECT
from tests.e2e.conftest import fresh_database
from tests.pg import schema_url
from tests.s3 import running_s3

ACCOUNTS = "sf_accounts_to_qb_customers"
PRODUCTS = "exact_items_to_sf_products"
ITEMS = 40
DIV = 1001234
HELD_BATCH = re.compile(r"/target\.upsert/b1/")  # the upsert's second batch: the first is saved by then


class GateProxy:
    """A reverse proxy in front of the bridge's HTTP API that can hold back one answer.

    The first `POST /api/v1/jobs` whose Idempotency-Key matches `hold` is passed to the bridge (the job
    exists there) but its answer is kept from the caller until `release` is set: the caller is then
    a task in the middle of its upsert, waiting on a socket. Every job POST is recorded as
    (Idempotency-Key, job id answered)."""

    def __init__(self, upstream: str, hold: re.Pattern):
        self.host, port = upstream.split("//", 1)[1].rsplit(":", 1)
        self.upstream_port = int(port)
        self.hold = hold
        self.posts: list[tuple[str, str | None]] = []
        self.held = threading.Event()
        self.release = threading.Event()
        self.held_client: tuple[str, int] | None = None
        self.held_key: str | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn = http.client.HTTPConnection(proxy.host, proxy.upstream_port, timeout=300)
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if self.command == "POST" and self.path.startswith("/api/v1/jobs"):
                    key = self.headers.get("Idempotency-Key", "")
                    try:
                        job_id = json.loads(data).get("id")
                    except ValueError:
                        job_id = None
                    proxy.posts.append((key, job_id))
                    if proxy.hold.search(key) and not proxy.held.is_set():
                        proxy.held_client, proxy.held_key = self.client_address, key
                        proxy.held.set()
                        proxy.release.wait(600)
                try:
                    self.send_response(resp.status)
                    for name, value in resp.getheaders():
                        if name.lower() not in (
                            "transfer-encoding",
                            "connection",
                            "content-length",
                            "date",
                            "server",
                        ):
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller was killed while its answer was held

            do_GET = do_POST = do_DELETE = do_PATCH = _forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, postgres_url, redis_url):
    from cryptography.fernet import Fernet

    from erpsync.flows import POOLS
    from erpsync.sandbox.exact.testing import running_exact
    from erpsync.sandbox.salesforce.testing import running_salesforce
    from tests.qb_live import live_quickbooks

    tmp = tmp_path_factory.mktemp("celery-distributed")
    logs = tmp / "logs"
    with (
        fresh_database("erpsync_dist") as metadata_url,
        running_s3(tmp / "moto.log") as s3,
        running_salesforce(tmp / "sf") as sf,
        running_exact(
            tmp / "exact", minutely_limit=100_000, daily_limit=1_000_000, error_budget=0, item_count=ITEMS
        ) as exact,
        live_quickbooks(tmp / "qb") as qb,
    ):
        bucket = s3.create_bucket()
        proxy = GateProxy(qb.bridge.url, HELD_BATCH)
        bridge_conn = {**qb.connection(), "port": proxy.port}
        bridge_conn.pop("conn_id")
        state_url = schema_url(postgres_url, "dist_state")
        api_port = free_port()
        queue = f"erpsync-dist-{uuid.uuid4().hex[:8]}"  # this test's tasks reach only its own workers
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ERPSYNC_STAGING"))},
            "AIRFLOW_HOME": str(tmp / "control"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__CELERY__BROKER_URL": redis_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": metadata_url.replace(
                "postgresql+psycopg://", "db+postgresql+psycopg://", 1
            ),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            # A worker that vanished is noticed after 60 s without a heartbeat (default 300 s).
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_SALESFORCE_DEFAULT": sf.connection_json("password"),
            "AIRFLOW_CONN_QBWC_BRIDGE_DEFAULT": json.dumps(bridge_conn),
            "AIRFLOW_CONN_EXACT_ONLINE_DEFAULT": exact.connection_json(
                refresh_token=exact.new_consent(), token_store_url=schema_url(postgres_url, "dist_tokens")
            ),
            "AIRFLOW_CONN_ERPSYNC_STAGING": s3.conn_json(),
            "ERPSYNC_STAGING_URL": f"s3://{bucket}/erpsync",
            "ERPSYNC_STAGING_CONN_ID": "erpsync_staging",
            "ERPSYNC_STATE_URL": state_url,
            "GX_ANALYTICS_ENABLED": "false",
        }
        migrated = subprocess.run(airflow_argv("db", "migrate"), env=env, capture_output=True, text=True)
        assert migrated.returncode == 0, migrated.stderr[-3000:]

        def worker(name: str) -> LocalProcess:
            home = tmp / name  # a host of its own: its home, logs and (unused) local staging folder
            wenv = {
                **env,
                "AIRFLOW_HOME": str(home),
                "ERPSYNC_STAGING_ROOT": str(home / "staging"),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            }
            argv = airflow_argv(
                "celery", "worker", "--queues", queue, "--concurrency", "1", "--celery-hostname", f"{name}@%h"
            )
            return LocalProcess(name, argv, wenv, logs / f"{name}.log")

        control = [
            LocalProcess(
                "api-server", airflow_argv("api-server", "--port", str(api_port)), env, logs / "api.log"
            ),
            LocalProcess("scheduler", airflow_argv("scheduler"), env, logs / "scheduler.log"),
            LocalProcess("dag-processor", airflow_argv("dag-processor"), env, logs / "dag-processor.log"),
            LocalProcess("triggerer", airflow_argv("triggerer"), env, logs / "triggerer.log"),
        ]
        workers = {name: worker(name) for name in ("worker-a", "worker-b")}
        procs = [*control, *workers.values()]
        try:
            for proc in procs:
                proc.start()
            wait_for_http(
                f"http://127.0.0.1:{api_port}/api/v2/monitor/health",
                process=control[0],
                timeout=120,
                ok=lambda body: (body.get("triggerer") or {}).get("status") == "healthy",
            )
            api = AirflowApi(f"http://127.0.0.1:{api_port}")
            for name, pool in POOLS.items():
                api.ensure_pool(name, pool["slots"], pool["description"])
            yield {
                "api": api,
                "s3": s3,
                "bucket": bucket,
                "sf": sf,
                "exact": exact,
                "qb": qb,
                "proxy": proxy,
                "workers": workers,
                "control": control,
                "state_url": state_url,
                "tmp": tmp,
            }
        finally:
            proxy.release.set()
            for proc in reversed(procs):
                proc.stop()
            proxy.close()


def _run(world, dag_id: str, conf: dict, *, timeout: float) -> tuple[str, dict, dict[str, dict]]:
    api = world["api"]
    api.wait_for_dag(dag_id, timeout=180)
    api.unpause(dag_id)
    run_id = api.trigger(dag_id, conf=conf)
    return run_id, _wait(world, dag_id, run_id, timeout), _tis(world, dag_id, run_id)


def _wait(world, dag_id: str, run_id: str, timeout: float) -> dict:
    try:
        return world["api"].wait_for_run(dag_id, run_id, timeout=timeout)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{_why(world, dag_id, run_id)}")


def _tis(world, dag_id: str, run_id: str) -> dict[str, dict]:
    return {ti["task_id"]: ti for ti in world["api"].task_instances(dag_id, run_id)}


def _why(world, dag_id: str, run_id: str) -> str:
    states = {t: (ti["state"], ti["try_number"]) for t, ti in _tis(world, dag_id, run_id).items()}
    tails = "\n".join(
        f"--- {p.name}\n{p.log_tail(30)}" for p in [*world["control"], *world["workers"].values()]
    )
    return f"tasks: {states}\n{tails}"


def _safe(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", run_id)


def _no_local_staging(world) -> None:
    for name in world["workers"]:
        local = world["tmp"] / name / "staging"
        assert not local.exists() or not any(local.rglob("*")), f"{name} staged on its own disk"


def test_products_flow_runs_on_two_workers_with_staging_on_s3(world):
    started = time.monotonic()
    run_id, run, tis = _run(world, PRODUCTS, {"dry_run": False, "full_refresh": True}, timeout=600)
    assert run["state"] == "success", _why(world, PRODUCTS, run_id)
    assert {t: ti["state"] for t, ti in tis.items()} == dict.fromkeys(tis, "success")
    assert {ti["queue"] for ti in tis.values()} == {next(iter(tis.values()))["queue"]}

    div = world["exact"].simulator.store.divisions[DIV]
    items = [i for i in div.tables["logistics/Items"].values() if i.get("IsSalesItem")]
    clean = {i["Code"].strip() for i in items if i["Description"].strip()}
    assert len(clean) == ITEMS - 1  # the seed has one item without a description (quarantined)
    org = world["sf"].simulator.org
    by_code = Counter(p["ProductCode"] for p in org.tables["Product2"].values() if not p.get("IsDeleted"))
    assert {code: by_code[code] for code in clean} == dict.fromkeys(clean, 1), "each item exactly once"

    keys = world["s3"].keys(world["bucket"], f"erpsync/{PRODUCTS}/{_safe(run_id)}/")
    names = {k.rsplit("/", 1)[1] for k in keys}
    assert {"extract-00000.parquet", "plan-00000.parquet", "upsert-00000.parquet", "report.md"} <= names, (
        names
    )
    _no_local_staging(world)
    print(f"products on celery: run done in {time.monotonic() - started:.1f}s")


def test_a_worker_killed_mid_upsert_the_retry_finishes_on_the_other_and_nothing_is_written_twice(world):
    import psutil

    from erpsync.state import StateStore

    api, proxy, qb = world["api"], world["proxy"], world["qb"]
    api.wait_for_dag(ACCOUNTS, timeout=180)
    api.unpause(ACCOUNTS)
    started = time.monotonic()
    run_id = api.trigger(ACCOUNTS, conf={"dry_run": False, "full_refresh": True, "rows_per_job": 150})

    # In flight: batch 1's job is in the bridge and the worker waits for the answer the proxy holds.
    deadline = time.monotonic() + 600
    while not proxy.held.wait(2):
        if time.monotonic() > deadline or api.run(ACCOUNTS, run_id)["state"] in ("success", "failed"):
            pytest.fail(f"the upsert never reached its second batch\n{_why(world, ACCOUNTS, run_id)}")
    reached = time.monotonic() - started
    progress = [
        k
        for k in world["s3"].keys(world["bucket"], f"erpsync/{ACCOUNTS}/{_safe(run_id)}/qb-upsert-progress/")
    ]
    assert any(k.endswith("/batch-00000.json") for k in progress), progress
    assert not any(k.endswith("/batch-00001.json") for k in progress), progress

    # The task process that holds the socket descends from one worker: that whole host goes down.
    caller = next(
        psutil.Process(c.pid)
        for c in psutil.net_connections(kind="tcp")
        if c.laddr and (c.laddr.ip, c.laddr.port) == proxy.held_client and c.pid
    )
    lineage = {p.pid for p in [caller, *caller.parents()]}
    victim = next(w for w in world["workers"].values() if w.pid in lineage)
    survivor = next(w for w in world["workers"].values() if w is not victim)
    doomed = [psutil.Process(victim.pid), *psutil.Process(victim.pid).children(recursive=True)]
    for proc in doomed:
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(doomed, timeout=30)
    assert caller.pid in {p.pid for p in doomed}
    killed_at = time.monotonic()
    proxy.release.set()
    assert survivor.alive()

    run = _wait(world, ACCOUNTS, run_id, timeout=900)
    recovered = time.monotonic() - killed_at
    tis = _tis(world, ACCOUNTS, run_id)
    assert run["state"] == "success", _why(world, ACCOUNTS, run_id)
    assert {t: ti["state"] for t, ti in tis.items()} == dict.fromkeys(tis, "success"), _why(
        world, ACCOUNTS, run_id
    )
    assert tis["target.upsert"]["try_number"] >= 2, tis["target.upsert"]
    assert not victim.alive()
    # The try that finished wrote its task log on the survivor's own disk, never on the victim's.
    final = tis["target.upsert"]["try_number"]
    pattern = f"dag_id={ACCOUNTS}/run_id=*/task_id=target.upsert/attempt={final}.log"
    assert list((world["tmp"] / survivor.name / "logs").glob(pattern)), pattern
    assert not list((world["tmp"] / victim.name / "logs").glob(pattern)), pattern

    # The retry re-attached to the job the killed try had posted: same key, same job, one post more.
    again = [job for key, job in proxy.posts if key == proxy.held_key]
    assert len(again) == 2 and again[0] == again[1], proxy.posts
    upsert_keys = Counter(key for key, _ in proxy.posts if "/target.upsert/" in key)
    assert {k: n for k, n in upsert_keys.items() if n > 1} == {proxy.held_key: 2}, upsert_keys

    # QuickBooks: every account that went through is there exactly once, none twice, none missing.
    store = StateStore(world["state_url"])
    stuck = {e["source_key"]: e for e in store.quarantine_entries(ACCOUNTS)}
    org = world["sf"].simulator.org
    accounts = {rid: a for rid, a in org.tables["Account"].items() if not a.get("IsDeleted")}
    landed = set(accounts) - set(stuck)
    per_account = Counter(qb.data_ext("SalesforceId", c["ListID"]) for c in qb.customers())
    per_account.pop(None, None)
    assert set(per_account) == landed, set(per_account) ^ landed
    assert set(per_account.values()) == {1}, {k: n for k, n in per_account.items() if n > 1}
    refused = [e for e in stuck.values() if e["stage"] == "upsert"]
    assert qb.customer_adds() == len(landed) + len(refused), "a CustomerAdd was sent twice"
    list_ids = {qb.data_ext("SalesforceId", c["ListID"]): c["ListID"] for c in qb.customers()}
    assert {rid: accounts[rid].get("QB_ListID__c") for rid in landed} == {
        rid: list_ids[rid] for rid in landed
    }
    [entry] = [r for r in store.list_runs(ACCOUNTS) if r["run_id"] == run_id]
    assert entry["created"] == len(landed) and entry["updated"] == 0, entry

    keys = world["s3"].keys(world["bucket"], f"erpsync/{ACCOUNTS}/{_safe(run_id)}/")
    assert any(k.endswith("/upsert-00000.parquet") for k in keys), keys
    _no_local_staging(world)
    print(
        f"accounts on celery: upsert in flight after {reached:.1f}s, finished {recovered:.1f}s after the kill"
    )
