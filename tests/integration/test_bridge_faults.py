"""Never post twice: lost acknowledgements, crashes, faults and HRESULTs, each change exactly once.

Every test drives the bridge over HTTP with the Web Connector simulator and then counts, in the
QuickBooks company file itself, how many times each requested record exists.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bridge_support import (
    AUTH,
    TOKEN,
    count_customers,
    count_invoices,
    customer_add,
    enqueue,
    invoice_add,
    job,
    make_company_file,
    wc,
)

from erpsync.sandbox.webconnector import Faults, WebConnectorSimulator
from tests.pg import schema_url

pytest_plugins = ["test_bridge_support"]


@pytest.fixture(params=["sqlite", "postgresql"])
def bridge_factory(request, bridge_factory):
    """Every fault test runs on SQLite and on the real PostgreSQL (a fresh schema per bridge)."""
    if request.param == "sqlite":
        return bridge_factory
    base = request.getfixturevalue("postgres_url")

    def start(database_url: str | None = None, **settings):
        return bridge_factory(database_url or schema_url(base, "faults"), **settings)

    return start


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kill.db'}"
    return schema_url(request.getfixturevalue("postgres_url"), "kill")


def _forgetful(qb):
    """QuickBooks that kept no error-recovery record (restarted, or another app overwrote it)."""

    def process(doc: str) -> str:
        return qb.process(re.sub(r' oldMessageSetID="[^"]*"', "", doc))

    return process


def _setup_item(bridge, qb):
    """Invoices need a customer and an item; create them in a clean run first."""
    item = (
        "<ItemServiceAddRq><ItemServiceAdd><Name>Consulting</Name><SalesOrPurchase><Price>10.00</Price>"
        "<AccountRef><FullName>Sales</FullName></AccountRef></SalesOrPurchase></ItemServiceAdd></ItemServiceAddRq>"
    )
    enqueue(bridge, [customer_add("Invoice Customer"), item])
    assert wc(bridge, qb).run_once().status == "ok"


def test_lost_acknowledgement_is_settled_by_message_set_recovery(bridge, qb):
    """QuickBooks applied the batch, the Web Connector never told the bridge: nothing is sent twice."""
    names = [f"Lost Ack {i}" for i in range(10)]
    jid = enqueue(bridge, [customer_add(n) for n in names]).json()["id"]
    first = wc(bridge, qb, faults=Faults(drop_ack_on={1})).run_once()
    assert first.status == "aborted" and first.exchanges == 1
    assert job(bridge, jid)["counts"]["lost"] == 0  # not yet known lost: the bridge only knows "sent"
    second = wc(bridge, qb).run_once()
    assert second.status == "ok", second
    result = job(bridge, jid)
    assert result["state"] == "completed", result["counts"]
    assert all(r["list_id"] for r in result["results"])
    assert all(count_customers(qb, n) == 1 for n in names)


def test_unacknowledged_invoices_are_found_by_refnumber_not_reposted(bridge, qb):
    """Transactions have no duplicate guard in QuickBooks: without a recovery record, probes decide."""
    _setup_item(bridge, qb)
    refs = [f"SF-{i:04d}" for i in range(6)]
    jid = enqueue(bridge, [invoice_add("Invoice Customer", r) for r in refs]).json()["id"]
    assert wc(bridge, qb, faults=Faults(drop_ack_on={1})).run_once().status == "aborted"
    assert all(count_invoices(qb, r) == 1 for r in refs)
    report = WebConnectorSimulator(bridge.soap_url, "acme", "pw", _forgetful(qb)).run_once()
    assert report.status == "ok", report
    result = job(bridge, jid)
    assert result["state"] == "completed"
    assert all("reconciled" in r["status_message"] and r["txn_id"] for r in result["results"])
    assert all(count_invoices(qb, r) == 1 for r in refs)  # exactly once


def test_crash_before_quickbooks_ran_it_resends_once(bridge, qb):
    _setup_item(bridge, qb)
    jid = enqueue(bridge, [customer_add("Crash Co"), invoice_add("Invoice Customer", "CR-1")]).json()["id"]
    assert wc(bridge, qb, faults=Faults(crash_before_quickbooks_on={1})).run_once().status == "aborted"
    assert count_customers(qb, "Crash Co") == 0
    assert WebConnectorSimulator(bridge.soap_url, "acme", "pw", _forgetful(qb)).run_once().status == "ok"
    assert job(bridge, jid)["state"] == "completed"
    assert count_customers(qb, "Crash Co") == 1 and count_invoices(qb, "CR-1") == 1


def test_processor_hresult_mid_batch_is_reconciled_not_assumed(bridge_factory, qb):
    """An unexpected HRESULT may hide a partly applied batch: reconcile instead of resending blindly."""
    b = bridge_factory(max_batch_requests=4)
    names = [f"Hresult Co {i}" for i in range(10)]
    jid = enqueue(b, [customer_add(n) for n in names]).json()["id"]
    faults = Faults(hresult_on={2: ("0x80040402", "Unexpected error. Check the qbsdklog.txt file.")})
    report = wc(b, qb, faults=faults).run_once()
    assert report.status == "error" and "0x80040402" in report.last_error
    assert wc(b, qb).run_once().status == "ok"
    assert job(b, jid)["state"] == "completed"
    assert all(count_customers(qb, n) == 1 for n in names)


def test_parse_error_hresult_isolates_the_bad_request(bridge_factory, qb):
    """0x80040400 rejects the whole document before anything runs: resend one by one, fail only the culprit."""
    b = bridge_factory(max_batch_requests=10)
    names = [f"Parse Co {i}" for i in range(5)]
    jid = enqueue(b, [customer_add(n) for n in names]).json()["id"]
    faults = Faults(
        hresult_on={1: ("0x80040400", "QuickBooks found an error when parsing the provided XML text stream.")}
    )
    report = wc(b, qb, faults=faults).run_once()
    assert report.status == "ok" and report.exchanges == 1 + len(names)  # then one per exchange
    assert job(b, jid)["state"] == "completed"
    assert all(count_customers(qb, n) == 1 for n in names)


class _FailReceive:
    """ASGI wrapper: the n-th receiveResponseXML gets an HTTP 500, before or after the bridge handled it."""

    def __init__(self, app, nth: int, after: bool):
        self.app, self.nth, self.after, self.seen = app, nth, after, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/qbwc" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if b"receiveResponseXML" in body:
            self.seen += 1
        replay = [{"type": "http.request", "body": body, "more_body": False}]

        async def again():
            return replay.pop() if replay else {"type": "http.disconnect"}

        if self.seen == self.nth and b"receiveResponseXML" in body:
            if self.after:

                async def swallow(message):
                    return None

                await self.app(scope, again, swallow)
            await send(
                {"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]}
            )
            await send({"type": "http.response.body", "body": b"Internal Server Error"})
            return
        await self.app(scope, again, send)


def test_http_500_on_receive_before_and_after_the_bridge_stored_it(bridge_factory, qb, sandbox_ctx):
    for after in (False, True):
        b = bridge_factory(wrap=lambda app, after=after: _FailReceive(app, 1, after))
        names = [f"Http500 {after} {i}" for i in range(3)]
        jid = enqueue(b, [customer_add(n) for n in names]).json()["id"]
        report = wc(b, qb).run_once()
        assert report.status == "error" and "HTTP 500" in report.last_error
        assert wc(b, qb).run_once().status in {"ok", "none"}
        assert job(b, jid)["state"] == "completed"
        assert all(count_customers(qb, n) == 1 for n in names)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db_url: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "QBWC_BRIDGE_DATABASE_URL": db_url,
        "QBWC_BRIDGE_API_TOKEN": TOKEN,
        "QBWC_BRIDGE_ENVIRONMENT": "development",
        "QBWC_BRIDGE_SESSION_STALE_SECONDS": "0",  # the restarted client may supersede at once
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erpsync.qbwc_bridge.cli",
            "serve",
            "--port",
            str(port),
            "--migrate",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"bridge did not start: {proc.stderr.read().decode()[-2000:]}")


def test_kill_9_between_send_and_receive_then_restart(tmp_path, store_url):
    """The bridge process dies (SIGKILL) after sendRequestXML; QuickBooks applies; a restart reconciles."""
    from erpsync.qbwc_bridge.crud import add_company
    from erpsync.qbwc_bridge.db import Store, migrate

    db_url = store_url
    migrate(db_url)
    store = Store(db_url)
    with store.session() as s:
        add_company(session=s, name="acme", password="pw")
    store.dispose()
    qb = make_company_file(tmp_path / "kill.qbw")
    port = _free_port()
    proc = _serve(db_url, port)
    base = f"http://127.0.0.1:{port}"
    try:
        names = [f"Killed Co {i}" for i in range(8)]
        resp = httpx.post(
            f"{base}/api/v1/jobs",
            json={"company": "acme", "requests": [customer_add(n) for n in names]},
            headers=AUTH,
        )
        jid = resp.json()["id"]

        def kill_then_apply(doc: str) -> str:
            if "CustomerAddRq" in doc:  # not the Host/Company/Preferences queries QBWC runs first
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            return qb.process(doc)

        report = WebConnectorSimulator(f"{base}/qbwc", "acme", "pw", kill_then_apply).run_once()
        assert report.status == "error" and report.calls[-1] == "receiveResponseXML"
        assert all(count_customers(qb, n) == 1 for n in names)
        proc = _serve(db_url, port)
        again = WebConnectorSimulator(f"{base}/qbwc", "acme", "pw", qb).run_once()
        assert again.status == "ok", again
        final = httpx.get(f"{base}/api/v1/jobs/{jid}", headers=AUTH).json()
        assert final["state"] == "completed"
        assert all(count_customers(qb, n) == 1 for n in names)
    finally:
        proc.kill()
        proc.wait()


_FAULT = st.sampled_from(["none", "drop_ack", "crash_before", "hresult", "forget"])


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    schedule=st.lists(st.tuples(_FAULT, st.integers(min_value=1, max_value=3)), min_size=1, max_size=4),
    n_customers=st.integers(min_value=1, max_value=7),
    n_invoices=st.integers(min_value=0, max_value=4),
    batch=st.integers(min_value=1, max_value=5),
)
def test_random_fault_schedules_never_duplicate(
    bridge, tmp_path_factory, schedule, n_customers, n_invoices, batch
):
    """Whatever fails when, every requested change exists exactly once or is reported failed with a reason."""
    from erpsync.qbwc_bridge.crud import add_company

    tag = os.urandom(4).hex()
    with bridge.store.session() as s:
        add_company(session=s, name=f"co-{tag}", password="pw")
    qb = make_company_file(tmp_path_factory.mktemp("qb") / "f.qbw")
    bridge.configure(max_batch_requests=batch)
    item = (
        "<ItemServiceAddRq><ItemServiceAdd><Name>Consulting</Name><SalesOrPurchase><Price>10.00</Price>"
        "<AccountRef><FullName>Sales</FullName></AccountRef></SalesOrPurchase></ItemServiceAdd></ItemServiceAddRq>"
    )
    customers = [f"Prop {tag} {i}" for i in range(n_customers)]
    refs = [f"P{tag[:4]}{i}" for i in range(n_invoices)]
    requests = [customer_add(n) for n in customers] + [item] + [invoice_add(customers[0], r) for r in refs]
    jid = enqueue(bridge, requests, company=f"co-{tag}").json()["id"]
    for fault, at in schedule:
        faults = Faults()
        processor = qb
        if fault == "drop_ack":
            faults.drop_ack_on = {at}
        elif fault == "crash_before":
            faults.crash_before_quickbooks_on = {at}
        elif fault == "hresult":
            faults.hresult_on = {at: ("0x80040402", "Unexpected error.")}
        elif fault == "forget":
            processor = _forgetful(qb)
            faults.drop_ack_on = {at}
        WebConnectorSimulator(
            bridge.soap_url, f"co-{tag}", "pw", processor, noop_wait=0.01, faults=faults
        ).run_once()
    for _ in range(6):  # then clean runs until the job is settled
        if job(bridge, jid)["state"] in {"completed", "failed"}:
            break
        WebConnectorSimulator(bridge.soap_url, f"co-{tag}", "pw", _forgetful(qb), noop_wait=0.01).run_once()
    result = job(bridge, jid)
    assert result["state"] in {"completed", "failed"}, result["counts"]
    by_index = {r["index"]: r for r in result["results"]}
    for i, name in enumerate(customers):
        assert count_customers(qb, name) == 1, (name, by_index[i])
    for j, ref in enumerate(refs):
        r = by_index[n_customers + 1 + j]
        found = count_invoices(qb, ref)
        assert found == 1 or (found == 0 and r["state"] == "failed" and r["status_message"]), (ref, found, r)
        assert found <= 1


def test_quickbooks_crash_after_commit_leaves_each_invoice_once(bridge, qb):
    """The simulator's "crash after commit" fault: committed, answer lost; the invoice exists exactly once."""
    _setup_item(bridge, qb)
    refs = ["CAC-1", "CAC-2", "CAC-3"]
    jid = enqueue(bridge, [invoice_add("Invoice Customer", r) for r in refs]).json()["id"]
    qb.faults.lose_responses = 1
    assert wc(bridge, qb, send_hcp=False).run_once().status == "aborted"
    assert all(count_invoices(qb, r) == 1 for r in refs)
    assert wc(bridge, qb).run_once().status == "ok"
    result = job(bridge, jid)
    assert result["state"] == "completed" and all(r["txn_id"] for r in result["results"])
    assert all(count_invoices(qb, r) == 1 for r in refs)


