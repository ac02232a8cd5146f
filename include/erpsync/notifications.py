"""Notify a flow's own list of recipients, as the retired Autotask-Salesforce extension did.

The extension mailed the resources ticked on its Notifications tab after each import and whenever
errors occurred, with a check box "Do not generate e-mail notifications unless new or updated
accounts or contacts are discovered". Here that is two trigger-form params of the flow
(`notify_params`) read by `FlowNotifier`, a `SyncAlertNotifier` that:

- mails `notify_recipients` (the SMTP connection's `to` when the list is empty), for failure alerts
  and summaries alike, so a failed step always reaches them;
- sends the summary after a run that created or updated something, and after every run when
  `notify_every_run` is on (the check box cleared). A DAG running several flows (the Autotask
  companies, then contacts) sends one summary per flow, from each flow's report step.

The webhook channel is unchanged (one chat channel per deployment).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Param

from erpsync.alerts import AlertMessage, SyncAlertNotifier, build_summary_message

__all__ = ["FlowNotifier", "notify_params"]

log = logging.getLogger(__name__)


def notify_params(*, recipients: list[str] | None = None, every_run: bool = False) -> dict[str, Param]:
    """The trigger-form params of a flow's notifications (defaults for the scheduled runs)."""
    return {
        "notify_recipients": Param(
            list(recipients or []),
            type="array",
            items={"type": "string", "pattern": r"^[^@\s]+@[^@\s]+$"},
            description="E-mail addresses told after a run that created or updated something and "
            "whenever a step fails (empty: the erpsync_smtp connection's 'to').",
        ),
        "notify_every_run": Param(
            every_run,
            type="boolean",
            description="Send the summary after every run, also when nothing was created or updated.",
        ),
    }


class FlowNotifier(SyncAlertNotifier):
    """`SyncAlertNotifier` with the flow's recipients and its every-run setting (see the module doc)."""

    def notify(self, context) -> None:
        params = context.get("params") or {}
        self._recipients = [str(r) for r in params.get("notify_recipients") or []]
        if self.kind == "failure" or not params.get("notify_every_run"):
            return super().notify(context)
        ti = context["ti"]
        report = ti.xcom_pull(task_ids=ti.task_id) or {}
        message = build_summary_message(context, report) or _quiet_summary(context, report)
        self._send(context, message)

    def _send(self, context, message: AlertMessage) -> None:
        sent = [name for name, send in (("email", self._email), ("webhook", self._webhook)) if send(message)]
        log.info("Alert %r sent via %s", message.subject, ", ".join(sent) or "no configured channel")

    def _email(self, message: AlertMessage) -> bool:
        recipients = getattr(self, "_recipients", None)
        if not recipients:
            return super()._email(message)
        conn = self._connection(self.smtp_conn_id)
        if conn is None:
            log.warning("No connection %s: e-mail to %s not sent", self.smtp_conn_id, recipients)
            return False
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        with SmtpHook(smtp_conn_id=self.smtp_conn_id) as hook:
            hook.send_email_smtp(
                to=recipients,
                subject=message.subject,
                html_content=message.html(),
                from_email=conn.extra_dejson.get("from_email") or conn.login or "erpsync@localhost",
            )
        return True


def _quiet_summary(context, report: dict[str, Any]) -> AlertMessage:
    """The every-run summary of a run that changed nothing."""
    ti = context["ti"]
    counts = report.get("counts", report)
    facts = {
        "flow": ti.dag_id,
        "step": ti.task_id,
        "run": context.get("run_id") or ti.run_id,
        **{k: counts[k] for k in sorted(counts) if isinstance(counts[k], int)},
    }
    text = f"erpsync flow {ti.dag_id} ({ti.task_id}): nothing created or updated"
    return AlertMessage(subject=f"[erpsync] {ti.dag_id}: 0 created, 0 updated", text=text, facts=facts)
