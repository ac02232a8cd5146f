"""Benchmark the real `sf_accounts_to_qb_customers` DAG end to end: N Salesforce accounts -> QuickBooks.

    .venv/bin/python bench/bench_accounts_flow.py                       # ON at 50,000, OFF at 2,000
    .venv/bin/python bench/bench_accounts_flow.py --accounts 5000 --off-accounts 500   # quick look

Runs the DAG from dags/ with `dag.test()` (every task in this process, the deferred QuickBooks upsert's
trigger in line) in a throwaway Airflow home on a freshly migrated SQLite metadata database, against:

- the Salesforce simulator over HTTPS (`running_salesforce`), its org seeded in process with N generated
  accounts carrying every field the mapping reads (a few dirty rows: postal codes too long for
  QuickBooks, e-mail addresses the quality rule refuses, names over 41 characters);
- the QuickBooks side: the bridge over real HTTP on SQLite, the company-file simulator, and the Web
  Connector simulator polling the bridge on a thread (as `tests/qb_live.py` does).

Two modes, each on its own fresh simulators, bridge, state store and staging folder:

(a) batching ON: the bridge's shipped default packing (`max_batch_requests` 100 per Web Connector
    exchange) and the flow's defaults (`batch_size` 200: the ListID write-back reads and writes 200
    Salesforce records per call; `rows_per_job` 2,000 customers per bridge job; `chunk_rows` 50,000:
    Salesforce query pages of the server's default size, 2,000);
(b) batching OFF: the bridge sends one qbXML request per exchange (`max_batch_requests=1`) and the run
    asks for the smallest sizes the flow's params allow (`batch_size=1`: one Salesforce record per
    write-back read and write; `chunk_rows=1000`, so query pages of 1,000 records). `rows_per_job`
    keeps its default in both modes: it sets how often the upsert waits for the Web Connector, not
    how many requests travel together.

OFF on the full N would take far longer than ON, so it runs on `--off-accounts` (default 2,000) and is
extrapolated linearly to N (labelled as such); ON is run at that small N too, so one ratio compares like
with like measured, and ON is measured in full at N. Counts come from the systems themselves: Web
Connector exchanges from the simulator's session reports (checked against the bridge's own
`receiveResponseXML` counter), Salesforce API calls from the simulator's per-call counters (checked
against the run report's `api_calls`).

Everything runs in one process (tasks, simulators, bridge and Web Connector threads share the GIL), so
absolute times are pessimistic; the ratios are what to compare between machines.

Scale: every step is linear in N. Two simulator paths that were not (`Id IN (...)` walked every
Salesforce account; each QuickBooks Ret looked its DataExts up by a table scan) are indexed, and the
QuickBooks upsert resumes from saved progress after each deferral instead of replaying every job
before it (`erpsync.operators.quickbooks_upsert`).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "sf_accounts_to_qb_customers"
TOKEN = secrets.token_urlsafe(32)  # a real-looking secret: weak static tokens are refused
COMPANY = "acme"
WARMUP = 50


# ---- environment (before anything imports airflow) -----------------------------------------------------


def prepare_airflow_home(work: Path) -> Path:
    """Point Airflow at a throwaway home with a SQLite metadata DB and migrate it (not timed)."""
    home = work / "airflow"
    home.mkdir(parents=True)
    os.environ.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        GX_ANALYTICS_ENABLED="false",
    )
    os.environ.setdefault("ERPSYNC_QBXML_SCHEMA_DIR", str(ROOT.parent / "shared" / "reference" / "qbxml"))
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return home


def load_dag():
    """Parse dags/<DAG_ID>.py the way the dag-processor does and register it so dag.test() works."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{DAG_ID}.py"))
    if bag.import_errors:
        raise SystemExit(f"the DAG does not import: {bag.import_errors}")
    sync_bag_to_db(bag, "dags-folder", None)
    dag = bag.get_dag(DAG_ID)
    for task in dag.tasks:
        task.retries = 0  # a failing step fails the run at once instead of waiting out its backoff
    return dag


