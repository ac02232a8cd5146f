"""The bridge store and jobs API on SQLite and on a real PostgreSQL, schema built by `alembic upgrade head`."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from sqlalchemy import text
from test_bridge_support import (
    AUTH,
    TOKEN,
    count_customers,
    customer_add,
    enqueue,
    job,
    make_company_file,
    wc,
)

from erpsync.qbwc_bridge.db import Store, migrate
from erpsync.sandbox.webconnector import WebConnectorSimulator
from tests.pg import schema_url

pytest_plugins = ["test_bridge_support"]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bridge.db'}"
    return schema_url(request.getfixturevalue("postgres_url"), "bridge")


def test_alembic_builds_exactly_the_models(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from erpsync.qbwc_bridge.models import Base

    migrate(database_url)
    store = Store(database_url)
    try:
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
        migrate(database_url)  # idempotent
    finally:
        store.dispose()


def test_enqueue_is_idempotent_and_validated(bridge_factory, database_url):
    b = bridge_factory(database_url)
    first = enqueue(b, [customer_add("Idem Co")], key="dag/run/task")
    assert first.status_code == 201
    again = enqueue(b, [customer_add("Idem Co")], key="dag/run/task")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    clash = enqueue(b, [customer_add("Other Co")], key="dag/run/task")
    assert clash.status_code == 409 and "Idempotency-Key" in clash.json()["detail"]
    bad = enqueue(
        b,
        [
            customer_add("Fine Co"),
            "<CustomerAddRq><CustomerAdd><Name>" + "x" * 60 + "</Name></CustomerAdd></CustomerAddRq>",
        ],
    )
    assert bad.status_code == 422
    err = bad.json()["errors"][0]
    assert err["index"] == 1 and "Name" in (err["field"] or "") + err["message"]
    broken = enqueue(b, ["<CustomerAddRq><CustomerAdd><Name>x</Name></CustomerAdd>"])
    assert broken.status_code == 422 and "well-formed" in broken.json()["errors"][0]["message"]
    wrong_root = enqueue(b, ["<Customer><Name>x</Name></Customer>"])
    assert wrong_root.status_code == 422 and "request element" in wrong_root.json()["errors"][0]["message"]
    assert enqueue(b, [customer_add("X")], company="nope").status_code == 404
    listed = httpx.get(f"{b.url}/api/v1/jobs", params={"company": "acme"}, headers=AUTH).json()["jobs"]
    assert [j["id"] for j in listed] == [first.json()["id"]]  # nothing of the refused requests was queued


def test_concurrent_enqueues_with_one_key_make_one_job(bridge_factory, database_url):
    b = bridge_factory(database_url)
    ids, errors = [], []

    def post():
        try:
            resp = enqueue(b, [customer_add("Race Co")], key="same-key")
            ids.append(resp.json()["id"])
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 1 and len(ids) == 6


def test_full_queue_answers_429(bridge_factory, database_url):
    b = bridge_factory(database_url, max_queued_requests=5)
    assert enqueue(b, [customer_add(f"Q{i}") for i in range(4)]).status_code == 201
    full = enqueue(b, [customer_add("Q4"), customer_add("Q5")])
    assert full.status_code == 429 and int(full.headers["retry-after"]) > 0
    assert enqueue(b, [customer_add("Q4")]).status_code == 201


def test_cancel_and_long_poll(bridge_factory, database_url, tmp_path):
    b = bridge_factory(database_url)
    jid = enqueue(b, [customer_add("Cancel Co")]).json()["id"]
    cancelled = httpx.delete(f"{b.url}/api/v1/jobs/{jid}", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert httpx.delete(f"{b.url}/api/v1/jobs/{jid}", headers=AUTH).status_code == 409
    qb = make_company_file(tmp_path / "c.qbw")
    assert wc(b, qb).run_once().status == "none"  # the cancelled request is never sent
    assert count_customers(qb, "Cancel Co") == 0

    jid = enqueue(b, [customer_add("Poll Co")]).json()["id"]
    timer = threading.Timer(0.5, lambda: wc(b, qb).run_once())
    timer.start()
    try:
        polled = job(b, jid, wait=20)
    finally:
        timer.join()
    assert polled["state"] == "completed"
    assert job(b, jid, wait=0.2)["state"] == "completed"
    assert httpx.get(f"{b.url}/api/v1/jobs/nope", headers=AUTH).status_code == 404


def _age_job(bridge, job_id: str, seconds: float) -> None:
    """Play `seconds` passing for a job: move its stored deadline back instead of sleeping."""
    with bridge.store.engine.begin() as conn:
        conn.execute(
            text("UPDATE jobs SET expires_at = expires_at - :s WHERE id = :id"), {"s": seconds, "id": job_id}
        )


def test_jobs_expire(bridge_factory, database_url, tmp_path):
    b = bridge_factory(database_url, job_ttl_seconds=600)
    made = job(b, enqueue(b, [customer_add("Late Co")]).json()["id"])
    jid = made["id"]
    assert made["expires_at"] - made["created_at"] == pytest.approx(600)
    _age_job(b, jid, 599)
    assert job(b, jid)["state"] == "queued"  # one second to go
    _age_job(b, jid, 2)
    assert job(b, jid)["state"] == "expired"  # read: the API settles the overdue job
    other = enqueue(b, [customer_add("Later Co")]).json()["id"]
    _age_job(b, other, 601)
    qb = make_company_file(tmp_path / "e.qbw")
    assert wc(b, qb).run_once().status == "none"  # the Web Connector's login expires it, sends nothing
    assert job(b, other)["state"] == "expired" and count_customers(qb, "Later Co") == 0


def test_two_replicas_on_one_database_serve_one_session(bridge_factory, database_url, tmp_path):
    """Calls of one Web Connector session alternate between two bridge processes sharing the store."""
    one = bridge_factory(database_url)
    two = bridge_factory(database_url)
    jid = enqueue(one, [customer_add(f"Replica Co {i}") for i in range(30)]).json()["id"]
    qb = make_company_file(tmp_path / "r.qbw")
    sim = WebConnectorSimulator(one.soap_url, "acme", "pw", qb)
    urls = iter([one.soap_url, two.soap_url] * 100)
    original = sim.call

    def alternating(method, params=None):
        sim.url = next(urls)
        return original(method, params)

    sim.call = alternating
    for replica in (one, two):  # small batches: several exchanges, each one split across replicas
        state = replica.running.spec.app.state.bridge
        state.settings = state.conversation.settings = replica.settings.model_copy(
            update={"max_batch_requests": 7}
        )
    report = sim.run_once()
    assert report.status == "ok" and report.percents[-1] == 100 and report.exchanges == 5
    assert job(two, jid)["state"] == "completed"
    assert all(count_customers(qb, f"Replica Co {i}") == 1 for i in range(30))


def test_token_created_by_cli_is_accepted(bridge_factory, database_url, monkeypatch, capsys):
    from erpsync.qbwc_bridge.cli import main

    b = bridge_factory(database_url)
    monkeypatch.setenv("QBWC_BRIDGE_ENVIRONMENT", "development")
    assert main(["--database-url", database_url, "token", "create", "--name", "ci"]) == 0
    token = capsys.readouterr().out.strip()
    assert token and token != TOKEN
    ok = httpx.get(f"{b.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200


def _wait_until(condition, failure: str, timeout: float = 120) -> None:
    """Poll `condition` until it holds; the deadline only stops a hung test."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        threading.Event().wait(0.01)


