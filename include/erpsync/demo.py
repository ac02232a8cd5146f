"""`make demo`: run the four sync flows on the embedded default and print what happened.

Starts, as local processes: the simulators (`sandbox up`: Salesforce over HTTPS, Exact Online,
QuickBooks' company file, Autotask PSA over HTTPS), the Web Connector bridge on SQLite (`qbwc-bridge
serve`), the simulated Web Connector polling it, and Airflow standalone (LocalExecutor on SQLite, sized
for 2 cores). Then it triggers the four DAGs through Airflow's REST API, waits, prints a summary per flow
(the Autotask DAG's contacts stage on a line of its own) and
writes it to demo-summary.json. Everything keeps its data under .demo/, so a second run shows zero
writes for unchanged data (`make demo-reset` forgets it). `--keep` leaves the stack running.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path

from erpsync.localstack import AirflowApi, LocalProcess, free_port, wait_for_http

PROJECT = Path(__file__).resolve().parents[2]
DEMO = PROJECT / ".demo"
FLOWS = [
    "exact_items_to_sf_products",
    "sf_accounts_to_qb_customers",
    "sf_orders_to_exact",
    "sf_accounts_to_autotask",
]
#: Flows a DAG runs after its own (FlowStage 'then'): each has its own run report under the same run id.
STAGES = {"sf_accounts_to_autotask": ["sf_contacts_to_autotask"]}
COMPANY = "demo"
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


def run_flows(api: AirflowApi, *, timeout: float = 900) -> dict[str, dict]:
    """Unpause and trigger every flow, wait for all of them, and return each run's summary."""
    for dag_id in FLOWS:
        api.wait_for_dag(dag_id, timeout=120)
    runs = {}
    for dag_id in FLOWS:
        api.unpause(dag_id)
        # A full refresh reads every source record; unchanged ones are skipped by content hash, so a
        # second demo shows zero writes. (Unpausing also starts the latest scheduled interval's run.)
        runs[dag_id] = api.trigger(dag_id, conf={"full_refresh": True})
    results = {}
    for dag_id, run_id in runs.items():
        run = api.wait_for_run(dag_id, run_id, timeout=timeout)
        results[dag_id] = flow_summary(api, dag_id, run)
    return results


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
    # /status needs a token with read: the browser asks for it (HTTP Basic, the token as password).
    print(
        f"Bridge status:  {stack.bridge_url}/status  (password {stack.status_token} with any user name;"
        f" read-only, {COMPANY!r} only)"
    )
    print(f"Run reports:    {DEMO / 'staging'}/<flow>/<run>/report.md")
    print(f"Summary JSON:   {PROJECT / 'demo-summary.json'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave everything running (Ctrl-C stops it)")
    args = parser.parse_args(argv)
    DEMO.mkdir(exist_ok=True)
    stack = DemoStack()
    started = time.monotonic()
    ok = False
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
        (PROJECT / "demo-summary.json").write_text(json.dumps(summary, indent=2))
        print_summary(results, stack)
        ok = all(r["state"] == "success" for r in results.values())
        print(f"\n[demo] {'all flows succeeded' if ok else 'some flows failed'} in {summary['seconds']}s")
        if args.keep:
            print("[demo] KEEP=1: everything stays up; press Ctrl-C to stop", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        print("[demo] stopping every process it started ...", flush=True)
        stack.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