def test_busy_quickbooks_and_locked_records_are_retried(bridge, qb):
    """HRESULT busy (nothing ran) and 3180 lock answers: resent later, each record once."""
    jid = enqueue(bridge, [customer_add("Busy Co"), customer_add("Locked Co")]).json()["id"]
    qb.faults.busy = 1
    first = wc(bridge, qb, send_hcp=False).run_once()
    assert first.status == "error" and "0x80040401" in (first.last_error or "")
    qb.faults.lock_writes = 1
    assert wc(bridge, qb, send_hcp=False).run_once().status == "ok"
    result = job(bridge, jid)
    assert result["state"] == "completed", result["results"]
    assert count_customers(qb, "Busy Co") == 1 and count_customers(qb, "Locked Co") == 1


class _SlowReceive:
    """ASGI wrapper: receiveResponseXML is handled only once the test releases it (the client gave up).

    `release` and `handled` are events, so the test waits for conditions, not for time: the client's
    timeout fires while the call is held, whatever the machine's load.
    """

    def __init__(self, app):
        self.app, self.slowed = app, 0
        self.release, self.handled = threading.Event(), threading.Event()

    async def __call__(self, scope, receive, send):
        import asyncio

        if scope["type"] != "http" or scope["path"] != "/qbwc":
            return await self.app(scope, receive, send)
        message = await receive()
        body = message.get("body", b"")
        while message.get("more_body"):
            message = await receive()
            body += message.get("body", b"")
        replay = [{"type": "http.request", "body": body, "more_body": False}]

        async def again():
            return replay.pop() if replay else {"type": "http.disconnect"}

        if b"receiveResponseXML" in body and not self.slowed:
            self.slowed += 1
            await asyncio.to_thread(self.release.wait, 120)
            try:
                await self.app(scope, again, send)
            finally:
                self.handled.set()
            return
        await self.app(scope, again, send)


