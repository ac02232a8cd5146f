"""Two Web Connector sessions for one company at once (two PCs with the same .qwc, a retry storm).

Each round starts two simulated Web Connectors for the same company behind a barrier, with random
timing (a random number of real SOAP calls before the update, a random number of real QuickBooks
queries before each document), then counts in the company file how often each invoice exists.
Invoices have no duplicate guard in QuickBooks, so a request sent by both sessions shows up twice.
Runs on SQLite and on the real PostgreSQL.
"""

from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import create_engine, text
from test_bridge_support import count_invoices, customer_add, enqueue, invoice_add, job, wc

pytest_plugins = ["test_bridge_support"]

ROUNDS = 20
INVOICES_PER_ROUND = 6
ITEM = (
    "<ItemServiceAddRq><ItemServiceAdd><Name>Consulting</Name><SalesOrPurchase><Price>10.00</Price>"
    "<AccountRef><FullName>Sales</FullName></AccountRef></SalesOrPurchase></ItemServiceAdd></ItemServiceAddRq>"
)
PING = (
    '<?xml version="1.0"?><?qbxml version="13.0"?><QBXML><QBXMLMsgsRq onError="continueOnError">'
    "<HostQueryRq/></QBXMLMsgsRq></QBXML>"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bridge.db'}"
    base = request.getfixturevalue("postgres_url")
    schema = f"conc_{abs(hash(request.node.nodeid)) % 10**8}"
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


class _Jittery:
    """The company file doing a random amount of real work before each document: random timing."""

    def __init__(self, qb, rng: random.Random):
        self.qb, self.rng, self._lock = qb, rng, threading.Lock()

    def process(self, doc: str, session: str = "default") -> str:
        with self._lock:
            extra = self.rng.randrange(4)
        for _ in range(extra):
            self.qb.process(PING)
        return self.qb.process(doc, session=session)

    def end_session(self, session: str) -> None:
        self.qb.end_session(session)


def _two_at_once(bridge, qb, rng: random.Random) -> list[str]:
    """Two Web Connector updates of the same company, started together; their statuses."""
    barrier = threading.Barrier(2)
    statuses: list[str] = [None, None]  # type: ignore[list-item]
    errors: list[BaseException] = []

    def run(slot: int) -> None:
        try:
            sim = wc(bridge, _Jittery(qb, rng))
            sim.call("serverVersion")  # open the HTTP connection before the race
            leads = rng.randrange(6)
            barrier.wait(timeout=60)
            for _ in range(leads):  # random timing: real round trips before the update starts
                sim.call("serverVersion")
            statuses[slot] = sim.run_once().status
            sim.close()
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(slot,)) for slot in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert all(not t.is_alive() for t in threads), "a Web Connector update did not finish"
    return statuses


def _setup(bridge, qb) -> None:
    """Invoices need their customer and item; create them in a session of its own."""
    enqueue(bridge, [customer_add("Race Customer"), ITEM])
    assert wc(bridge, qb).run_once().status == "ok"


def _invoices(round_no: int) -> list[str]:
    return [f"R{round_no:02d}-{i}" for i in range(INVOICES_PER_ROUND)]


def test_second_session_is_busy_while_the_first_is_live(bridge_factory, database_url, qb):
    """Only one session per company talks to QuickBooks; the other is told `busy` (or `none` once the
    first has finished), never sent a document. Each invoice is in QuickBooks once, each job final."""
    b = bridge_factory(database_url, session_stale_seconds=300, max_batch_requests=2)
    _setup(b, qb)
    rng = random.Random(11)
    for round_no in range(ROUNDS):
        refs = _invoices(round_no)
        jid = enqueue(b, [invoice_add("Race Customer", r) for r in refs]).json()["id"]
        statuses = _two_at_once(b, qb, rng)
        assert sorted(statuses) in (["busy", "ok"], ["none", "ok"]), (round_no, statuses)
        result = job(b, jid)
        assert result["state"] == "completed", (round_no, statuses, result["counts"])
        assert [count_invoices(qb, r) for r in refs] == [1] * len(refs), (round_no, statuses)


def test_a_login_superseding_a_live_session_never_doubles_or_strands_a_request(
    bridge_factory, database_url, qb
):
    """With no busy rule (stale bound 0) each new login supersedes the other session at a random
    point, often while its sendRequestXML or receiveResponseXML is in flight. Nothing is sent twice,
    and no request stays `sent` nor any job `in_progress`: later updates settle every one of them."""
    b = bridge_factory(database_url, session_stale_seconds=0, max_batch_requests=2)
    _setup(b, qb)
    rng = random.Random(12)
    for round_no in range(ROUNDS):
        refs = _invoices(round_no)
        jid = enqueue(b, [invoice_add("Race Customer", r) for r in refs]).json()["id"]
        statuses = _two_at_once(b, qb, rng)
        for _ in range(2 * INVOICES_PER_ROUND):  # plain updates, one at a time, until nothing is left
            if job(b, jid)["state"] not in ("queued", "in_progress"):
                break
            wc(b, qb).run_once()
        result = job(b, jid)
        assert result["state"] == "completed", (round_no, statuses, result["counts"])
        assert [r["state"] for r in result["results"]] == ["done"] * len(refs)
        assert [count_invoices(qb, r) for r in refs] == [1] * len(refs), (round_no, statuses)
