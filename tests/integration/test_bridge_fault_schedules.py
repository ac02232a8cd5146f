"""Random fault schedules against the exactly-once promise, on SQLite and on the real PostgreSQL.

Each example queues customer Adds, invoice Adds that name their customer by ListID, and customer
Mods, then runs Web Connector sessions under a random schedule of faults: lost acknowledgements,
QuickBooks crashing before or after it ran a document, HRESULTs, a QuickBooks that kept no recovery
record, probes answered with errors, a QuickBooks user editing records between exchanges, two Web
Connector sessions at the same moment, and the bridge dying between two of its own store writes
(the k-th write statement of a session raises, so that transaction never commits). QuickBooks keeps
one message set (as the real one does) and answers recovery in either shape.

Invariant for every schedule: each requested write is in QuickBooks at most once; a request the
bridge reports `done` is there (a Mod: with the values we sent); one that is not there is reported
`failed` or `in_doubt` with a reason; a `completed` job has every write in QuickBooks.
"""

from __future__ import annotations

import os
import re
import threading
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from test_bridge_support import count_customers, count_invoices, customer_add, enqueue, invoice_add, job

from erpsync.sandbox.quickbooks import CompanyFile
from erpsync.sandbox.webconnector import Faults, WebConnectorSimulator
from tests.pg import schema_url

pytest_plugins = ["test_bridge_support"]

