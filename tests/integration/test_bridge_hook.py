"""QbwcBridgeHook and QbwcJobTrigger against a live bridge (HTTP and HTTPS), errors classified."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest
from test_bridge_support import TOKEN, count_customers, customer_add, wc

from erpsync.errors import AuthError, ConfigError, RateLimitedError, RecordError, RetriableSourceError
from erpsync.hooks.qbwc_bridge import QbwcBridgeHook
from erpsync.triggers.qbwc_job import QbwcJobTrigger

pytest_plugins = ["test_bridge_support"]


def _connect(monkeypatch, conn_id: str, url: str, *, token: str = TOKEN, **extra) -> None:
    scheme, rest = url.split("://")
    host, port = rest.rsplit(":", 1)
    conn = {"conn_type": "qbwc_bridge", "host": host, "port": int(port), "schema": scheme, "password": token}
    conn["extra"] = {"company": "acme", "timeout": 10, **extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def _drain_later(bridge, qb, delay: float = 0.5) -> threading.Thread:
    thread = threading.Timer(delay, lambda: wc(bridge, qb).run_once())
    thread.start()
    return thread


def test_hook_enqueue_get_wait_cancel(bridge, qb, monkeypatch):
    _connect(monkeypatch, "qbwc_bridge_default", bridge.url)
    hook = QbwcBridgeHook()
    job = hook.enqueue([customer_add("Hook Co")], idempotency_key="dag/run/hook")
    assert job["state"] == "queued" and job["company"] == "acme"
    assert hook.enqueue([customer_add("Hook Co")], idempotency_key="dag/run/hook")["id"] == job["id"]
    drain = _drain_later(bridge, qb)
    done = hook.wait(job["id"], timeout=30, long_poll=5)
    drain.join()
    assert done["state"] == "completed" and done["results"][0]["list_id"]
    assert count_customers(qb, "Hook Co") == 1
    other = hook.enqueue([customer_add("Never Co")], idempotency_key="dag/run/cancel")
    assert hook.cancel(other["id"])["state"] == "cancelled"
    assert hook.test_connection()[0] is True


def test_hook_classifies_errors(bridge_factory, monkeypatch):
    b = bridge_factory(max_queued_requests=2)
    _connect(monkeypatch, "qbwc_bridge_default", b.url)
    hook = QbwcBridgeHook()
    with pytest.raises(RecordError) as bad:
        hook.enqueue(["<CustomerAddRq><CustomerAdd></CustomerAdd></CustomerAddRq>"], idempotency_key="k-bad")
    assert bad.value.details["status"] == 422 and bad.value.details["errors"][0]["index"] == 0
    with pytest.raises(ConfigError):
        hook.enqueue([customer_add("X")], idempotency_key="k-co", company="no-such-company")
    hook.enqueue([customer_add("A"), customer_add("B")], idempotency_key="k-full-1")
    with pytest.raises(RateLimitedError) as full:
        hook.enqueue([customer_add("C")], idempotency_key="k-full-2")
    assert full.value.retry_after and full.value.retry_after > 0
    _connect(monkeypatch, "qbwc_bridge_wrong", b.url, token="wrong-token")
    with pytest.raises(AuthError):
        QbwcBridgeHook("qbwc_bridge_wrong").get_job("whatever")
    assert QbwcBridgeHook("qbwc_bridge_wrong").test_connection()[0] is False
    _connect(monkeypatch, "qbwc_bridge_down", "http://127.0.0.1:9")
    with pytest.raises(RetriableSourceError, match="unreachable"):
        QbwcBridgeHook("qbwc_bridge_down").get_job("whatever")
    monkeypatch.setenv(
        "AIRFLOW_CONN_QBWC_BRIDGE_FTP", json.dumps({"conn_type": "qbwc_bridge", "host": "h", "schema": "ftp"})
    )
    with pytest.raises(ConfigError, match="schema must be http or https"):
        QbwcBridgeHook("qbwc_bridge_ftp").get_job("x")


def test_hook_over_https_trusts_only_the_configured_ca(bridge_factory, sandbox_ctx, monkeypatch):
    b = bridge_factory(tls=True)
    _connect(monkeypatch, "qbwc_bridge_tls", b.url, ca_bundle=str(sandbox_ctx.ca.ca_bundle))
    assert b.url.startswith("https://")
    hook = QbwcBridgeHook("qbwc_bridge_tls")
    assert hook.test_connection()[0] is True
    hook.close()  # no keep-alive connection left to hold the server's shutdown
    _connect(monkeypatch, "qbwc_bridge_tls_untrusted", b.url)
    untrusted = QbwcBridgeHook("qbwc_bridge_tls_untrusted")
    with pytest.raises(RetriableSourceError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.get_job("x")
    untrusted.close()


def test_trigger_serialize_round_trip():
    trigger = QbwcJobTrigger("abc", "qbwc_bridge_x", poll_interval=2, long_poll=7)
    path, kwargs = trigger.serialize()
    assert path == "erpsync.triggers.qbwc_job.QbwcJobTrigger"
    module, _, name = path.rpartition(".")
    rebuilt = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    assert kwargs == {
        "job_id": "abc",
        "qbwc_bridge_conn_id": "qbwc_bridge_x",
        "poll_interval": 2.0,
        "long_poll": 7.0,
    }
    with pytest.raises(ValueError, match="job_id"):
        QbwcJobTrigger("")
    with pytest.raises(ValueError, match="poll_interval"):
        QbwcJobTrigger("abc", poll_interval=0)


async def _first_event(trigger: QbwcJobTrigger, timeout: float):
    async def first():
        async for event in trigger.run():
            return event.payload

    return await asyncio.wait_for(first(), timeout)


def test_trigger_fires_once_the_web_connector_has_run(bridge, qb, monkeypatch):
    _connect(monkeypatch, "qbwc_bridge_default", bridge.url)
    job = QbwcBridgeHook().enqueue(
        [customer_add("Trigger Co"), customer_add("Trigger Co")], idempotency_key="t"
    )
    drain = _drain_later(bridge, qb, delay=1.0)
    event = asyncio.run(_first_event(QbwcJobTrigger(job["id"], poll_interval=0.2, long_poll=2), timeout=30))
    drain.join()
    assert event["status"] == "failed" and event["job_id"] == job["id"]  # the second add is a duplicate
    assert event["counts"]["done"] == 1 and event["counts"]["failed"] == 1
    assert len(json.dumps(event)) < 1000  # a small event, no results


def test_trigger_reports_unknown_jobs_and_bad_tokens(bridge, monkeypatch):
    _connect(monkeypatch, "qbwc_bridge_default", bridge.url)
    event = asyncio.run(
        _first_event(QbwcJobTrigger("no-such-job", poll_interval=0.1, long_poll=0), timeout=10)
    )
    assert event["status"] == "error" and "404" in event["message"]
    _connect(monkeypatch, "qbwc_bridge_wrong", bridge.url, token="nope")
    event = asyncio.run(_first_event(QbwcJobTrigger("x", "qbwc_bridge_wrong", long_poll=0), timeout=10))
    assert event["status"] == "error" and "401" in event["message"]


def test_trigger_waits_out_a_bridge_that_is_down(monkeypatch):
    """Transient failures keep the trigger waiting (the job lives in the bridge's store), not failing.

    The 'bridge' accepts each connection and drops it; the test waits until the trigger has come back
    three times (a condition, not a time span), then checks it never yielded an event.
    """
    attempts = threading.Semaphore(0)
    server = socket.create_server(("127.0.0.1", 0))

    def drop_every_connection() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # the server socket was closed: the test is over
            conn.close()
            attempts.release()

    threading.Thread(target=drop_every_connection, daemon=True).start()
    _connect(monkeypatch, "qbwc_bridge_down", f"http://127.0.0.1:{server.getsockname()[1]}")

    async def scenario() -> None:
        trigger = QbwcJobTrigger("j", "qbwc_bridge_down", poll_interval=0.05, long_poll=0)
        task = asyncio.ensure_future(_first_event(trigger, timeout=600))
        try:
            for n in range(3):
                came_back = await asyncio.to_thread(attempts.acquire, True, 120)
                assert came_back, f"the trigger stopped polling after {n} dropped connections"
                assert not task.done(), task.result()
        finally:
            task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        server.close()