# ---- generated Salesforce accounts ----------------------------------------------------------------------

_OWNERS = [
    ("Angela", "Richer"),
    ("Bob", "Smith"),
    ("Carla", "de Vries"),
    ("Dirk", "Jansen"),
    ("Eva", "Bakker"),
]
_WORDS = ["Acme", "Global", "Nordic", "Van der Berg", "Industrial", "Holding", "Trading", "Logistics"]
_FORMS = ["B.V.", "N.V.", "Ltd", "Inc.", "GmbH", "& Co", "Group"]
_CITIES = [
    "Amsterdam",
    "Rotterdam",
    "Utrecht",
    "Eindhoven",
    "Groningen",
    "Llanfairpwllgwyngyll Community Area",
]
_TYPES = ["Customer - Direct", "Customer - Channel", "Prospect", "Installation Partner", "Other", None]


def account(i: int, owner_id: str) -> dict[str, Any]:
    """Account i, deterministic; about 0.1 % too-long postal codes, 0.5 % refused e-mails, 1 % long names."""
    import random

    rng = random.Random(i)
    name = f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {rng.choice(_FORMS)} {i}"
    if i % 100 == 7:  # over QuickBooks' 41 characters: cut, the number first keeps it unique
        name = f"{i} Services and Maintenance Europe {rng.choice(_WORDS)} International Holding"
    street = f"{rng.choice(['Main Street', 'Keizersgracht', 'Industrieweg'])} {rng.randint(1, 999)}"
    suite = rng.choice(["", "", "", "\nSuite 4", "\nFloor 2\nBuilding C"])
    city = rng.choice(_CITIES)
    postal = "12345-6789-0000-9" if i % 1000 == 3 else rng.choice(["1011 AB", "3511 EF", "90210", "SW1A 1AA"])
    user = "info" if i % 200 != 11 else "bad"
    domain = "acme.x" if i % 200 == 11 else rng.choice(["example.com", "acme.nl", "firma.de"])
    return {
        "Name": name,
        "AccountNumber": f"A-{i:06d}",
        "Type": rng.choice(_TYPES),
        "BillingStreet": street + suite,
        "BillingCity": city,
        "BillingState": rng.choice(["NH", "ZH", "UT", "CA"]),
        "BillingPostalCode": postal,
        "BillingCountry": rng.choice(["Netherlands", "Germany", "United Kingdom", "US"]),
        "ShippingStreet": street if i % 3 else None,
        "ShippingCity": city if i % 3 else None,
        "ShippingPostalCode": "1011 AB" if i % 3 else None,
        "ShippingCountry": "Netherlands" if i % 3 else None,
        "Phone": f"+31 20 {rng.randint(1_000_000, 9_999_999)}",
        "Fax": "+31 20 7654321" if i % 5 == 0 else None,
        "Email__c": f"{user}.{i}@{domain}",
        "Description": f"Generated account {i}",
        "OwnerId": owner_id,
    }


def seed_accounts(sf, n: int) -> float:
    """Insert `n` accounts (and their owners) through the simulator's in-process org; return seconds."""
    from erpsync.sandbox.salesforce.schema import get_object

    started = time.perf_counter()
    org = sf.simulator.org
    users = []
    for first, last in _OWNERS:
        rid, errors = org.create(
            get_object("User"),
            {"Username": f"{first.lower()}@bench.test", "FirstName": first, "LastName": last,
             "Email": f"{first.lower()}@bench.test"},
            bypass_rules=True,
        )  # fmt: skip
        assert rid, errors
        users.append(rid)
    obj = get_object("Account")
    for i in range(n):
        rid, errors = org.create(obj, account(i, users[i % len(users)]), bypass_rules=True)
        if rid is None:
            raise RuntimeError(f"account {i} refused by the simulator: {errors}")
    return time.perf_counter() - started


# ---- the QuickBooks side --------------------------------------------------------------------------------


