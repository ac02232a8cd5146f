"""The deferrable QuickBooks upsert in a real Airflow `dag.test()` run (the trigger runs in line there):
plan (real PlanOperator over the QuickBooks adapter) -> QuickBooksUpsertOperator -> VerifyOperator, with
the bridge over real HTTP, the Web Connector simulator polling it and the company-file simulator."""

from __future__ import annotations

from contextlib import contextmanager

import pandas as pd
import pytest

from erpsync.chunks import ChunkWriter, read_chunks
from erpsync.mapping import load_flow
from erpsync.operators._steps import StepContext, map_step
from erpsync.state import StateStore
from tests.qb_live import live_quickbooks

FLOW = "sf_accounts_to_qb_customers"
CONN = "qbwc_bridge_e2e"


def account(i: int, **changes) -> dict:
    row = {
        "Id": f"001E2E{i:012d}",
        "Name": f"E2E Account {i}",
        "AccountNumber": f"A-{i}",
        "BillingStreet": f"Main Street {i}\nUnit {i}",
        "BillingCity": "Utrecht",
        "BillingState": "UT",
        "BillingPostalCode": "3511 AB",
        "BillingCountry": "Netherlands",
        "ShippingStreet": None,
        "ShippingCity": None,
        "ShippingState": None,
        "ShippingPostalCode": None,
        "ShippingCountry": None,
        "Phone": "+31 30 123 4567",
        "Fax": None,
        "Email": f"Owner{i}@Example.test",
        "Owner.FirstName": "Ada",
        "Owner.LastName": "Lovelace",
        "Type": "Customer - Direct",
        "Description": f"account {i}",
    }
    row.update(changes)
    row["Email__c"] = row["Email"]  # the mapping reads the custom field in newer versions of the flow
    return row


def mapped_manifest(tmp_path, state_url: str, accounts: list[dict], name: str) -> dict:
    """Map Salesforce-shaped accounts with the flow's real mapping (map_step), as the map task would."""
    staging = tmp_path / name
    writer = ChunkWriter(staging, "extract")
    writer.write(pd.DataFrame(accounts))
    ctx = StepContext(
        flow=FLOW, dag_id="qb_upsert_probe", run_id=name, staging=staging, store=StateStore(state_url)
    )
    lookups = {"sales_reps": pd.DataFrame(columns=["FirstName", "LastName", "Initial"])}
    return map_step(ctx, load_flow(FLOW), writer.close(), lookups=lookups).to_xcom()


@pytest.fixture
def live(tmp_path, monkeypatch):
    with live_quickbooks(tmp_path / "qb") as stack:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", stack.connection_json())
        yield stack


def run(dag, conf: dict):
    # dag.test() keeps a conf-given param on the DAG object for later runs: always say dry_run.
    dr = dag.test(run_conf={"dry_run": False, **conf})
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    return dr, states


def xcom(dr, task_id: str):
    return dr.get_task_instance(task_id).xcom_pull(task_ids=task_id)


def test_deferred_upsert_lands_customers_then_a_rerun_writes_nothing(test_dag, live, tmp_path):
    dag = test_dag("qb_upsert_probe", "qb_upsert_probe.py")
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    accounts = [account(i) for i in range(3)]
    conf = {"state_url": state_url, "mapped": mapped_manifest(tmp_path, state_url, accounts, "map1")}

    dr, states = run(dag, conf)
    assert dr.state == "success", states
    upsert = xcom(dr, "upsert")
    assert upsert["stage"] == "upsert"
    assert upsert["extra"]["counts"]["created"] == 3 and upsert["extra"]["counts"]["failed"] == 0
    # rows_per_job=2: two batches, each a write job and a DataExt job, each waited for in the trigger
    assert len(upsert["extra"]["jobs"]) == 4
    assert xcom(dr, "verify")["checked"] == 3 and xcom(dr, "verify")["differences"] == 0

    customers = {c["Name"]: c for c in live.customers()}
    for a in accounts:
        c = customers[a["Name"]]
        assert c["BillAddress"]["City"] == "Utrecht" and c["BillAddress"]["Addr2"] == f"Unit {a['Name'][-1]}"
        assert c["Email"] == a["Email"].lower() and c["SalesRepRef"]["FullName"] == "ADM"
        assert live.data_ext("SalesforceId", c["ListID"]) == a["Id"]

    # The ListID write-back file: Salesforce Id -> ListID.
    writeback = pd.concat(list(read_chunks(upsert["extra"]["writeback"])))
    assert dict(zip(writeback["_source_key"], writeback["target_id"], strict=True)) == {
        a["Id"]: customers[a["Name"]]["ListID"] for a in accounts
    }
    identities = StateStore(state_url).get_identities(FLOW, [a["Id"] for a in accounts])
    assert {k: v.target_id for k, v in identities.items()} == {
        a["Id"]: customers[a["Name"]]["ListID"] for a in accounts
    }

    adds, mods = live.customer_adds(), live.customer_mods()
    dry, states = run(
        dag, {**conf, "dry_run": True, "mapped": mapped_manifest(tmp_path, state_url, [account(7)], "d")}
    )
    assert dry.state == "success", states
    assert xcom(dry, "upsert")["extra"]["dry_run"] is True and xcom(dry, "verify")["dry_run"] is True
    assert (live.customer_adds(), len(live.customers())) == (adds, 3)

    dr, states = run(dag, {**conf, "mapped": mapped_manifest(tmp_path, state_url, accounts, "map2")})
    assert dr.state == "success", states
    again = xcom(dr, "upsert")["extra"]
    assert again["counts"]["skipped"] == 3 and again["counts"]["created"] == again["counts"]["updated"] == 0
    assert again["jobs"] == []
    assert (live.customer_adds(), live.customer_mods()) == (adds, mods)
    assert len(live.customers()) == 3