def test_client_timeout_and_slow_quickbooks(bridge_factory, qb):
    """QBWC gives up on a slow receiveResponseXML (the bridge stored it anyway); QuickBooks is slow too."""
    slow: list[_SlowReceive] = []
    b = bridge_factory(wrap=lambda app: slow.append(_SlowReceive(app)) or slow[-1])
    names = [f"Timeout Co {i}" for i in range(4)]
    jid = enqueue(b, [customer_add(n) for n in names]).json()["id"]
    # The held call times out at 3 s; the calls before it answer well within that even under load.
    try:
        first = wc(b, qb, timeout=3, faults=Faults(slow_quickbooks=0.2)).run_once()
    finally:
        slow[0].release.set()
    assert first.status == "error" and "ReadTimeout" in first.last_error
    assert slow[0].handled.wait(120), "the held receiveResponseXML was never handled"
    assert wc(b, qb, faults=Faults(slow_quickbooks=0.2)).run_once().status in {"ok", "none"}
    assert job(b, jid)["state"] == "completed"
    assert all(count_customers(qb, n) == 1 for n in names)


def _customer_mod(list_id: str, seq: str, company: str) -> str:
    return (
        f"<CustomerModRq><CustomerMod><ListID>{list_id}</ListID><EditSequence>{seq}</EditSequence>"
        f"<CompanyName>{company}</CompanyName></CustomerMod></CustomerModRq>"
    )


