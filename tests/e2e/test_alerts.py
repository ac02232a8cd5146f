"""A failing step e-mails a local SMTP sink and posts to a webhook; a run that changed something
sends a summary, one that changed nothing stays quiet."""

from __future__ import annotations

import email
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest


@pytest.fixture
def smtp_sink():
    from aiosmtpd.controller import Controller

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    from erpsync.localstack import free_port

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, received
    controller.stop()


@pytest.fixture
def webhook_sink():
    posts = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], posts
    server.shutdown()


@pytest.fixture
def alert_connections(monkeypatch, smtp_sink, webhook_sink):
    smtp_port, mails = smtp_sink
    hook_port, posts = webhook_sink
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_SMTP",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": smtp_port,
                "extra": {
                    "disable_ssl": True,
                    "disable_tls": True,
                    "to": ["ops@example.com"],
                    "from_email": "erpsync@example.com",
                },
            }
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_ALERTS_WEBHOOK",
        json.dumps({"conn_type": "http", "extra": {"url": f"http://127.0.0.1:{hook_port}/hooks/sync"}}),
    )
    return mails, posts


def test_failure_alert_by_email_and_webhook(test_dag, alert_connections):
    mails, posts = alert_connections
    run = test_dag("alert_probe", "alert_probe.py").test(run_conf={"fail": True})
    assert run.state == "failed"
    assert len(mails) == 1 and len(posts) == 1
    mail = mails[0]
    assert mail["Subject"] == "[erpsync] alert_probe.upsert failed"
    assert mail["To"] == "ops@example.com"
    body = "".join(
        part.get_payload(decode=True).decode()
        for part in mail.walk()
        if part.get_content_type() == "text/html"
    )
    assert "QuickBooks refused the batch" in body and "42" in body
    assert (
        posts[0]["text"]
        == "erpsync flow alert_probe failed at step upsert (42 records): QuickBooks refused the batch"
    )
    assert posts[0]["erpsync"]["records"] == 42 and posts[0]["erpsync"]["step"] == "upsert"


def test_summary_only_when_something_changed(test_dag, alert_connections):
    mails, posts = alert_connections
    dag = test_dag("alert_probe", "alert_probe.py")
    assert dag.test(run_conf={"changed": 0}).state == "success"
    assert mails == [] and posts == []
    assert dag.test(run_conf={"changed": 3}).state == "success"
    assert [m["Subject"] for m in mails] == ["[erpsync] alert_probe: 3 created, 0 updated"]
    assert posts[-1]["erpsync"]["created"] == 3 and posts[-1]["erpsync"]["skipped"] == 5


def test_missing_channels_are_skipped_not_fatal(test_dag, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_ERPSYNC_SMTP", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_ERPSYNC_ALERTS_WEBHOOK", raising=False)
    run = test_dag("alert_probe", "alert_probe.py").test(run_conf={"changed": 2})
    assert run.state == "success"
