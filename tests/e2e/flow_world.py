"""Shared pieces of the end-to-end flow tests (tests/e2e/test_flow_*.py).

Each flow module runs one real DAG from dags/ with `dag.test()` in this pytest process, against the
simulators over real sockets. The helpers here run a DAG with every param spelled out (dag.test()
keeps run_conf params on the DAG object between runs), collect task states, XComs and the failed
tasks' error lines so a failure reads well, and provide the SMTP and webhook sinks for alerting.
"""

from __future__ import annotations

import email
import json
import re
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

PARAMS = {"dry_run": False, "full_refresh": True}


@dataclass
class FlowRun:
    """One finished `dag.test()` run: its DagRun, task states and the failed tasks' error lines."""

    dr: Any
    states: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.dr.state == "success"

    def xcom(self, task_id: str) -> Any:
        return self.dr.get_task_instance(task_id).xcom_pull(task_ids=task_id)

    @property
    def counts(self) -> dict[str, int]:
        return (self.xcom("report") or {}).get("counts") or {}

    def why(self) -> str:
        """A readable account of a run for assertion messages: states plus each failure's error lines."""
        lines = [f"run {self.dr.run_id}: {self.dr.state}", f"tasks: {self.states}"]
        for task_id, text in self.errors.items():
            lines.append(f"--- {task_id} failed:\n{text}")
        return "\n".join(lines)


_STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def _failure_blocks(log: str) -> list[str]:
    """The 'Task failed with exception' entries of a run's log, each with its traceback."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in log.splitlines():
        if _STAMPED.match(line):
            if current is not None:
                blocks.append("\n".join(current))
                current = None
            if "Task failed with exception" in line:
                current = [line]
        elif current is not None:
            current.append(line)
    if current is not None:
        blocks.append("\n".join(current))
    return blocks


def _last_lines(block: str, n: int = 12) -> str:
    """The end of a traceback: the exception lines say why."""
    return "\n".join(block.splitlines()[-n:])


def run_dag(dag, capfd=None, **params: Any) -> FlowRun:
    """Run `dag` once with `dag.test()`, every param given explicitly (defaults: PARAMS)."""
    conf = {**PARAMS, **params}
    dr = dag.test(run_conf=conf)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    run = FlowRun(dr, states)
    if capfd is not None:
        out, err = capfd.readouterr()
        # Give the log back to pytest's report (shown when the test fails).
        sys.stdout.write(out)
        sys.stderr.write(err)
        tis = sorted(
            (ti for ti in dr.get_task_instances() if ti.state == "failed"),
            key=lambda ti: ti.start_date or ti.end_date,
        )
        # Task logs go to stderr without the task id on each line; failures come in run order.
        blocks = _failure_blocks(err + "\n" + out)
        if len(blocks) == len(tis):
            run.errors = {ti.task_id: _last_lines(b) for ti, b in zip(tis, blocks, strict=True)}
        else:
            joined = "\n...\n".join(_last_lines(b) for b in blocks) or "(no failure found in the log)"
            run.errors = {ti.task_id: joined for ti in tis}
    return run


# ---- alert sinks ---------------------------------------------------------------------------------


@contextmanager
def smtp_sink():
    """A real SMTP server (aiosmtpd) on a free port; yields (port, received messages)."""
    from aiosmtpd.controller import Controller

    from erpsync.localstack import free_port

    received: list = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


@contextmanager
def webhook_sink():
    """A local HTTP server that records JSON POST bodies; yields (port, posts)."""
    posts: list = []

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
    try:
        yield server.server_address[1], posts
    finally:
        server.shutdown()
        server.server_close()


def set_alert_connections(monkeypatch, smtp_port: int, webhook_port: int) -> None:
    """Point the notifier's connections `erpsync_smtp` and `erpsync_alerts_webhook` at the sinks."""
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
        json.dumps({"conn_type": "http", "extra": {"url": f"http://127.0.0.1:{webhook_port}/hooks/sync"}}),
    )


def mail_html(message) -> str:
    return "".join(
        part.get_payload(decode=True).decode()
        for part in message.walk()
        if part.get_content_type() == "text/html"
    )