@dataclass
class QuickBooksStack:
    bridge: Any
    qb: Any
    wc: Any
    stop: threading.Event
    thread: threading.Thread
    sessions: list[Any] = field(default_factory=list)

    def connection_json(self) -> str:
        host, port = self.bridge.url.split("//", 1)[1].rsplit(":", 1)
        return json.dumps(
            {
                "conn_type": "qbwc_bridge",
                "host": host,
                "port": int(port),
                "schema": "http",
                "password": TOKEN,
                "extra": {"company": COMPANY, "timeout": 120},
            }
        )

    def exchanges(self) -> int:
        return sum(r.exchanges for r in list(self.sessions))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.wc.close()
        self.bridge.stop()
        self.qb.close()


def start_quickbooks(folder: Path, *, every: float, max_batch_requests: int) -> QuickBooksStack:
    """Bridge (SQLite) + company-file simulator + Web Connector simulator polling every `every` s."""
    from erpsync.sandbox.quickbooks import CompanyFile
    from erpsync.sandbox.runner import SandboxCA, SandboxContext
    from erpsync.sandbox.webconnector import WebConnectorSimulator, start_bridge

    folder.mkdir(parents=True, exist_ok=True)
    ctx = SandboxContext(data_dir=folder, ca=SandboxCA(folder / "ca"))
    bridge = start_bridge(
        ctx, companies={COMPANY: "pw"}, api_token=TOKEN, max_batch_requests=max_batch_requests
    )
    qb = CompanyFile(folder / "company.qbw")
    wc = WebConnectorSimulator(
        bridge.soap_url, COMPANY, "pw", qb, noop_wait=0.02, send_hcp=False, timeout=300, max_exchanges=10**7
    )
    stop = threading.Event()
    stack = QuickBooksStack(bridge, qb, wc, stop, threading.Thread())  # thread set below
    stack.thread = threading.Thread(
        target=wc.run_every, args=(every / 60, stop, stack.sessions.append), daemon=True, name="qbwc"
    )
    stack.thread.start()
    return stack


def bridge_counters() -> dict[str, float]:
    """The bridge's process-wide SOAP call counter by method (all outcomes)."""
    from erpsync.qbwc_bridge import metrics

    out: dict[str, float] = {}
    for key, value in list(metrics.SOAP_CALLS._values.items()):
        method = dict(key).get("method", "?")
        out[method] = out.get(method, 0) + value
    return out


def jobs_enqueued() -> float:
    from erpsync.qbwc_bridge import metrics

    return sum(metrics.JOBS_ENQUEUED._values.values())


# ---- a sampling profile of every thread ----------------------------------------------------------------


class ThreadSampler:
    """Sample every thread's stack every `interval` s (cProfile sees only the main thread, while the
    bridge, the simulators and the Web Connector run on others); count leaf and inclusive frames."""

    def __init__(self, interval: float = 0.005):
        from collections import Counter

        self.interval = interval
        self.leaf: Counter[tuple[str, str]] = Counter()
        self.inclusive: Counter[tuple[str, str]] = Counter()
        self.samples: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval):
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                thread = names.get(ident, "?").split("-")[0].split(" ")[0]
                self.samples[thread] += 1
                seen = set()
                first = True
                while frame is not None:
                    code = frame.f_code
                    where = f"{code.co_filename.rsplit('site-packages/', 1)[-1]}:{code.co_name}"
                    if first:
                        self.leaf[(thread, where)] += 1
                        first = False
                    if where not in seen:
                        self.inclusive[(thread, where)] += 1
                        seen.add(where)
                    frame = frame.f_back

    def __enter__(self) -> ThreadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def dump(self, path: str, top: int = 60) -> None:
        with open(path, "w") as out:
            out.write(f"samples per thread: {dict(self.samples.most_common())}\n\n== inclusive ==\n")
            for (thread, where), n in self.inclusive.most_common(top * 3):
                out.write(f"{n:8d}  {thread:12} {where}\n")
            out.write("\n== leaf ==\n")
            for (thread, where), n in self.leaf.most_common(top):
                out.write(f"{n:8d}  {thread:12} {where}\n")