ITEM = (
    "<ItemServiceAddRq><ItemServiceAdd><Name>Consulting</Name><SalesOrPurchase><Price>10.00</Price>"
    "<AccountRef><FullName>Sales</FullName></AccountRef></SalesOrPurchase></ItemServiceAdd></ItemServiceAddRq>"
)
FAULTS = (
    "none",
    "drop_ack",
    "crash_before",
    "crash_after_commit",
    "hresult",
    "forget",
    "probe_error",
    "user_edit",
    "two_sessions",
    "store_crash",
)
FINAL = {"completed", "failed"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory):
    """One store per backend for the module; each example registers its own company in it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('schedules') / 'bridge.db'}"
    return schema_url(request.getfixturevalue("postgres_url"), "schedules")


class StoreCrash:
    """Make the `at`-th write statement the bridge runs raise: the transaction it is in never commits,
    exactly as if the process died between the previous write and this one."""

    def __init__(self, engine):
        self.engine, self.at, self.seen = engine, 0, 0
        self.lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._before)

    def arm(self, at: int) -> None:
        with self.lock:
            self.at, self.seen = at, 0

    def disarm(self) -> int:
        """Stop; return how many write statements ran while armed."""
        with self.lock:
            self.at = 0
            return self.seen

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        if not re.match(r"\s*(INSERT|UPDATE|DELETE)", statement, re.IGNORECASE):
            return
        with self.lock:
            if not self.at:
                return
            self.seen += 1
            if self.seen != self.at:
                return
            self.at = 0
        raise RuntimeError(f"injected crash before write statement {self.seen}")

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)


@pytest.fixture(scope="module")
def scheduled_bridge(database_url, tmp_path_factory):
    """One bridge per backend (a new company per example keeps the examples apart)."""
    from erpsync.sandbox.runner import SandboxCA, SandboxContext
    from erpsync.sandbox.webconnector import start_bridge

    data = tmp_path_factory.mktemp("bridge")
    ctx = SandboxContext(data_dir=data, ca=SandboxCA(data / "ca"))
    from test_bridge_support import TOKEN

    bridge = start_bridge(ctx, database_url=database_url, api_token=TOKEN, session_stale_seconds=0)
    crash = StoreCrash(bridge.store.engine)
    yield bridge, crash
    crash.close()
    bridge.stop()


def _forgetful(qb):
    """QuickBooks that kept no error-recovery record (restarted, or another application overwrote it)."""
    return lambda doc: qb.process(re.sub(r' oldMessageSetID="[^"]*"', "", doc))


def _customer(qb, name: str) -> dict:
    return next(r for r in qb.records("Customer") if r.get("Name") == name)


def _invoice(list_id: str, ref: str) -> str:
    return (
        f"<InvoiceAddRq><InvoiceAdd><CustomerRef><ListID>{list_id}</ListID></CustomerRef>"
        f"<RefNumber>{escape(ref)}</RefNumber><InvoiceLineAdd><ItemRef><FullName>Consulting</FullName>"
        "</ItemRef><Quantity>1</Quantity><Rate>10.00</Rate></InvoiceLineAdd></InvoiceAdd></InvoiceAddRq>"
    )


def _mod(record: dict, phone: str) -> str:
    return (
        f"<CustomerModRq><CustomerMod><ListID>{record['ListID']}</ListID>"
        f"<EditSequence>{record['EditSequence']}</EditSequence><Phone>{phone}</Phone>"
        "</CustomerMod></CustomerModRq>"
    )


def _session(bridge, company: str, processor, **faults) -> None:
    WebConnectorSimulator(
        bridge.soap_url, company, "pw", processor, noop_wait=0.01, faults=Faults(**faults)
    ).run_once()


def _run(bridge, crash, company: str, qb, fault: str, at: int, code: int, shape: str, others: list) -> None:
    processor = qb
    if fault == "drop_ack":
        return _session(bridge, company, qb, drop_ack_on={at})
    if fault == "crash_before":
        return _session(bridge, company, qb, crash_before_quickbooks_on={at})
    if fault == "crash_after_commit":
        qb.faults.lose_responses = 1
        _session(bridge, company, qb)
        qb.faults.lose_responses = 0
        return None
    if fault == "hresult":
        return _session(bridge, company, qb, hresult_on={at: ("0x80040402", "Unexpected error.")})
    if fault == "forget":
        return _session(bridge, company, _forgetful(qb), drop_ack_on={at})
    if fault == "probe_error":
        # An answer is lost, QuickBooks keeps no record of it, and its probes answer `code`.
        _session(bridge, company, qb, drop_ack_on={1})
        qb.faults.fail_queries(code, count=at)
        _session(bridge, company, _forgetful(qb))
        qb.faults.probe_errors.clear()
        return None
    if fault == "user_edit":
        # A bookkeeper changes a customer we also change (another field) and one we created.
        for record in others:
            qb.user_edit("Customer", record["ListID"], Fax=f"555-{at}{code}")
        return _session(bridge, company, processor)
    if fault == "two_sessions":
        gate = threading.Barrier(2)

        def one(drop: set[int]) -> None:
            gate.wait(timeout=30)
            _session(bridge, company, qb, drop_ack_on=drop)

        threads = [threading.Thread(target=one, args=(d,)) for d in ({at}, set())]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        return None
    if fault == "store_crash":
        crash.arm(at * 2 + code % 3)  # the k-th write of this session, k in 1..11
        try:
            _session(bridge, company, qb)
        finally:
            crash.disarm()
        return None
    return _session(bridge, company, processor)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    schedule=st.lists(
        st.tuples(
            st.sampled_from(FAULTS),
            st.integers(min_value=1, max_value=4),
            st.sampled_from([1000, 1010, 3175, 3260]),
        ),
        min_size=1,
        max_size=5,
    ),
    n_customers=st.integers(min_value=1, max_value=5),
    n_invoices=st.integers(min_value=0, max_value=3),
    n_mods=st.integers(min_value=0, max_value=2),
    batch=st.integers(min_value=1, max_value=4),
    shape=st.sampled_from(["full", "error_recovery"]),
)
def test_random_fault_schedules_write_each_change_once_or_report_it(
    scheduled_bridge, tmp_path_factory, schedule, n_customers, n_invoices, n_mods, batch, shape
):
    bridge, crash = scheduled_bridge
    from erpsync.qbwc_bridge.crud import add_company

    tag = os.urandom(4).hex()
    company = f"sched-{tag}"
    with bridge.store.session() as s:
        add_company(session=s, name=company, password="pw")
    qb = CompanyFile(tmp_path_factory.mktemp("qb") / "f.qbw", recovery_shape=shape)
    bridge.configure(max_batch_requests=batch)
    # Set-up in a clean run: the item, the customer the invoices name by ListID, the customers we modify.
    # A decoy customer already has an invoice with each RefNumber we post (QuickBooks allows that):
    # only the pair RefNumber + our customer's ListID identifies ours.
    base = [f"Base {tag} {i}" for i in range(1 + n_mods)]
    decoy = f"Decoy {tag}"
    refs = [f"S{tag[:5]}{i}" for i in range(n_invoices)]
    setup = enqueue(
        bridge, [ITEM, customer_add(decoy), *(customer_add(n) for n in base)], company=company
    ).json()["id"]
    _session(bridge, company, qb)
    decoys = enqueue(
        bridge, [invoice_add(decoy, r) for r in refs] or [customer_add(f"Spare {tag}")], company=company
    )
    _session(bridge, company, qb)
    assert {job(bridge, j)["state"] for j in (setup, decoys.json()["id"])} == {"completed"}
    billed = _customer(qb, base[0])
    modified = [_customer(qb, n) for n in base[1:]]

    def ours(ref: str) -> int:
        return sum(
            1
            for r in qb.records("Invoice")
            if r.get("RefNumber") == ref and r["CustomerRef"]["ListID"] == billed["ListID"]
        )

    customers = [f"Sched {tag} {i}" for i in range(n_customers)]
    phones = [f"0{i}-{tag[:4]}" for i in range(n_mods)]
    requests = (
        [customer_add(n) for n in customers]
        + [_invoice(billed["ListID"], r) for r in refs]
        + [_mod(rec, phone) for rec, phone in zip(modified, phones, strict=True)]
    )
    jid = enqueue(bridge, requests, company=company).json()["id"]

    for fault, at, code in schedule:
        _run(bridge, crash, company, qb, fault, at, code, shape, modified)
    for _ in range(12):  # then clean sessions until the job is final (in_doubt needs several probes)
        if job(bridge, jid)["state"] in FINAL:
            break
        _session(bridge, company, _forgetful(qb))
    result = job(bridge, jid)
    assert result["state"] in FINAL, result["counts"]
    by_index = {r["index"]: r for r in result["results"]}
    not_applied = {"failed", "in_doubt"}

    def check(index: int, present: int, what: str) -> None:
        r = by_index[index]
        assert present <= 1, (what, present, r)
        if r["state"] == "done":
            assert present == 1, (what, "reported done but not in QuickBooks", r)
        else:
            assert r["state"] in not_applied and r["status_message"], (what, r)
        if present == 0:
            assert r["state"] in not_applied, (what, r)
        if r["state"] == "failed":  # "not applied" must be true: no false 3100 for a write that landed
            assert present == 0, (what, "reported failed but it is in QuickBooks", r)

    for i, name in enumerate(customers):
        check(i, count_customers(qb, name), name)
    for j, ref in enumerate(refs):
        check(n_customers + j, ours(ref), ref)
        assert count_invoices(qb, ref) == 1 + ours(ref), ref  # the decoy's invoice is untouched
    for k, (rec, phone) in enumerate(zip(modified, phones, strict=True)):
        r = by_index[n_customers + n_invoices + k]
        now = _customer(qb, rec["Name"])
        if r["state"] == "done":
            assert now.get("Phone") == phone, ("Mod reported done but QuickBooks has", now.get("Phone"), r)
        else:
            assert r["state"] in not_applied and r["status_message"], r
    if result["state"] == "completed":
        assert all(r["state"] == "done" for r in result["results"]), result["counts"]


def test_a_crash_before_any_store_write_of_a_session_doubles_and_loses_nothing(
    scheduled_bridge, tmp_path_factory
):
    """Deterministic sweep: for every k, the bridge dies at the k-th write of a session (that transaction
    never commits), the Web Connector goes on as it would, then clean sessions follow. Every customer is
    in QuickBooks exactly once and the job completes."""
    bridge, crash = scheduled_bridge
    from erpsync.qbwc_bridge.crud import add_company

    bridge.configure(max_batch_requests=2)

    def one_company(k: int | None) -> int:
        tag = os.urandom(4).hex()
        company = f"sweep-{tag}"
        with bridge.store.session() as s:
            add_company(session=s, name=company, password="pw")
        qb = CompanyFile(tmp_path_factory.mktemp("sweep") / "f.qbw")
        names = [f"Sweep {tag} {i}" for i in range(3)]
        jid = enqueue(bridge, [customer_add(n) for n in names], company=company).json()["id"]
        crash.arm(k if k is not None else 10**9)
        try:
            _session(bridge, company, qb)
        finally:
            writes = crash.disarm()
        for _ in range(4):
            if job(bridge, jid)["state"] in FINAL:
                break
            _session(bridge, company, qb)
        result = job(bridge, jid)
        assert result["state"] == "completed", (k, result["counts"], result["results"])
        assert [count_customers(qb, n) for n in names] == [1, 1, 1], k
        return writes

    total = one_company(None)  # how many writes a clean session of this job makes
    assert total >= 8, total  # authenticate, two exchanges sent and answered, close: the sweep is real
    for k in range(1, total + 1):
        one_company(k)
