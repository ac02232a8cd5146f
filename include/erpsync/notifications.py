"""Notify a flow's own list of recipients, as the retired Autotask-Salesforce extension did.

The extension mailed the resources ticked on its Notifications tab after each import and whenever
errors occurred, with a check box "Do not generate e-mail notifications unless new or updated
accounts or contacts are discovered". Here that is two trigger-form params of the flow
(`notify_params`) read by `FlowNotifier`, a `SyncAlertNotifier` that:

- mails `notify_recipients` (the SMTP connection's `to` when the list is empty), for failure alerts
  and summaries alike, so a failed step always reaches them;
- sends ONE summary per run, from the run's last report step: a DAG running several flows (the
  Autotask companies, then contacts) reports every stage in that one message (counts per stage, the
  Autotask calls of the run and their share of the tenant's hourly threshold). It goes out when a
  stage created or updated something, always when a stage's news is errors (rows newly quarantined
  or refused), and after every run when `notify_every_run` is on (the check box cleared);
- a failed step sends its failure alert at once (errors always reach the recipients); the run then
  stops before its last report, so that alert is the run's only message.

The webhook channel is unchanged (one chat channel per deployment).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Param

from erpsync.alerts import AlertMessage, SyncAlertNotifier

__all__ = ["FlowNotifier", "build_run_summary", "notify_params"]

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
    """`SyncAlertNotifier` with the flow's recipients, its every-run setting and one summary per run."""

    def notify(self, context) -> None:
        params = context.get("params") or {}
        self._recipients = [str(r) for r in params.get("notify_recipients") or []]
        if self.kind == "failure":
            return super().notify(context)
        stages = _stage_reports(context)
        if stages is None:
            log.info("A later stage's report sends this run's summary")
            return
        message = build_run_summary(context, stages, every_run=bool(params.get("notify_every_run")))
        if message is None:
            log.info("Nothing created or updated and no new errors: no summary sent")
            return
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


def _is_report(task_id: str) -> bool:
    return task_id == "report" or task_id.endswith(".report")


def _stage_reports(context) -> list[tuple[str, dict[str, Any]]] | None:
    """Return (flow, report) of every stage of the run so far, first stage first; None when a later
    stage's report follows this one (that one sends the run's summary)."""
    task, ti = context["task"], context["ti"]
    if any(_is_report(t) for t in task.get_flat_relative_ids(upstream=False)):
        return None
    dag = task.dag
    earlier = [dag.get_task(t) for t in task.get_flat_relative_ids(upstream=True) if _is_report(t)]
    # A stage's report has every earlier stage upstream of it: fewer upstream tasks, earlier stage.
    earlier.sort(key=lambda t: len(t.get_flat_relative_ids(upstream=True)))
    return [
        (getattr(t, "flow", None) or t.task_id, ti.xcom_pull(task_ids=t.task_id) or {})
        for t in [*earlier, task]
    ]


_COUNTS = ("created", "updated", "skipped", "failed", "quarantined")


def build_run_summary(
    context, stages: list[tuple[str, dict[str, Any]]], *, every_run: bool = False
) -> AlertMessage | None:
    """One message for the whole run: totals, each stage's counts, the API calls against the budget.

    None when no stage created or updated anything and none has new errors (status "errors" or rows
    quarantined for the first time), unless `every_run`.
    """
    ti = context["ti"]
    dag_id, run_id = ti.dag_id, context.get("run_id") or ti.run_id
    totals = {k: sum(int((r.get("counts") or {}).get(k, 0)) for _, r in stages) for k in _COUNTS}
    new = sum(int(r.get("new_quarantine") or 0) for _, r in stages)
    errors = [flow for flow, r in stages if r.get("status") == "errors" or r.get("new_quarantine")]
    created, updated = totals["created"], totals["updated"]
    if not (created or updated or errors or every_run):
        return None
    if created or updated or not errors:
        subject = f"[erpsync] {dag_id}: {created} created, {updated} updated"
        if new:
            subject += f", {new} newly quarantined"
    else:
        subject = f"[erpsync] {dag_id}: errors only, {new} newly quarantined"
    facts: dict[str, Any] = {"flow": dag_id, "run": run_id, **totals, "new_quarantine": new}
    lines = []
    for flow, report in stages:
        c = report.get("counts") or {}
        line = ", ".join(f"{c.get(k, 0)} {k}" for k in _COUNTS)
        if report.get("new_quarantine"):
            line += f" ({report['new_quarantine']} newly quarantined)"
        rules = ", ".join(
            f"{q['rows']} {q['stage']}/{q['rule']}" + (f" ({q['column']})" if q.get("column") else "")
            for q in report.get("quarantine") or []
        )
        facts[flow] = line + (f"; quarantine: {rules}" if rules else "")
        lines.append(f"{flow}: {line}")
    for system, usage in _usage(stages).items():
        facts[f"{system} calls"] = _budget_line(usage)
    if errors:
        facts["errors in"] = ", ".join(errors)
    text = f"erpsync flow {dag_id}: " + "; ".join(lines)
    return AlertMessage(subject=subject, text=text, facts=facts)


def _usage(stages: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The stages' API usage per system (`api_usage` of each report) added up, newest reading kept."""
    out: dict[str, dict[str, Any]] = {}
    for _, report in stages:
        for system, u in (report.get("api_usage") or {}).items():
            agg = out.setdefault(system, {"calls": 0})
            agg["calls"] += int(u.get("calls") or 0)
            for key in ("threshold", "budget_share"):
                if u.get(key) is not None:
                    agg[key] = u[key]
            reading = u.get("reading")
            if reading and str(reading.get("read_at")) > str((agg.get("reading") or {}).get("read_at", "")):
                agg["reading"] = reading
    return out


def _budget_line(usage: dict[str, Any]) -> str:
    line = f"{usage['calls']:,}"
    threshold = usage.get("threshold")
    if threshold:
        line += f" ({100 * usage['calls'] / threshold:.2f} % of the tenant's {threshold:,} per hour"
        if usage.get("budget_share"):
            line += f"; this package may use {usage['budget_share']:.0%}"
        line += ")"
    reading = usage.get("reading")
    if reading:
        line += f"; last ThresholdInformation: {reading['tenant_count']:,} at {reading['read_at']}"
    return line