# ---- one mode -------------------------------------------------------------------------------------------


@dataclass
class Mode:
    name: str
    accounts: int
    max_batch_requests: int
    conf: dict[str, Any]


def run_mode(dag, mode: Mode, work: Path, *, every: float, profile: str | None = None) -> dict[str, Any]:
    from erpsync.sandbox.salesforce.testing import running_salesforce
    from erpsync.state import StateStore

    folder = work / f"{mode.name}-{mode.accounts}"
    folder.mkdir(parents=True)
    state_url = f"sqlite:///{folder / 'state.db'}"
    os.environ["ERPSYNC_STATE_URL"] = state_url
    os.environ["ERPSYNC_STAGING_ROOT"] = str(folder / "staging")
    out: dict[str, Any] = {"mode": mode.name, "accounts": mode.accounts}
    # save_interval: the simulator would otherwise rewrite its whole org as JSON every 2 s of writes.
    with running_salesforce(folder / "sf", seed=False, save_interval=10**9) as sf:
        out["seed_seconds"] = seed_accounts(sf, mode.accounts)
        os.environ["AIRFLOW_CONN_SALESFORCE_DEFAULT"] = sf.connection_json(
            "password", retry_base_delay=0.05, bulk_poll_interval=0.1
        )
        qb = start_quickbooks(folder / "qb", every=every, max_batch_requests=mode.max_batch_requests)
        os.environ["AIRFLOW_CONN_QBWC_BRIDGE_DEFAULT"] = qb.connection_json()
        try:
            sf.simulator.stats.clear()
            soap_before = bridge_counters()
            jobs_before = jobs_enqueued()
            profiler = sampler = None
            if profile:
                import cProfile

                sampler = ThreadSampler().__enter__()
                profiler = cProfile.Profile()
                profiler.enable()
            started, cpu_started = time.perf_counter(), time.process_time()
            dr = dag.test(run_conf={"dry_run": False, "full_refresh": True, **mode.conf})
            out["seconds"] = time.perf_counter() - started
            if sampler is not None:
                sampler.__exit__(None, None, None)
                sampler.dump(f"{profile}.threads.txt")
            # CPU of the whole process (tasks, simulators, bridge, Web Connector): moves less with load.
            out["cpu_seconds"] = time.process_time() - cpu_started
            out["load_average"] = os.getloadavg()[0]
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(profile)
            time.sleep(0.3)  # let the Web Connector thread hand in its last session report
            soap_after = bridge_counters()
            out["bridge_jobs"] = int(jobs_enqueued() - jobs_before)
            out["state"] = dr.state
            tis = {ti.task_id: ti for ti in dr.get_task_instances()}
            out["task_states"] = {t: ti.state for t, ti in tis.items()}
            out["task_seconds"] = {
                t: (ti.end_date - ti.start_date).total_seconds()
                for t, ti in tis.items()
                if ti.start_date and ti.end_date
            }
            out["exchanges"] = qb.exchanges()
            out["bridge_receive"] = int(
                soap_after.get("receiveResponseXML", 0) - soap_before.get("receiveResponseXML", 0)
            )
            out["wc_sessions"] = len(qb.sessions)
            out["qb_documents"] = qb.qb.stats["documents"]
            out["qb_requests"] = qb.qb.stats["requests"]
            out["qb_customers"] = qb.qb.count("Customer")
            out["sf_calls"] = sum(sf.simulator.stats.values())
            out["sf_calls_by_kind"] = dict(sf.simulator.stats)
            accounts = sf.simulator.org.tables["Account"].values()
            out["sf_list_ids"] = sum(1 for a in accounts if a.get("QB_ListID__c"))
            run = StateStore(state_url).get_run(DAG_ID, dr.run_id) or {}
            report = run.get("report") or {}
            out["report_api_calls"] = report.get("api_calls")
            out["report_counts"] = report.get("counts") or {
                k: run.get(k) for k in ("created", "updated", "skipped", "quarantined", "failed")
            }
            wb = tis["target.write_back_list_id"].xcom_pull(task_ids="target.write_back_list_id")
            out["writeback"] = wb
        finally:
            qb.close()
    return out


