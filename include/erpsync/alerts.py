"""Tell people when a sync step fails, and (optionally) when a run changed something.

One notifier fans out to the channels that are configured, so a deployment without an SMTP server
or a chat webhook still runs: e-mail through the SMTP connection `erpsync_smtp` (recipients in its
extra `to`, sender in `from_email`) and a Slack-compatible webhook (`{"text": ...}`) through the
connection `erpsync_alerts_webhook` (URL in its extra `url`, or built from schema/host/port/path).
The message says which flow, which step, how many records and why.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseNotifier

__all__ = [
    "AlertMessage",
    "SyncAlertNotifier",
    "build_errors_message",
    "build_failure_message",
    "build_summary_message",
]

log = logging.getLogger(__name__)

SMTP_CONN_ID = "erpsync_smtp"
WEBHOOK_CONN_ID = "erpsync_alerts_webhook"


@dataclass
class AlertMessage:
    subject: str
    text: str
    facts: dict[str, Any] = field(default_factory=dict)

    def html(self) -> str:
        from html import escape

        rows = "".join(
            f"<tr><th align=left>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
            for k, v in self.facts.items()
        )
        return f"<p>{escape(self.text)}</p><table>{rows}</table>"


def _ids(context) -> tuple[str, str, str]:
    ti = context["ti"]
    return ti.dag_id, ti.task_id, context.get("run_id") or ti.run_id


def build_failure_message(context) -> AlertMessage:
    """Describe a failed task: flow, step, run, try, the error and any record counts it carries."""
    dag_id, task_id, run_id = _ids(context)
    exc = context.get("exception")
    reason = str(exc) if exc else "unknown error (see the task log)"
    facts: dict[str, Any] = {"flow": dag_id, "step": task_id, "run": run_id, "try": context["ti"].try_number}
    details = getattr(exc, "details", None) or {}
    for key in ("records", "failed", "quarantined", "total", "failed_by_rule"):
        if key in details:
            facts[key] = details[key]
    facts["error"] = f"{type(exc).__name__}: {reason}" if exc else reason
    counts = f" ({details['records']} records)" if "records" in details else ""
    text = f"erpsync flow {dag_id} failed at step {task_id}{counts}: {reason}"
    return AlertMessage(subject=f"[erpsync] {dag_id}.{task_id} failed", text=text, facts=facts)


def build_summary_message(context, report: dict) -> AlertMessage | None:
    """Summarise a finished run; None when nothing was created or updated (notify only on change).

    A run whose only news is errors (report status "errors": rows refused at upsert or quarantined
    for the first time, nothing written) gets the failure summary instead of silence.
    """
    if report.get("status") == "errors":
        return build_errors_message(context, report)
    counts = report.get("counts", report)
    created, updated = int(counts.get("created", 0)), int(counts.get("updated", 0))
    if not created and not updated:
        return None
    dag_id, _, run_id = _ids(context)
    facts = {
        "flow": dag_id,
        "run": run_id,
        **{k: counts[k] for k in sorted(counts) if isinstance(counts[k], int)},
    }
    text = f"erpsync flow {dag_id}: {created} created, {updated} updated"
    return AlertMessage(
        subject=f"[erpsync] {dag_id}: {created} created, {updated} updated", text=text, facts=facts
    )


def build_errors_message(context, report: dict) -> AlertMessage:
    """Describe a run that wrote nothing and whose news is errors: what failed, by rule."""
    dag_id, _, run_id = _ids(context)
    counts = report.get("counts") or {}
    failed, new = int(counts.get("failed", 0)), int(report.get("new_quarantine", 0))
    rules = ", ".join(
        f"{q['rows']} {q['stage']}/{q['rule']}" + (f" ({q['column']})" if q.get("column") else "")
        for q in report.get("quarantine") or []
    )
    facts: dict[str, Any] = {
        "flow": dag_id,
        "run": run_id,
        "status": "errors",
        "new_quarantine": new,
        **{k: counts[k] for k in sorted(counts) if isinstance(counts[k], int)},
    }
    if rules:
        facts["quarantine_by_rule"] = rules
    text = (
        f"erpsync flow {dag_id} finished with errors only: {failed} refused at upsert, "
        f"{new} newly quarantined, nothing created or updated" + (f" ({rules})" if rules else "")
    )
    return AlertMessage(
        subject=f"[erpsync] {dag_id}: errors only, {new} newly quarantined", text=text, facts=facts
    )


class SyncAlertNotifier(BaseNotifier):
    """Send a failure alert, or a change summary, to every configured channel.

    :param kind: "failure" (use as on_failure_callback) or "summary" (on_success_callback of the
        report step: reads that step's return value and stays quiet when nothing changed).
    :param smtp_conn_id: SMTP connection; skipped when it does not exist.
    :param webhook_conn_id: webhook connection; skipped when it does not exist.
    """

    def __init__(
        self,
        *,
        kind: str = "failure",
        smtp_conn_id: str = SMTP_CONN_ID,
        webhook_conn_id: str = WEBHOOK_CONN_ID,
    ):
        super().__init__()
        if kind not in {"failure", "summary"}:
            raise ValueError(f"kind must be 'failure' or 'summary', not {kind!r}")
        self.kind = kind
        self.smtp_conn_id = smtp_conn_id
        self.webhook_conn_id = webhook_conn_id

    def notify(self, context) -> None:
        if self.kind == "failure":
            message = build_failure_message(context)
        else:
            report = context["ti"].xcom_pull(task_ids=context["ti"].task_id) or {}
            message = build_summary_message(context, report)
            if message is None:
                log.info("Nothing created or updated: no summary sent")
                return
        sent = [name for name, send in (("email", self._email), ("webhook", self._webhook)) if send(message)]
        log.info("Alert %r sent via %s", message.subject, ", ".join(sent) or "no configured channel")

    @staticmethod
    def _connection(conn_id: str):
        """Return the connection, or None when it is not defined (the channel is simply not configured)."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException, AirflowRuntimeError

        try:
            return BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            return None
        except AirflowRuntimeError as exc:  # inside a task: the supervisor answers CONNECTION_NOT_FOUND
            if "CONNECTION_NOT_FOUND" in str(getattr(exc, "error", exc)):
                return None
            raise

    def _email(self, message: AlertMessage) -> bool:
        conn = self._connection(self.smtp_conn_id)
        if conn is None:
            return False
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        extra = conn.extra_dejson
        to = extra.get("to") or []
        if not to:
            log.warning(
                "Connection %s has no 'to' recipients in its extra: e-mail not sent", self.smtp_conn_id
            )
            return False
        with SmtpHook(smtp_conn_id=self.smtp_conn_id) as hook:
            hook.send_email_smtp(
                to=to,
                subject=message.subject,
                html_content=message.html(),
                from_email=extra.get("from_email") or conn.login or "erpsync@localhost",
            )
        return True

    def _webhook(self, message: AlertMessage) -> bool:
        conn = self._connection(self.webhook_conn_id)
        if conn is None:
            return False
        import urllib.request

        extra = conn.extra_dejson
        url = extra.get("url")
        if not url:
            port = f":{conn.port}" if conn.port else ""
            url = f"{conn.schema or 'https'}://{conn.host}{port}/{(extra.get('path') or '').lstrip('/')}"
        body = json.dumps({"text": message.text, "erpsync": message.facts}, default=str).encode()
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=float(extra.get("timeout", 10))) as resp:
            resp.read()
        return True