def test_sqlite_writers_of_one_process_are_served_in_arrival_order(tmp_path):
    """50 Web Connectors writing at once: each waits its turn, none is overtaken for long."""
    url = f"sqlite:///{tmp_path / 'fifo.db'}"
    migrate(url)
    store = Store(url)
    order: list[int] = []
    try:
        with store.session():  # hold the lock while the others queue up one by one
            threads = []
            for i in range(8):
                arrived = threading.Event()

                def write(i=i, arrived=arrived):
                    arrived.set()
                    with store.session() as s:
                        s.execute(text("SELECT 1"))
                        order.append(i)

                threads.append(threading.Thread(target=write))
                threads[-1].start()
                assert arrived.wait(60)
                # The next one starts only once this one is queued at the lock (a condition, not a pause).
                _wait_until(lambda i=i: len(store._writer._waiters) == i + 1, f"writer {i} never queued")
        for t in threads:
            t.join(10)
        assert order == list(range(8))
        with store.session(), store.session() as s:  # re-entrant in one thread
            assert s.execute(text("SELECT 1")).scalar() == 1
    finally:
        store.dispose()


def test_sqlite_wal_is_checkpointed_in_the_background(tmp_path, monkeypatch):
    """No commit pays for copying the WAL back: a background thread does it within a second."""
    from erpsync.qbwc_bridge import db

    monkeypatch.setattr(db._Checkpointer, "INTERVAL_SECONDS", 0.05)
    path = tmp_path / "wal.db"
    migrate(f"sqlite:///{path}")
    store = Store(f"sqlite:///{path}")
    try:
        size = path.stat().st_size
        with store.session() as s:
            s.execute(text("CREATE TABLE filler (x TEXT)"))
            s.execute(text("INSERT INTO filler VALUES (:x)"), [{"x": "y" * 1000}] * 500)
        assert path.stat().st_size == size  # committed to the WAL only
        _wait_until(lambda: path.stat().st_size > size + 400_000, "the WAL was never checkpointed")
    finally:
        store.dispose()
    assert store._checkpointer._thread is not None and not store._checkpointer._thread.is_alive()