def test_a_change_updates_one_customer_and_a_refused_row_is_quarantined_while_others_land(
    test_dag, live, tmp_path
):
    dag = test_dag("qb_upsert_probe", "qb_upsert_probe.py")
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    # A customer already uses the name the third account maps to (QuickBooks names are unique: 3100).
    live.qb.process(
        '<?xml version="1.0"?><?qbxml version="13.0"?><QBXML><QBXMLMsgsRq onError="stopOnError">'
        "<CustomerAddRq><CustomerAdd><Name>Already There</Name></CustomerAdd></CustomerAddRq>"
        "</QBXMLMsgsRq></QBXML>"
    )
    accounts = [account(0), account(1), account(2, Name="Already There", Email="x@there.test")]
    conf = {"state_url": state_url, "mapped": mapped_manifest(tmp_path, state_url, accounts, "m1")}
    dr, states = run(dag, conf)
    assert dr.state == "success", states
    counts = xcom(dr, "upsert")["extra"]["counts"]
    assert (counts["created"], counts["failed"]) == (2, 1)
    store = StateStore(state_url)
    [entry] = store.quarantine_entries(FLOW)
    assert entry["source_key"] == accounts[2]["Id"] and entry["stage"] == "upsert" and entry["rule"] == "3100"
    assert "Already There" in entry["message"] and "already in use" in entry["message"]

    mods = live.customer_mods()
    accounts[1] = account(1, BillingCity="Delft", Phone=None)  # a moved account whose phone was removed
    dr, states = run(dag, {**conf, "mapped": mapped_manifest(tmp_path, state_url, accounts, "m2")})
    assert dr.state == "success", states
    counts = xcom(dr, "upsert")["extra"]["counts"]
    assert (counts["updated"], counts["skipped"], counts["failed"]) == (1, 1, 1)
    assert live.customer_mods() == mods + 1
    customers = {c["Name"]: c for c in live.customers()}
    assert customers["E2E Account 1"]["BillAddress"]["City"] == "Delft"
    assert not customers["E2E Account 1"].get("Phone"), "the Mod cleared the phone number"
    assert customers["E2E Account 0"]["BillAddress"]["City"] == "Utrecht"
    assert customers["E2E Account 0"]["Phone"] == "+31 30 123 4567"
    assert xcom(dr, "verify")["differences"] == 0


@contextmanager
def live_behind(middleware, tmp_path, monkeypatch):
    """The live QuickBooks stack with `middleware` (an ASGI wrapper class) between Airflow and the
    bridge, and the test DAG's connection pointed at it; yields (live, the middleware)."""
    made = []

    def wrap(app):
        made.append(middleware(app))
        return made[0]

    with live_quickbooks(tmp_path / "qb", wrap=wrap) as live:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", live.connection_json())
        yield live, made[0]


