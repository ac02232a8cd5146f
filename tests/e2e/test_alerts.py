"""A failing step e-mails a local SMTP sink and posts to a webhook; a run that changed something
sends a summary, one that changed nothing stays quiet."""

from __future__ import annotations

import pytest

from tests.e2e import flow_world


@pytest.fixture
def alert_connections(monkeypatch):
    with flow_world.smtp_sink() as (smtp_port, mails), flow_world.webhook_sink() as (hook_port, posts):
        flow_world.set_alert_connections(monkeypatch, smtp_port, hook_port)
        yield mails, posts


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
