"""Benchmark the real `sf_accounts_to_autotask` DAG: Autotask calls per run against the 10,000/hour budget.

    .venv/bin/python bench/bench_autotask_flow.py                          # 20,000 accounts, 50,000 contacts
    .venv/bin/python bench/bench_autotask_flow.py --accounts 2000 --contacts 5000 --first-run-latency-ms 0

Runs the DAG from dags/ with `dag.test()` (every task in this process) in a throwaway Airflow home on a
freshly migrated SQLite metadata database, against the Salesforce simulator over HTTPS (its org seeded in
process with the generated accounts and contacts) and the Autotask simulator over HTTPS (the seeded,
dirty tenant; every API call delayed by ``--latency-ms``, 150 by default, like a WAN round trip).

Each mode runs three times on its own fresh simulators, state store and staging folder:

1. **first run** (``full_refresh``): every account becomes a company, then every contact a contact
   (Autotask has no batch write: one call per record written, whatever the batching);
2. **incremental run** (``full_refresh`` off: from the flow's cursor to now) after ``--changes``
   Salesforce records changed (a new phone number; alternately an account and a contact), on a fresh
   (cold) call ledger: every cache empty, as on the first run of a day;
3. **next run**, the schedule's next run 20 minutes later, after another ``--changes`` changes: the
   same ledger with its entries made 20 minutes older (`age_ledger`; the hook reads real time), so
   what expires between two scheduled runs (picklists after 15 minutes, the threshold reading after a
   minute, cached reference pairs after 5) is read again and what lasts (field and UDF definitions,
   Countries: a day) is not. This is the steady state of a deployment.

Modes:

- **batched** (the shipped flow): key reads, reference resolution and verify ask for 500 ids per query
  (Autotask's 500 OR conditions), pages of 500 rows, ``batch_size`` 500;
- **one record per call** (the baseline): the same flow with every query asking for one id and
  returning one row per page (``query_in`` chunks of 1, the adapter's key batch 1, ``MaxRecords`` 1)
  and ``batch_size`` 1. It runs on a sample (``--baseline-accounts`` / ``--baseline-contacts``) and its
  first run is extrapolated linearly to the full size (labelled so); its incremental run makes the same
  number of changes and is measured, not extrapolated.

Calls are counted by the Autotask simulator (every authenticated call, ``ThresholdInformation``
included, as the tenant's threshold counts them) and checked against the run report's ``api_calls``.

The tenant's real threshold (10,000 per rolling hour) cannot absorb a first run of 70,000 records: the
simulator's threshold is raised for the first run (the report says how many hours of the budget it would
take) and set back to 10,000, with an empty window and a fresh call ledger, for the incremental run,
which therefore runs under the real rules (the hook's 50 % share, its pacing and stop).

A first run at 150 ms per call takes hours (one call per record, sequential); ``--first-run-latency-ms``
sets the first run's latency apart (0 measures the simulator and the flow alone; the report then adds
calls x latency as an estimate, labelled so).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "sf_accounts_to_autotask"
CONTACTS_FLOW = "sf_contacts_to_autotask"
HOURLY_THRESHOLD = 10_000
BUDGET_SHARE = 0.5  # the hook's default share of the tenant's threshold
SCHEDULE_SECONDS = 20 * 60  # the flow runs every 20 minutes
FIRST_RUN_THRESHOLD = 10**8


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


# ---- generated Salesforce accounts and contacts ---------------------------------------------------------

# Angela Richer and Bob Smith are active Autotask resources in the seeded tenant; the others are not
# (their companies get the default account manager).
_OWNERS = [("Angela", "Richer"), ("Bob", "Smith"), ("Carla", "de Vries"), ("Dirk", "Jansen")]
_WORDS = ["Acme", "Global", "Nordic", "Van der Berg", "Industrial", "Holding", "Trading", "Logistics"]
_FORMS = ["B.V.", "N.V.", "Ltd", "Inc.", "GmbH", "Group"]
_CITIES = ["Amsterdam", "Rotterdam", "Utrecht", "Eindhoven", "Groningen"]
_TYPES = ["Customer - Direct", "Customer - Channel", "Prospect", "Installation Partner", "Other", None]
_FIRST = ["Anna", "Bram", "Chris", "Daan", "Eva", "Fenna", "Gijs", "Hanna", "Ivo", "Julia"]
_LAST = ["de Jong", "Jansen", "de Vries", "van den Berg", "Bakker", "Visser", "Smit", "Meijer"]


def account(i: int, owner_id: str, parent_id: str | None) -> dict[str, Any]:
    rng = random.Random(i)
    return {
        "Name": f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {rng.choice(_FORMS)} {i}",
        "AccountNumber": f"A-{i:06d}",
        "Type": rng.choice(_TYPES),
        "BillingStreet": f"{rng.choice(['Main Street', 'Keizersgracht', 'Industrieweg'])} {rng.randint(1, 999)}",
        "BillingCity": rng.choice(_CITIES),
        "BillingState": rng.choice(["NH", "ZH", "UT"]),
        "BillingPostalCode": rng.choice(["1011 AB", "3511 EF", "90210"]),
        "BillingCountry": "Netherlands",
        "Phone": f"+31 20 {rng.randint(1_000_000, 9_999_999)}",
        "Fax": "+31 20 7654321" if i % 5 == 0 else None,
        "Website": f"https://www.example-{i}.com" if i % 2 else None,
        "AnnualRevenue": rng.randint(0, 50) * 100_000 or None,
        "Sic": f"{rng.randint(1000, 9999)}" if i % 3 == 0 else None,
        "TickerSymbol": f"T{i % 1000:03d}" if i % 50 == 0 else None,
        "Rating": rng.choice(["Hot", "Warm", "Cold", None]),
        "OwnerId": owner_id,
        "ParentId": parent_id,
    }


def contact(j: int, account_id: str | None) -> dict[str, Any]:
    rng = random.Random(1_000_000 + j)
    return {
        "FirstName": rng.choice(_FIRST),
        "LastName": f"{rng.choice(_LAST)} {j}",  # unique: the match rule is company + first + last name
        "AccountId": account_id,
        "Email": f"person.{j}@example.com",
        "Phone": f"+31 30 {rng.randint(1_000_000, 9_999_999)}",
        "MobilePhone": f"+31 6 {rng.randint(10_000_000, 99_999_999)}" if j % 2 else None,
        "Title": rng.choice(["CEO", "CFO", "Buyer", None]),
        "MailingStreet": f"Stationsplein {rng.randint(1, 200)}",
        "MailingCity": rng.choice(_CITIES),
        "MailingPostalCode": "1012 AB",
    }


def seed_salesforce(sf, accounts: int, contacts: int) -> tuple[list[str], list[str], float]:
    """Insert owners, `accounts` accounts (every 20th with a parent) and `contacts` contacts in process.

    Every 500th contact has no account (quarantined by the flow, the extension's rule). Returns the
    account ids, contact ids and seconds.
    """
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
        if rid is None:
            raise RuntimeError(f"owner {first} {last} refused by the Salesforce simulator: {errors}")
        users.append(rid)
    account_ids: list[str] = []
    obj = get_object("Account")
    for i in range(accounts):
        parent = account_ids[i // 20] if i % 20 == 19 and account_ids else None
        rid, errors = org.create(obj, account(i, users[i % len(users)], parent), bypass_rules=True)
        if rid is None:
            raise RuntimeError(f"account {i} refused by the Salesforce simulator: {errors}")
        account_ids.append(rid)
    contact_ids: list[str] = []
    obj = get_object("Contact")
    for j in range(contacts):
        owner = None if j % 500 == 499 else account_ids[j % len(account_ids)]
        rid, errors = org.create(obj, contact(j, owner), bypass_rules=True)
        if rid is None:
            raise RuntimeError(f"contact {j} refused by the Salesforce simulator: {errors}")
        contact_ids.append(rid)
    return account_ids, contact_ids, time.perf_counter() - started


def change_records(
    sf, account_ids: list[str], contact_ids: list[str], n: int, round_: int = 0
) -> dict[str, int]:
    """Give `n` records a new phone number, alternately an account and a contact (spread over the org);
    `round_` makes the numbers new again for a later run."""
    from erpsync.sandbox.salesforce.schema import get_object

    org = sf.simulator.org
    done = {"Account": 0, "Contact": 0}
    placeable = [c for j, c in enumerate(contact_ids) if j % 500 != 499]
    for k in range(n):
        name, ids = ("Account", account_ids) if k % 2 == 0 else ("Contact", placeable)
        rid = ids[(k // 2 * 7919) % len(ids)]  # a prime stride: different records, spread out
        errors = org.update(get_object(name), rid, {"Phone": f"+31 10 {5_000_000 + 100_000 * round_ + k}"})
        if errors:
            raise RuntimeError(f"could not change {name} {rid}: {errors}")
        done[name] += 1
    return done


# ---- the one-record-per-call baseline -------------------------------------------------------------------


@contextmanager
def one_record_per_call():
    """Make every Autotask query ask for one id and return one row per page, for this process."""
    from erpsync.adapters import autotask as adapter
    from erpsync.hooks.autotask import AutotaskHook

    saved = (adapter.KEY_BATCH, AutotaskHook.query_in, AutotaskHook.query_pages)
    query_in, query_pages = saved[1], saved[2]

    def query_in_1(self, entity, field_name, values, *, filter=None, fields=None, chunk=1):
        return query_in(self, entity, field_name, values, filter=filter, fields=fields, chunk=1)

    def query_pages_1(self, entity, filter=None, *, fields=None, max_records=None):
        return query_pages(self, entity, filter, fields=fields, max_records=1)

    adapter.KEY_BATCH = 1
    AutotaskHook.query_in = query_in_1
    AutotaskHook.query_pages = query_pages_1
    try:
        yield
    finally:
        adapter.KEY_BATCH, AutotaskHook.query_in, AutotaskHook.query_pages = saved


# ---- one mode: first run + incremental run --------------------------------------------------------------


@dataclass
class Mode:
    name: str
    accounts: int
    contacts: int
    batch_size: int
    one_per_call: bool


def _set_latency(at, latency_ms: float) -> None:
    at.admin("POST", "faults", {"latency_ms": latency_ms, "rules": []})


def _run(dag, at, state_url: str, conf: dict[str, Any]) -> dict[str, Any]:
    from erpsync.state import StateStore

    at.admin("DELETE", "stats")
    started = time.perf_counter()
    # No logical date: a manual run, which reads from the flow's cursor (the last run's newest change) to now.
    dr = dag.test(logical_date=None, run_conf={"dry_run": False, **conf})
    seconds = time.perf_counter() - started
    stats = at.admin("GET", "stats")
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    store = StateStore(state_url)
    out: dict[str, Any] = {
        "state": dr.state,
        "seconds": seconds,
        "calls": stats["total"],
        "calls_by_kind": stats["calls"],
        "failed_tasks": sorted(t for t, ti in tis.items() if ti.state in ("failed", "upstream_failed")),
        "task_seconds": {
            t: (ti.end_date - ti.start_date).total_seconds()
            for t, ti in tis.items()
            if ti.start_date and ti.end_date
        },
    }
    for flow, key in ((DAG_ID, "companies"), (CONTACTS_FLOW, "contacts")):
        report = (store.get_run(flow, dr.run_id) or {}).get("report") or {}
        out[key] = {
            "counts": report.get("counts") or {},
            "api_calls": report.get("api_calls"),
            "status": report.get("status"),
        }
    out["threshold"] = at.admin("GET", "threshold")
    return out


def run_mode(dag, mode: Mode, work: Path, args) -> dict[str, Any]:
    from erpsync.hooks import autotask as at_hook
    from erpsync.sandbox.autotask.testing import running_autotask
    from erpsync.sandbox.salesforce.testing import running_salesforce

    folder = work / f"{mode.name}-{mode.accounts}"
    folder.mkdir(parents=True)
    state_url = f"sqlite:///{folder / 'state.db'}"
    os.environ["ERPSYNC_STATE_URL"] = state_url
    os.environ["ERPSYNC_STAGING_ROOT"] = str(folder / "staging")
    at_hook._ZONES.clear()
    out: dict[str, Any] = {"mode": mode.name, "accounts": mode.accounts, "contacts": mode.contacts}
    with ExitStack() as stack:
        # save_interval: both simulators would otherwise rewrite their whole store as JSON every 2 s of writes.
        sf = stack.enter_context(running_salesforce(folder / "sf", seed=False, save_interval=10**9))
        at = stack.enter_context(
            running_autotask(
                folder / "at", threshold=FIRST_RUN_THRESHOLD, latency_ms=args.first_run_latency_ms,
                save_interval=10**9,
            )
        )  # fmt: skip
        if mode.one_per_call:
            stack.enter_context(one_record_per_call())
        account_ids, contact_ids, out["seed_seconds"] = seed_salesforce(sf, mode.accounts, mode.contacts)
        os.environ["AIRFLOW_CONN_SALESFORCE_DEFAULT"] = sf.connection_json("password", retry_base_delay=0.05)
        os.environ["AIRFLOW_CONN_AUTOTASK_DEFAULT"] = at.connection_json(
            ledger_path=str(folder / "ledger1.db")
        )
        conf = {"batch_size": mode.batch_size}
        out["first"] = _run(dag, at, state_url, {**conf, "full_refresh": True})
        out["first"]["latency_ms"] = args.first_run_latency_ms
        out["autotask_companies"] = len(at.simulator.tenant.records["companies"])
        out["autotask_contacts"] = len(at.simulator.tenant.records["contacts"])
        if out["first"]["state"] != "success":
            return out

        # The incremental run under the real rules: threshold 10,000 with an empty window, a fresh ledger.
        out["changed"] = change_records(sf, account_ids, contact_ids, args.changes)
        at.simulator.threshold.limit = HOURLY_THRESHOLD
        at.admin("POST", "threshold", {"clear": True})
        _set_latency(at, args.latency_ms)
        os.environ["AIRFLOW_CONN_AUTOTASK_DEFAULT"] = at.connection_json(
            ledger_path=str(folder / "ledger2.db")
        )
        at_hook._ZONES.clear()
        out["incremental"] = _run(dag, at, state_url, {**conf, "full_refresh": False})
        out["incremental"]["latency_ms"] = args.latency_ms
        if out["incremental"]["state"] != "success":
            return out

        # The next scheduled run, 20 minutes later: the same ledger, its entries 20 minutes older.
        change_records(sf, account_ids, contact_ids, args.changes, round_=1)
        age_ledger(folder / "ledger2.db", SCHEDULE_SECONDS)
        at_hook._ZONES.clear()
        out["steady"] = _run(dag, at, state_url, {**conf, "full_refresh": False})
        out["steady"]["latency_ms"] = args.latency_ms
    return out


def age_ledger(path: Path, seconds: float) -> None:
    """Make the call ledger look `seconds` older (what the schedule's wait does; the hook reads real time)."""
    import sqlite3

    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE metadata SET read_at = read_at - ?", (seconds,))
        db.execute("UPDATE thresholds SET read_at = read_at - ?", (seconds,))
        db.execute("UPDATE zones SET found_at = found_at - ?", (seconds,))
        db.execute("UPDATE calls SET minute = minute - ?", (int(seconds // 60),))
    db.close()


# ---- report ---------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def _counts(r: dict[str, Any], key: str) -> str:
    c = r[key]["counts"]
    return "/".join(str(c.get(k, 0)) for k in ("created", "updated", "skipped", "quarantined"))


def report(results: list[dict[str, Any]], args, setup: float) -> None:
    batched = results[0]
    base = results[1] if len(results) > 1 else None
    scale = batched["accounts"] / base["accounts"] if base else 1.0
    cols: list[tuple[str, dict[str, Any], str, float]] = [
        (f"batched first {batched['accounts']:,}", batched, "first", 1.0),
        ("batched incremental", batched, "incremental", 1.0),
        ("batched next run", batched, "steady", 1.0),
    ]
    if base:
        cols.append((f"1/call first {base['accounts']:,}", base, "first", 1.0))
        if scale != 1:
            cols.append((f"1/call first ->x{scale:g} (extrap.)", base, "first", scale))
        cols.append(("1/call incremental", base, "incremental", 1.0))
        cols.append(("1/call next run", base, "steady", 1.0))
    width = 40
    colw = max(18, *(len(c[0]) + 2 for c in cols))
    print()
    print(f"{'sf_accounts_to_autotask, dag.test()':{width}}" + "".join(f"{c[0]:>{colw}}" for c in cols))
    print("-" * (width + colw * len(cols)))

    def line(label: str, fn, digits: int = 0, scalable: bool = False) -> None:
        cells = []
        for _, r, run, k in cols:
            v = fn(r, r.get(run)) if r.get(run) else None
            if k != 1 and not isinstance(v, str) and v is not None:
                v = v * k if scalable else None
            cells.append(_fmt(v, digits))
        print(f"{label:{width}}" + "".join(f"{c:>{colw}}" for c in cells))

    line("run state", lambda r, x: x["state"])
    line("latency per call (ms)", lambda r, x: x["latency_ms"])
    line("wall time of dag.test() (s)", lambda r, x: x["seconds"], 1, True)
    line(
        "  + calls x latency not applied (est.)",
        lambda r, x: (
            x["seconds"] + x["calls"] * (args.latency_ms - x["latency_ms"]) / 1000
            if x["latency_ms"] != args.latency_ms
            else None
        ),
        1,
        True,
    )
    line("Autotask calls (simulator)", lambda r, x: x["calls"], 0, True)
    line("  writes (POST/PATCH/PUT)", lambda r, x: _writes(x), 0, True)
    line("  reads (queries, pages, metadata) = fixed", lambda r, x: x["calls"] - _writes(x), 0, True)
    line(
        "  run reports' api_calls",
        lambda r, x: sum(x[k]["api_calls"] or 0 for k in ("companies", "contacts")),
        0,
        True,
    )
    line("% of 10,000/hour", lambda r, x: 100 * x["calls"] / HOURLY_THRESHOLD, 2, True)
    line("hours of the 50 % share", lambda r, x: x["calls"] / (BUDGET_SHARE * HOURLY_THRESHOLD), 2, True)
    line("companies c/u/s/q", lambda r, x: _counts(x, "companies"))
    line("contacts c/u/s/q", lambda r, x: _counts(x, "contacts"))
    print()
    print("calls by kind (simulator):")
    for name, r, run, k in cols:
        if k == 1 and r.get(run):
            kinds = ", ".join(f"{kk} {v}" for kk, v in sorted(r[run]["calls_by_kind"].items()))
            print(f"  {name}: {kinds}")
    inc = batched.get("incremental")
    for key, label in (("incremental", "cold ledger"), ("steady", "next run, 20 minutes later")):
        run = batched.get(key)
        if not run:
            continue
        verdict = "met" if run["calls"] <= HOURLY_THRESHOLD // 100 else "NOT met"
        print(
            f"goal: incremental run <= 1 % of the hourly budget ({HOURLY_THRESHOLD // 100} calls), {label}: "
            f"{run['calls']} calls ({_writes(run)} writes + {run['calls'] - _writes(run)} fixed) -> {verdict} "
            f"({args.changes} changes; Autotask has no batch write, so each changed record costs one write call)"
        )
    if inc:
        if base and base.get("incremental"):
            b = base["incremental"]
            print(
                f"incremental, one record per call / batched: calls {b['calls'] / max(inc['calls'], 1):.1f} x, "
                f"wall {b['seconds'] / max(inc['seconds'], 1e-9):.1f} x (both measured, same {args.changes} changes)"
            )
        if base and base.get("first"):
            f1, fb = batched["first"], base["first"]
            print(
                f"first run, one record per call / batched at {batched['accounts']:,} accounts: calls "
                f"{fb['calls'] * scale / max(f1['calls'], 1):.2f} x"
                + (" (baseline extrapolated linearly)" if scale != 1 else " (both measured)")
            )
    print()
    print(
        f"batched = the shipped flow (500 ids per query, pages of 500, batch_size {args.batch_size}); "
        "1/call = the same flow with query_in chunks of 1, the adapter's key batch 1, MaxRecords 1, batch_size 1."
    )
    if scale != 1 and base:
        print(
            f"The '->x{scale:g}' column is NOT measured: the {base['accounts']:,}-account / {base['contacts']:,}-contact "
            f"baseline first run multiplied by {scale:g}."
        )
    print(
        f"First runs with the simulator's threshold raised to {FIRST_RUN_THRESHOLD:,}; incremental runs at the real "
        f"{HOURLY_THRESHOLD:,} with an empty window. Setup (Airflow DB migrate, DAG parse) {setup:.1f} s; "
        "seeding Salesforce (in process) "
        + ", ".join(f"{r['accounts']:,}/{r['contacts']:,}: {r['seed_seconds']:.1f} s" for r in results)
        + f". Load average at start / end: {args.load_start} / {_load()}."
    )


def _writes(x: dict[str, Any]) -> int:
    """Write calls among the simulator's per-kind counts ("POST Companies", "PATCH Companies/{id}/Contacts"...)."""
    return sum(
        v
        for k, v in x["calls_by_kind"].items()
        if k.split(" ", 1)[0] in ("POST", "PATCH", "PUT") and "query" not in k
    )


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# ---- main -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=20_000, help="Salesforce accounts (batched mode)")
    parser.add_argument("--contacts", type=int, default=50_000, help="Salesforce contacts (batched mode)")
    parser.add_argument("--changes", type=int, default=100, help="records changed before the incremental run")
    parser.add_argument("--latency-ms", type=float, default=150.0, help="added latency per Autotask call")
    parser.add_argument(
        "--first-run-latency-ms",
        type=float,
        default=None,
        help="latency of the first runs (default --latency-ms; 0 to measure the flow and simulator alone, "
        "the report then adds calls x latency as an estimate)",
    )
    parser.add_argument(
        "--baseline-accounts", type=int, default=200, help="accounts of the baseline's sample"
    )
    parser.add_argument(
        "--baseline-contacts", type=int, default=500, help="contacts of the baseline's sample"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-record-per-call baseline")
    parser.add_argument("--batch-size", type=int, default=500, help="batch_size param of the batched mode")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", action="store_true", help="also print every figure as JSON")
    args = parser.parse_args(argv)
    if args.first_run_latency_ms is None:
        args.first_run_latency_ms = args.latency_ms
    if min(args.accounts, args.contacts, args.baseline_accounts, args.baseline_contacts) < 1:
        parser.error("accounts and contacts must be at least 1")
    if not args.no_baseline and args.baseline_accounts > args.accounts:
        parser.error("--baseline-accounts must not exceed --accounts")
    if not 1 <= args.changes <= 2 * args.baseline_accounts:
        parser.error("--changes must be between 1 and twice the smallest number of accounts")
    args.load_start = _load()

    work = Path(tempfile.mkdtemp(prefix="bench-autotask-flow-"))
    try:
        t0 = time.perf_counter()
        prepare_airflow_home(work)
        dag = load_dag()
        setup = time.perf_counter() - t0
        modes = [Mode("batched", args.accounts, args.contacts, args.batch_size, False)]
        if not args.no_baseline:
            modes.append(Mode("one-per-call", args.baseline_accounts, args.baseline_contacts, 1, True))
        results = []
        for mode in modes:
            print(
                f"[bench] {mode.name}: {mode.accounts:,} accounts, {mode.contacts:,} contacts ...", flush=True
            )
            r = run_mode(dag, mode, work, args)
            for run in ("first", "incremental", "steady"):
                if run in r:
                    x = r[run]
                    print(
                        f"[bench]   {run}: {x['state']} in {x['seconds']:.1f} s, {x['calls']:,} Autotask calls"
                        + (f" (failed: {', '.join(x['failed_tasks'])})" if x["failed_tasks"] else ""),
                        flush=True,
                    )
            results.append(r)
        report(results, args, setup)
        if args.json:
            print(json.dumps(results, indent=2, default=str))
        ok = all(
            r.get(run, {}).get("state") == "success"
            for r in results
            for run in ("first", "incremental", "steady")
        )
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