# ---- main -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=50_000, help="accounts for the batching-ON run")
    parser.add_argument(
        "--off-accounts",
        type=int,
        default=2_000,
        help="accounts for the batching-OFF run (extrapolated linearly to --accounts when smaller)",
    )
    parser.add_argument("--batch-size", type=int, default=200, help="batch_size param of the ON run")
    parser.add_argument(
        "--every", type=float, default=0.05, help="seconds between Web Connector runs (QBWC Auto-Run)"
    )
    parser.add_argument(
        "--sizes",
        default="",
        help="comma-separated ON sizes to measure instead (e.g. 10000,25000,50000: linearity); no OFF run",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="cProfile the largest ON run's dag.test() (main thread: the tasks) into FILE",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", action="store_true", help="also print every figure as JSON")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    if args.accounts < 1 or not 1 <= args.off_accounts <= args.accounts:
        parser.error("need 1 <= --off-accounts <= --accounts")

    work = Path(tempfile.mkdtemp(prefix="bench-accounts-flow-"))
    try:
        t0 = time.perf_counter()
        prepare_airflow_home(work)
        dag = load_dag()
        setup = time.perf_counter() - t0
        on_conf = {"batch_size": args.batch_size, "chunk_rows": 50_000}
        off_conf = {"batch_size": 1, "chunk_rows": 1000}
        if sizes:
            modes = [Mode("ON", n, 100, on_conf) for n in sizes]
        else:
            modes = [Mode("OFF", args.off_accounts, 1, off_conf)]
            if args.off_accounts < args.accounts:
                modes.append(Mode("ON", args.off_accounts, 100, on_conf))
            modes.append(Mode("ON", args.accounts, 100, on_conf))
        print(f"[bench] warm-up run ({WARMUP} accounts, not reported) ...", flush=True)
        warm = run_mode(dag, Mode("warmup", WARMUP, 100, on_conf), work, every=args.every)
        if warm["state"] != "success":
            print(json.dumps(warm, indent=2, default=str))
            return 1
        results = []
        for mode in modes:
            print(f"[bench] {mode.name} at {mode.accounts:,} accounts ...", flush=True)
            profile = args.profile if mode is modes[-1] else None
            r = run_mode(dag, mode, work, every=args.every, profile=profile)
            print(f"[bench]   {r['state']} in {r['seconds']:.1f} s", flush=True)
            steps = ", ".join(f"{label} {r['task_seconds'].get(tid, 0):.1f}" for label, tid in STEPS)
            print(
                f"[bench]   CPU {r['cpu_seconds']:.1f} s, load {r['load_average']:.1f}, "
                f"exchanges {r['exchanges']}, created {r['report_counts'].get('created')}; steps (s): {steps}",
                flush=True,
            )
            results.append(r)
        if sizes:
            report_sizes(results, args, setup)
        else:
            report(results, args, setup)
        if args.json:
            print(json.dumps(results, indent=2, default=str))
        return 0 if all(r["state"] == "success" for r in results) else 1
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


STEPS = [
    ("validate", "validate"),
    ("extract", "source.extract"),
    ("check source", "source.check"),
    ("map", "transform.map"),
    ("check target", "transform.check"),
    ("plan", "transform.plan"),
    ("upsert (bridge)", "target.upsert"),
    ("ListID write-back", "target.write_back_list_id"),
    ("verify", "target.verify"),
    ("report", "report"),
]


def report_sizes(results: list[dict[str, Any]], args, setup: float) -> None:
    """ON at several sizes: wall and step seconds per size, and seconds per 1,000 accounts (linearity)."""
    width = 34
    colw = 14
    print()
    print(f"{'ON, dag.test()':{width}}" + "".join(f"{r['accounts']:>{colw},}" for r in results))
    print("-" * (width + colw * len(results)))
    print(f"{'run state':{width}}" + "".join(f"{r['state']:>{colw}}" for r in results))
    print(f"{'wall time of dag.test() (s)':{width}}" + "".join(f"{r['seconds']:>{colw}.1f}" for r in results))
    per_k = [r["seconds"] / r["accounts"] * 1000 for r in results]
    print(f"{'  per 1,000 accounts (s)':{width}}" + "".join(f"{v:>{colw}.2f}" for v in per_k))
    cpu = [r["cpu_seconds"] for r in results]
    print(f"{'CPU of the process (s)':{width}}" + "".join(f"{v:>{colw}.1f}" for v in cpu))
    cpu_k = [r["cpu_seconds"] / r["accounts"] * 1000 for r in results]
    print(f"{'  per 1,000 accounts (s)':{width}}" + "".join(f"{v:>{colw}.2f}" for v in cpu_k))
    print(
        f"{'load average at the end (1 min)':{width}}"
        + "".join(f"{r['load_average']:>{colw}.1f}" for r in results)
    )
    for label, fn in (
        ("Web Connector exchanges", lambda r: r["exchanges"]),
        ("Salesforce API calls", lambda r: r["sf_calls"]),
        ("customers created", lambda r: r["report_counts"].get("created")),
        ("quarantined", lambda r: r["report_counts"].get("quarantined")),
        ("QuickBooks customers", lambda r: r["qb_customers"]),
        ("accounts with QB_ListID__c", lambda r: r["sf_list_ids"]),
    ):
        print(f"{label:{width}}" + "".join(f"{_fmt(fn(r)):>{colw}}" for r in results))
    print("step seconds (task start to end)")
    for label, tid in STEPS:
        cells = "".join(f"{_fmt(r['task_seconds'].get(tid), 1):>{colw}}" for r in results)
        print(f"{'  ' + label:{width}}" + cells)
    print(
        f"Web Connector polls every {args.every} s; setup {setup:.1f} s; seeding (in process) "
        + ", ".join(f"{r['accounts']:,}: {r['seed_seconds']:.1f} s" for r in results)
    )


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def report(results: list[dict[str, Any]], args, setup: float) -> None:
    """Print one column per run (plus OFF extrapolated to N when it ran smaller) and the ratios."""
    off = next(r for r in results if r["mode"] == "OFF")
    on_small = next((r for r in results if r["mode"] == "ON" and r["accounts"] == off["accounts"]), None)
    on_full = [r for r in results if r["mode"] == "ON"][-1]
    scale = on_full["accounts"] / off["accounts"]
    cols: list[tuple[str, dict[str, Any], float]] = [(f"OFF {off['accounts']:,}", off, 1.0)]
    if scale != 1:
        cols.append((f"OFF->{on_full['accounts']:,} (x{scale:g})", off, scale))
    if on_small is not None and on_small is not on_full:
        cols.append((f"ON {on_small['accounts']:,}", on_small, 1.0))
    cols.append((f"ON {on_full['accounts']:,}", on_full, 1.0))

    def sf(r, kind):
        return sum(v for k, v in r["sf_calls_by_kind"].items() if k.startswith(kind))

    rows: list[tuple[str, Any]] = [
        ("run state", lambda r: r["state"]),
        ("wall time of dag.test() (s)", lambda r: r["seconds"]),
        ("Web Connector exchanges", lambda r: r["exchanges"]),
        ("  bridge receiveResponseXML", lambda r: r["bridge_receive"]),
        ("  Web Connector sessions", lambda r: r["wc_sessions"]),
        ("bridge jobs", lambda r: r["bridge_jobs"]),
        ("qbXML requests", lambda r: r["qb_requests"]),
        ("Salesforce API calls (simulator)", lambda r: r["sf_calls"]),
        ("  query + queryMore pages", lambda r: sf(r, "GET query")),
        ("  collections (write-back)", lambda r: sf(r, "PATCH composite")),
        ("  describe", lambda r: sf(r, "GET sobjects")),
        ("run report api_calls", lambda r: r["report_api_calls"]),
        (
            "write-back calls (own XCom)",
            lambda r: ((r.get("writeback") or {}).get("calls") or {}).get("total"),
        ),
        ("customers created", lambda r: r["report_counts"].get("created")),
        ("quarantined", lambda r: r["report_counts"].get("quarantined")),
        ("QuickBooks customers", lambda r: r["qb_customers"]),
        ("accounts with QB_ListID__c", lambda r: r["sf_list_ids"]),
    ]
    step_rows = [(f"  {label}", (lambda t: lambda r: r["task_seconds"].get(t))(tid)) for label, tid in STEPS]
    extrapolated = {
        "wall time of dag.test() (s)",
        "Web Connector exchanges",
        "  bridge receiveResponseXML",
        "bridge jobs",
        "qbXML requests",
        "Salesforce API calls (simulator)",
        "  query + queryMore pages",
        "  collections (write-back)",
        "run report api_calls",
        "write-back calls (own XCom)",
        "customers created",
        "quarantined",
        "QuickBooks customers",
        "accounts with QB_ListID__c",
    }
    width = 34
    colw = max(16, *(len(c[0]) + 2 for c in cols))
    print()
    print(f"{'sf_accounts_to_qb_customers, dag.test()':{width}}" + "".join(f"{c[0]:>{colw}}" for c in cols))
    print("-" * (width + colw * len(cols)))

    def line(label, fn, digits=0, is_step=False):
        cells = []
        for _, r, k in cols:
            v = fn(r)
            if k != 1 and not isinstance(v, str) and v is not None:
                v = v * k if is_step or label in extrapolated else None
            cells.append(_fmt(v, digits))
        print(f"{label:{width}}" + "".join(f"{c:>{colw}}" for c in cells))

    for label, fn in rows:
        line(label, fn, 1 if "(s)" in label else 0)
    print("step seconds (task start to end)")
    for label, fn in step_rows:
        line(label, fn, 1, is_step=True)

    def ratio(a, b):
        return "-" if not b else f"{a / b:,.1f} x"

    print()
    print("ratios OFF / ON")
    pairs = []
    if on_small is not None:
        pairs.append((f"measured, both at {off['accounts']:,}", off, on_small, 1.0))
    if scale != 1:
        pairs.append((f"at {on_full['accounts']:,} (OFF extrapolated linearly)", off, on_full, scale))
    for label, a, b, k in pairs:
        print(
            f"  {label:44} wall {ratio(a['seconds'] * k, b['seconds'])}, "
            f"exchanges {ratio(a['exchanges'] * k, b['exchanges'])}, "
            f"Salesforce calls {ratio(a['sf_calls'] * k, b['sf_calls'])}, "
            f"upsert step {ratio(a['task_seconds'].get('target.upsert', 0) * k, b['task_seconds'].get('target.upsert'))}"
        )
    print()
    print(
        f"ON  = bridge max_batch_requests=100 (shipped default), run_conf batch_size={args.batch_size} "
        "(write-back records per Salesforce call), chunk_rows=50000 (Salesforce pages of the server "
        "default, 2,000), rows_per_job 2000"
    )
    print(
        "OFF = bridge max_batch_requests=1 (one qbXML request per exchange), run_conf batch_size=1 "
        "(one record per write-back call), chunk_rows=1000 (pages of 1,000: the smallest the params "
        "allow), rows_per_job 2000"
    )
    if scale != 1:
        print(
            f"The OFF column 'OFF->{on_full['accounts']:,}' is NOT measured: the {off['accounts']:,}-account OFF "
            f"run multiplied by {scale:g} (linear extrapolation)."
        )
    print(
        f"Web Connector polls every {args.every} s; every run on fresh simulators, bridge and state store; "
        f"a {WARMUP}-account warm-up run first pays the imports (not shown). Setup (Airflow DB migrate, "
        f"DAG parse) {setup:.1f} s; seeding the org (in process) "
        + ", ".join(f"{r['accounts']:,}: {r['seed_seconds']:.1f} s" for r in results)
        + "."
    )


if __name__ == "__main__":
    sys.exit(main())
