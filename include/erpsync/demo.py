"""`make demo`: run the four sync flows on the embedded default and print what happened.

Starts, as local processes: the simulators (`sandbox up`: Salesforce over HTTPS, Exact Online,
QuickBooks' company file, Autotask PSA over HTTPS), the Web Connector bridge on SQLite (`qbwc-bridge
serve`), the simulated Web Connector polling it, and Airflow standalone (LocalExecutor on SQLite, sized
for 2 cores). Then it triggers the four DAGs through Airflow's REST API, waits, prints a summary per flow
(the Autotask DAG's contacts stage on a line of its own) and
writes it to demo-summary.json. Everything keeps its data under .demo/ (ERPSYNC_DEMO_DIR moves it,
for tests), so a second run shows zero writes for unchanged data (`make demo-reset` forgets it).
`--keep` leaves the stack running until Ctrl-C, SIGTERM or SIGHUP (a closed terminal).

Leaves nothing half-done: before stopping Airflow it waits for every run of the flows that started
while it was up (the orders flow's asset-triggered run), cancels what is still unfinished after
`SETTLE_TIMEOUT` or on a signal, and pauses the flows, so the next demo's Airflow starts no run of its
own. At start, runs an earlier demo left queued or running (killed, crashed) are cancelled, so the new
run never waits behind one's retry back-off (max one active run per flow).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from erpsync.localstack import AirflowApi, LocalProcess, free_port, wait_for_http

PROJECT = Path(__file__).resolve().parents[2]
DEMO = Path(os.environ.get("ERPSYNC_DEMO_DIR") or PROJECT / ".demo")
SUMMARY = DEMO / "demo-summary.json" if os.environ.get("ERPSYNC_DEMO_DIR") else PROJECT / "demo-summary.json"
FLOWS = [
    "exact_items_to_sf_products",
    "exact_stock_to_sf_products",
    "sf_accounts_to_qb_customers",
    "sf_orders_to_exact",
    "sf_accounts_to_autotask",
]
#: Flows the demo starts only once another flow's run has finished: stock is written onto the products
#: the products flow creates (started together, a stock run could find some products missing).
AFTER = {"exact_stock_to_sf_products": "exact_items_to_sf_products"}
#: Flows a DAG runs after its own (FlowStage 'then'): each has its own run report under the same run id.
STAGES = {"sf_accounts_to_autotask": ["sf_contacts_to_autotask"]}
COMPANY = "demo"
#: Seconds the demo waits, after its own runs, for the runs they caused (asset-triggered) to finish.
SETTLE_TIMEOUT = float(os.environ.get("ERPSYNC_DEMO_SETTLE_TIMEOUT", "300"))
UNFINISHED = ("queued", "running")
#: The read-only jobs-API token the demo creates for its company's /status page (see `start_bridge`).
STATUS_TOKEN = "demo-status"


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _secret(name: str) -> str:
    """A random secret kept in .demo/ so restarts of the demo agree with what the stores hold."""
    path = DEMO / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def _wait_for_file(path: Path, process: LocalProcess, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
        if path.exists():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # being written
        time.sleep(0.3)
    raise TimeoutError(f"{path} did not appear within {timeout:.0f}s:\n{process.log_tail()}")


class DemoStack:
    """The demo's processes, started in dependency order and stopped in reverse."""

    def __init__(self, *, base_env: dict[str, str] | None = None):
        self.base_env = {k: v for k, v in (base_env or os.environ).items() if not k.startswith("AIRFLOW")}
        self.procs: list[LocalProcess] = []
        self.logs = DEMO / "logs"
        self.state: dict = {}
        self.bridge_url = ""
        self.status_token = ""
        self.api: AirflowApi | None = None
        self.api_port = 0

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> LocalProcess:
        log_path = self.logs / f"{name}.log"
        log_path.unlink(missing_ok=True)
        proc = LocalProcess(name, argv, env, log_path, cwd=PROJECT).start()
        self.procs.append(proc)
        return proc

    def start_sandbox(self) -> None:
        state_file = DEMO / "sandbox.json"
        state_file.unlink(missing_ok=True)
        # The demo sandbox grants 600 calls a minute (real Exact: 60) so the demo takes minutes, not an
        # hour; the tests exercise the real limit and the hook's waiting on it.
        env = {
            **self.base_env,
            "ERPSYNC_SANDBOX_EXACT": json.dumps({"error_budget": 0, "minutely_limit": 600}),
        }
        argv = [
            _bin("sandbox"),
            "up",
            "--state-file",
            str(state_file),
            "--data-dir",
            str(DEMO / "sandbox"),
            "--random-ports",
        ]
        proc = self._start("sandbox", argv, env)
        self.state = _wait_for_file(state_file, proc)

    def bridge_env(self) -> dict[str, str]:
        return {
            **self.base_env,
            "QBWC_BRIDGE_DATABASE_URL": f"sqlite:///{DEMO / 'qbwc_bridge.db'}",
            "QBWC_BRIDGE_API_TOKEN": _secret("bridge-api-token"),
            "QBWC_BRIDGE_ENVIRONMENT": "development",
            "DEMO_QBWC_PASSWORD": _secret("qbwc-password"),
        }

    def start_bridge(self) -> None:
        import subprocess

        env = self.bridge_env()
        subprocess.run([_bin("qbwc-bridge"), "migrate"], env=env, check=True, capture_output=True)
        listed = subprocess.run(
            [_bin("qbwc-bridge"), "company", "list"], env=env, capture_output=True, text=True
        )
        if COMPANY not in listed.stdout.split():
            subprocess.run(
                [
                    _bin("qbwc-bridge"),
                    "company",
                    "add",
                    COMPANY,
                    "--user",
                    COMPANY,
                    "--password-env",
                    "DEMO_QBWC_PASSWORD",
                    "--every",
                    "1",
                ],
                env=env,
                check=True,
                capture_output=True,
            )
        self.status_token = self._new_status_token(env)
        port = free_port()
        self.bridge_url = f"http://127.0.0.1:{port}"
        env["QBWC_BRIDGE_PUBLIC_URL"] = f"http://localhost:{port}"
        proc = self._start("qbwc-bridge", [_bin("qbwc-bridge"), "serve", "--port", str(port)], env)
        wait_for_http(f"{self.bridge_url}/health", process=proc, timeout=60)

    @staticmethod
    def _new_status_token(env: dict[str, str]) -> str:
        """A fresh read-only token for the demo company: /status wants one (HTTP Basic or Bearer).

        Tokens are shown once and stored hashed, so each demo run revokes the previous run's and
        creates its own, rather than keeping a second secret on disk.
        """
        import subprocess

        bridge = _bin("qbwc-bridge")
        # Exits non-zero when there is none yet (a first run): nothing to revoke then.
        subprocess.run([bridge, "token", "revoke", STATUS_TOKEN], env=env, capture_output=True)
        created = subprocess.run(
            [bridge, "token", "create", "--name", STATUS_TOKEN, "--company", COMPANY, "--rights", "read"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return created.stdout.strip()

    def start_webconnector(self) -> None:
        qb = self.state["systems"]["quickbooks"]
        env = {**self.bridge_env()}
        argv = [
            _bin("sandbox"),
            "webconnector",
            "--url",
            f"{self.bridge_url}/qbwc",
            "--user",
            COMPANY,
            "--password-env",
            "DEMO_QBWC_PASSWORD",
            "--company-file",
            qb["company_file"],
            "--every",
            "2",
        ]
        proc = self._start("webconnector", argv, env)
        time.sleep(1.0)
        if not proc.alive():
            raise RuntimeError(f"the Web Connector simulator exited:\n{proc.log_tail()}")

    def autotask_connection(self) -> str:
        """The `autotask` connection for the sandbox tenant (the hook's call ledger under .demo/airflow)."""
        from erpsync.sandbox.autotask import airflow_connection as autotask_connection

        system = self.state["systems"]["autotask"]
        return json.dumps(autotask_connection(system, self.state["ca_bundle"]))

    def connections(self) -> dict[str, str]:
        from erpsync.sandbox.exact import connection_json as exact_connection
        from erpsync.sandbox.salesforce import airflow_connection

        systems = self.state["systems"]
        port = int(self.bridge_url.rsplit(":", 1)[1])
        return {
            "AIRFLOW_CONN_SALESFORCE_DEFAULT": json.dumps(
                airflow_connection(systems["salesforce"], self.state["ca_bundle"], "password")
            ),
            "AIRFLOW_CONN_EXACT_ONLINE_DEFAULT": exact_connection(
                {**systems["exact"], "ca_bundle": self.state["ca_bundle"]},
                token_store_url=f"sqlite:///{DEMO / 'exact_tokens.db'}",
            ),
            "AIRFLOW_CONN_QBWC_BRIDGE_DEFAULT": json.dumps(
                {
                    "conn_type": "qbwc_bridge",
                    "host": "127.0.0.1",
                    "port": port,
                    "schema": "http",
                    "password": _secret("bridge-api-token"),
                    "extra": {"company": COMPANY, "timeout": 60},
                }
            ),
            "AIRFLOW_CONN_AUTOTASK_DEFAULT": self.autotask_connection(),
        }

    def airflow_env(self) -> dict[str, str]:
        home = DEMO / "airflow"
        home.mkdir(parents=True, exist_ok=True)
        self.api_port = self.api_port or free_port()
        env = {
            **self.base_env,
            "PATH": f"{Path(sys.executable).parent}:{self.base_env.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__TRIGGERER__CAPACITY": "50",
            "ERPSYNC_STATE_URL": f"sqlite:///{DEMO / 'state.db'}",
            "ERPSYNC_STAGING_ROOT": str(DEMO / "staging"),
            "GX_ANALYTICS_ENABLED": "false",
            **self.connections(),
        }
        schema_dir = PROJECT.parent / "shared" / "reference" / "qbxml"
        if schema_dir.is_dir():
            env.setdefault("ERPSYNC_QBXML_SCHEMA_DIR", str(schema_dir))
        return env

    def start_airflow(self) -> None:
        env = self.airflow_env()
        self.write_local_settings()
        proc = self._start("airflow", [_bin("airflow"), "standalone"], env)
        wait_for_http(
            f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health",
            process=proc,
            timeout=180,
            ok=lambda body: body.get("scheduler", {}).get("status") == "healthy",
        )
        self.api = AirflowApi(f"http://127.0.0.1:{self.api_port}", "admin", self.admin_password())
        from erpsync.flows import POOLS

        for name, pool in POOLS.items():
            self.api.ensure_pool(name, pool["slots"], pool["description"])

    @staticmethod
    def write_local_settings() -> None:
        """`airflow_local_settings.py`: the scheduler loads Great Expectations and pandas once, so the
        task processes its LocalExecutor forks need not import them again (erpsync.quality.preload)."""
        path = DEMO / "airflow" / "config" / "airflow_local_settings.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            '"""Written by make demo: see erpsync.quality.preload."""\n\n'
            "from erpsync.quality.preload import warm_local_executor\n\n"
            "warm_local_executor()\n"
        )

    def admin_password(self) -> str:
        path = DEMO / "airflow" / "passwords.json"
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.3)
        return json.loads(path.read_text())["admin"]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def _quoted(run_id: str) -> str:
    import urllib.parse

    return urllib.parse.quote(run_id, safe="")


def patient(call, *args, timeout: float = 180, **kwargs):
    """Call the Airflow API, riding out a busy api-server: on SQLite under load a request can time out
    (30 s) or fail with a 5xx; a demo must not give up on its runs (and leave them behind) for that."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call(*args, **kwargs)
        except (OSError, RuntimeError) as exc:  # timeouts, refused connections, 5xx after retries
            if isinstance(exc, RuntimeError) and "HTTP 5" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(1)


def unfinished_runs(api: AirflowApi, dag_id: str) -> list[dict]:
    """The flow's runs still queued or running (every run type)."""
    query = "&".join(f"state={state}" for state in UNFINISHED)
    return patient(api._request, "GET", f"/api/v2/dags/{dag_id}/dagRuns?{query}&limit=100")["dag_runs"]


def wait_for_run(api: AirflowApi, dag_id: str, run_id: str, *, timeout: float) -> dict:
    """Wait until the run finished (success or failed) and return it."""
    deadline = time.monotonic() + timeout
    while True:
        run = patient(api.run, dag_id, run_id)
        if run["state"] in {"success", "failed"}:
            return run
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{dag_id} {run_id} still {run['state']} after {timeout:.0f}s")
        time.sleep(1)


def cancel_run(api: AirflowApi, dag_id: str, run_id: str, why: str) -> None:
    """Mark a run failed (Airflow stops its running tasks, drops pending retries) and say why in its note."""
    path = f"/api/v2/dags/{dag_id}/dagRuns/{_quoted(run_id)}"
    patient(api._request, "PATCH", path, {"state": "failed", "note": f"cancelled by make demo: {why}"})


def pause_flows(api: AirflowApi, paused: bool = True, flows: list[str] | None = None) -> None:
    for dag_id in FLOWS if flows is None else flows:
        patient(api._request, "PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})


def clear_leftovers(api: AirflowApi) -> list[tuple[str, str]]:
    """Pause the flows and cancel the runs an earlier demo left queued or running.

    A demo killed (or one before this fix) leaves runs in Airflow's database; with one active run per
    flow the new demo's run would wait behind each, retry back-off included (325.8 s measured).
    The new run is a full refresh, so nothing the old run would have done is lost.
    """
    pause_flows(api)
    cancelled = []
    for dag_id in FLOWS:
        for run in unfinished_runs(api, dag_id):
            cancel_run(api, dag_id, run["dag_run_id"], "left unfinished by an earlier demo")
            cancelled.append((dag_id, run["dag_run_id"]))
    return cancelled


def _trigger(api: AirflowApi, dag_id: str) -> str:
    """Trigger a full refresh; when a scheduled interval is due, the run takes its logical date.

    Unpausing starts the latest scheduled interval's run, which would run first (it is older) and the
    demo's own after it. A run already holding that logical date makes the scheduler skip the interval
    (a full refresh covers it), so one run does the work of both.
    """
    from datetime import UTC, datetime

    conf = {"full_refresh": True}
    dag = patient(api._request, "GET", f"/api/v2/dags/{dag_id}")
    due, logical = dag.get("next_dagrun_run_after"), dag.get("next_dagrun_logical_date")
    if due and logical and datetime.fromisoformat(due) <= datetime.now(UTC):
        try:
            return api.trigger(dag_id, conf=conf, logical_date=logical)
        except RuntimeError as exc:  # that date is taken (an earlier demo's run): a run of now
            if "HTTP 409" not in str(exc):
                raise
    return api.trigger(dag_id, conf=conf)


def run_flows(api: AirflowApi, *, timeout: float = 900) -> dict[str, dict]:
    """Trigger every flow, unpause them, wait for all of them, and return each run's summary."""
    for dag_id in FLOWS:
        api.wait_for_dag(dag_id, timeout=120)
    for dag_id, run_id in clear_leftovers(api):
        print(f"[demo] cancelled {dag_id} {run_id}, left unfinished by an earlier demo", flush=True)
    # A full refresh reads every source record; unchanged ones are skipped by content hash, so a
    # second demo shows zero writes. Triggered while paused, so no scheduled run goes first.
    first = [f for f in FLOWS if f not in AFTER]
    runs = {dag_id: _trigger(api, dag_id) for dag_id in first}
    pause_flows(api, paused=False, flows=first)
    results = {}
    for dag_id in FLOWS:
        if dag_id in AFTER:  # its prerequisite was waited for above (FLOWS lists it first)
            runs[dag_id] = _trigger(api, dag_id)
            pause_flows(api, paused=False, flows=[dag_id])
        run = wait_for_run(api, dag_id, runs[dag_id], timeout=timeout)
        results[dag_id] = flow_summary(api, dag_id, run)
    return {dag_id: results[dag_id] for dag_id in FLOWS}


def settle(
    api: AirflowApi, *, timeout: float = SETTLE_TIMEOUT, cancel_now: str = ""
) -> list[tuple[str, str]]:
    """Before Airflow stops: wait for every run of the flows still in flight (the orders flow's
    asset-triggered run, a scheduled interval), then cancel what is left and pause the flows.

    Returns the (dag_id, run_id) cancelled. `cancel_now` (why: a signal, an error) cancels without
    waiting.
    """
    deadline = time.monotonic() + (0 if cancel_now else timeout)
    told = False
    while True:
        pending = [(d, r["dag_run_id"]) for d in FLOWS for r in unfinished_runs(api, d)]
        if not pending or time.monotonic() >= deadline:
            break
        if not told:
            print(
                "[demo] waiting for the runs the demo caused: " + ", ".join(f"{d} {r}" for d, r in pending),
                flush=True,
            )
            told = True
        time.sleep(1)
    pause_flows(api)
    # Pausing stops new runs; one queued in the meantime is cancelled with the rest.
    pending = [(d, r["dag_run_id"]) for d in FLOWS for r in unfinished_runs(api, d)]
    why = cancel_now or f"still unfinished after {timeout:.0f}s when the demo stopped"
    for dag_id, run_id in pending:
        cancel_run(api, dag_id, run_id, why)
        print(f"[demo] cancelled {dag_id} {run_id} ({why})", flush=True)
    return pending


def _counts(stored: dict) -> tuple[dict, dict]:
    report = stored.get("report") or {}
    counts = report.get("counts") or stored.get("counts") or {}
    return report, counts


def flow_summary(api: AirflowApi, dag_id: str, run: dict) -> dict:
    """Counts from the flow's run report (state store), task states and timing from Airflow; a DAG with
    later stages (`STAGES`) also gets each stage's counts under ``stages``."""
    from erpsync.state import StateStore

    tis = api.task_instances(dag_id, run["dag_run_id"])
    store = StateStore(f"sqlite:///{DEMO / 'state.db'}")
    report, counts = _counts(store.get_run(dag_id, run["dag_run_id"]) or {})
    stages = {}
    for flow in STAGES.get(dag_id, []):
        stored = store.get_run(flow, run["dag_run_id"]) or {}
        stage_report, stage_counts = _counts(stored)
        stages[flow] = {
            **{k: stage_counts.get(k, 0) for k in ("created", "updated", "skipped", "quarantined", "failed")},
            "calls_used": stage_report.get("api_calls", 0),
            "status": stored.get("status") or "no report",
        }
    started, ended = run.get("start_date"), run.get("end_date")
    seconds = None
    if started and ended:
        from datetime import datetime

        seconds = round((datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds(), 1)
    return {
        "state": run["state"],
        "run_id": run["dag_run_id"],
        "created": counts.get("created", 0),
        "updated": counts.get("updated", 0),
        "skipped": counts.get("skipped", 0),
        "quarantined": counts.get("quarantined", 0),
        "failed": counts.get("failed", 0),
        "calls_used": report.get("api_calls", 0),
        "seconds": seconds,
        "failed_tasks": sorted(ti["task_id"] for ti in tis if ti["state"] in {"failed", "upstream_failed"}),
        "report": (report.get("files") or {}).get("markdown"),
        "stages": stages,
    }


def print_summary(results: dict[str, dict], stack: DemoStack) -> None:
    header = f"{'flow':32} {'state':8} {'created':>7} {'updated':>7} {'skipped':>7} {'quarant.':>8} {'calls':>6} {'secs':>6}"
    print("\n" + header + "\n" + "-" * len(header))
    for flow, r in results.items():
        print(
            f"{flow:32} {r['state']:8} {r['created']:>7} {r['updated']:>7} {r['skipped']:>7} "
            f"{r['quarantined']:>8} {r['calls_used']:>6} {r['seconds'] or 0:>6}"
        )
        for stage, s in (r.get("stages") or {}).items():
            label = f"  then {stage}"
            print(
                f"{label:32} {s['status']:8} {s['created']:>7} {s['updated']:>7} {s['skipped']:>7} "
                f"{s['quarantined']:>8} {s['calls_used']:>6}"
            )
        if r["failed_tasks"]:
            print(
                f"    failed tasks: {', '.join(r['failed_tasks'])} (logs under {DEMO / 'airflow' / 'logs'})"
            )
    print(
        f"\nAirflow UI:     http://127.0.0.1:{stack.api_port}  (user admin, password {stack.admin_password()})"
    )
    # The erpsync plugin's pages (plugins/erpsync_ui.py): runs, charts, quarantine with retry, activity.
    print(f"Sync pages:     http://127.0.0.1:{stack.api_port}/erpsync/  (same login; one page per flow)")
    # /status needs a token with read: the browser asks for it (HTTP Basic, the token as password).
    print(
        f"Bridge status:  {stack.bridge_url}/status  (password {stack.status_token} with any user name;"
        f" read-only, {COMPANY!r} only)"
    )
    print(f"Run reports:    {DEMO / 'staging'}/<flow>/<run>/report.md")
    print(f"Summary JSON:   {SUMMARY}")


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so the same `finally` stops every process."""


def _on_signal(signum, frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def _hold_signals() -> None:
    """While stopping: a second signal must not cut the stop short and leave processes behind."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep", action="store_true", help="leave everything running (Ctrl-C, SIGTERM or SIGHUP stops it)"
    )
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    DEMO.mkdir(parents=True, exist_ok=True)
    stack = DemoStack()
    started = time.monotonic()
    ok = False
    settled = False
    why = "the demo stopped on an error"
    try:
        for step, start in (
            ("simulators", stack.start_sandbox),
            ("Web Connector bridge", stack.start_bridge),
            ("simulated Web Connector", stack.start_webconnector),
            ("Airflow standalone", stack.start_airflow),
        ):
            print(f"[demo] starting the {step} ...", flush=True)
            start()
        print("[demo] triggering " + ", ".join(FLOWS), flush=True)
        results = run_flows(stack.api)
        summary = {"flows": results, "seconds": round(time.monotonic() - started, 1)}
        SUMMARY.write_text(json.dumps(summary, indent=2))
        print_summary(results, stack)
        ok = all(r["state"] == "success" for r in results.values())
        print(f"\n[demo] {'all flows succeeded' if ok else 'some flows failed'} in {summary['seconds']}s")
        if args.keep:
            print("[demo] KEEP=1: everything stays up; press Ctrl-C to stop", flush=True)
            while True:
                time.sleep(3600)
        settle(stack.api)
        settled = True
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP (Stopped)
        why = f"stopped by {exc or 'SIGINT'}"
        print(f"\n[demo] {why}", flush=True)
    finally:
        _hold_signals()
        if stack.api is not None and not settled:
            try:  # stopped early or by a signal: cancel what is in flight, do not wait
                settle(stack.api, cancel_now=why)
            except Exception as exc:  # Airflow gone already: stopping the processes is what matters
                print(f"[demo] could not cancel the runs in flight: {exc}", flush=True)
        print("[demo] stopping every process it started ...", flush=True)
        stack.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