def test_unacknowledged_mod_is_recognised_by_its_edit_sequence(bridge, qb):
    """A lost Mod is settled by probing the record's EditSequence; one that never ran is sent again."""
    added = enqueue(bridge, [customer_add("Mod Co"), customer_add("Mod Co 2")]).json()["id"]
    wc(bridge, qb).run_once()
    (first, second) = job(bridge, added)["results"]
    applied = enqueue(
        bridge, [_customer_mod(first["list_id"], first["edit_sequence"], "Applied Ltd")]
    ).json()["id"]
    assert wc(bridge, qb, faults=Faults(drop_ack_on={1})).run_once().status == "aborted"
    assert WebConnectorSimulator(bridge.soap_url, "acme", "pw", _forgetful(qb)).run_once().status == "ok"
    result = job(bridge, applied)["results"][0]
    assert result["state"] == "done" and "EditSequence" in result["status_message"]
    assert result["edit_sequence"] != first["edit_sequence"]
    never = enqueue(bridge, [_customer_mod(second["list_id"], second["edit_sequence"], "Second Ltd")]).json()[
        "id"
    ]
    assert wc(bridge, qb, faults=Faults(crash_before_quickbooks_on={1})).run_once().status == "aborted"
    assert WebConnectorSimulator(bridge.soap_url, "acme", "pw", _forgetful(qb)).run_once().status == "ok"
    result = job(bridge, never)["results"][0]
    assert (
        result["state"] == "done"
        and result["status_code"] == 0
        and "reconciled" not in result["status_message"]
    )
    rows = {r["Name"]: r for r in qb.records("Customer")}
    assert (
        rows["Mod Co"].get("CompanyName") == "Applied Ltd"
        and rows["Mod Co 2"].get("CompanyName") == "Second Ltd"
    )