class RefuseTheFirstWait:
    """ASGI fault between Airflow and the bridge: once the upsert has enqueued its write job, the next
    wait on a job is refused (401), so the trigger ends with an error event and the task try fails,
    as if the worker had died after enqueueing. Counts the enqueue calls of that job's key."""

    def __init__(self, app):
        self.app = app
        self.armed = self.fired = False
        self.write_posts: list[str] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            key = headers.get(b"idempotency-key", b"").decode()
            if scope["method"] == "POST" and "/upsert/b0/write/" in key:
                self.write_posts.append(key)
                self.armed = True
            elif (
                self.armed
                and not self.fired
                and scope["method"] == "GET"
                and scope["path"].startswith("/api/v1/jobs/")
                and b"results=false" in scope.get("query_string", b"")
            ):
                self.fired = True
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send(
                    {"type": "http.response.body", "body": b'{"detail": "token refused (injected fault)"}'}
                )
                return
        await self.app(scope, receive, send)


def test_a_retry_after_a_failed_wait_reattaches_to_the_same_job(test_dag, tmp_path, monkeypatch):
    import httpx

    from tests.qb_live import TOKEN

    dag = test_dag("qb_upsert_probe", "qb_upsert_probe.py")
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with live_behind(RefuseTheFirstWait, tmp_path, monkeypatch) as (live, fault):
        accounts = [account(i) for i in range(4)]
        dr, states = run(
            dag, {"state_url": state_url, "mapped": mapped_manifest(tmp_path, state_url, accounts, "m")}
        )
        assert dr.state == "success", states
        assert fault.fired, "the first wait was refused"
        assert dr.get_task_instance("upsert").try_number == 2, "the failed try was retried"
        # Both tries enqueued the write job with the same key (the first try never saw it finish, so it
        # saved no answer to resume from); the bridge holds it once.
        assert len(fault.write_posts) == 2 and len(set(fault.write_posts)) == 1
        jobs = httpx.get(
            f"{live.bridge.url}/api/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ).json()["jobs"]
        assert sum("/upsert/b0/write/" in (j["idempotency_key"] or "") for j in jobs) == 1
        assert live.customer_adds() == 4 and len(live.customers()) == 4
        assert xcom(dr, "upsert")["extra"]["counts"]["created"] == 4
        assert xcom(dr, "verify")["differences"] == 0


class CountEnqueues:
    """ASGI spy between Airflow and the bridge: the Idempotency-Key of every enqueue (POST /api/v1/jobs)."""

    def __init__(self, app):
        self.app = app
        self.keys: list[str] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/api/v1/jobs":
            self.keys.append(dict(scope.get("headers") or []).get(b"idempotency-key", b"").decode())
        await self.app(scope, receive, send)


def test_resuming_after_each_job_posts_every_job_once(test_dag, tmp_path, monkeypatch):
    """Five rows in batches of two: three batches, six jobs, a deferral after each. A resume starts from
    the saved progress and the answers of the job it waited for, so each job is posted exactly once
    (before, the k-th resume re-posted every job before it: posts grew with the square of the jobs)."""
    dag = test_dag("qb_upsert_probe", "qb_upsert_probe.py")
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("ERPSYNC_STAGING_ROOT", str(tmp_path / "staging"))
    with live_behind(CountEnqueues, tmp_path, monkeypatch) as (live, spy):
        accounts = [account(i) for i in range(5)]
        dr, states = run(
            dag, {"state_url": state_url, "mapped": mapped_manifest(tmp_path, state_url, accounts, "m")}
        )
        assert dr.state == "success", states
        upsert = xcom(dr, "upsert")["extra"]
        assert upsert["counts"]["created"] == 5 and len(upsert["jobs"]) == 6
        # Every job is one call of the report, whichever try or resume ran it.
        assert upsert["calls"]["by_method"] == {"job:write": 3, "job:dataext": 3}, upsert["calls"]
        posted = [k for k in spy.keys if "/upsert/" in k]  # plan and verify post read-only queries
        phases = sorted(k.split("/upsert/")[1].rsplit("/", 1)[0] for k in posted)
        assert phases == [f"b{b}/{p}" for b in range(3) for p in ("dataext", "write")]
        assert len(set(posted)) == 6, "every job posted once"
        assert live.customer_adds() == 5 and xcom(dr, "verify")["differences"] == 0
        # What is left: the rows to write and each batch's results; no job answers.
        progress = list((tmp_path / "staging").rglob("qb-upsert-progress/*/*/*"))
        assert sorted(p.name for p in progress) == [
            "already.json",
            *(f"batch-{b:05d}.json" for b in range(3)),
            "pending.parquet",
        ]
