"""`QbwcJobOperator`: send qbXML requests to QuickBooks through the bridge and wait, deferred.

`execute()` enqueues the job with the idempotency key `dag_id/run_id/task_id[/map_index]`, so a
worker that dies after enqueueing and a retry of the task find the same job instead of queueing the
writes twice, then defers on `QbwcJobTrigger` (no worker slot held while the Web Connector is away).
`execute_complete()` returns a small manifest (job id, state, counts) for XCom, or fails with the
per-request errors. A failed job is not retried by Airflow: its key returns the same failed job, and
QuickBooks refusals (duplicate name, bad reference) do not heal by themselves; fix, then clear.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

__all__ = ["QbwcJobOperator"]


class QbwcJobOperator(BaseOperator):
    """Run an ordered list of qbXML requests for one company file and wait for the Web Connector.

    :param requests: qbXML request elements (templated), e.g. ``["<CustomerAddRq>...</CustomerAddRq>"]``.
    :param company: company name on the bridge (templated); default: the connection's `company` extra.
    :param on_error: "continue" (each request stands alone) or "stop" (skip the rest after a failure).
    :param qbwc_bridge_conn_id: the bridge connection.
    :param wait_timeout: how long to wait for the Web Connector before failing the task.
    :param poll_interval: trigger pause after a transient bridge error, seconds.
    :param long_poll: seconds each trigger request waits at the bridge.
    :param deferrable: wait in the triggerer (default) or block the worker.
    """

    template_fields: Sequence[str] = ("requests", "company")
    ui_color = "#e8f4e8"

    def __init__(
        self,
        *,
        requests: list[str] | str,
        company: str | None = None,
        on_error: str = "continue",
        qbwc_bridge_conn_id: str = "qbwc_bridge_default",
        wait_timeout: timedelta = timedelta(hours=12),
        poll_interval: float = 5.0,
        long_poll: float = 30.0,
        deferrable: bool = True,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if on_error not in {"continue", "stop"}:
            raise ValueError(f"on_error must be 'continue' or 'stop', got {on_error!r}")
        self.requests, self.company, self.on_error = requests, company, on_error
        self.qbwc_bridge_conn_id = qbwc_bridge_conn_id
        self.wait_timeout, self.poll_interval, self.long_poll = wait_timeout, poll_interval, long_poll
        self.deferrable = deferrable

    def _hook(self):
        from erpsync.hooks.qbwc_bridge import QbwcBridgeHook

        return QbwcBridgeHook(self.qbwc_bridge_conn_id, company=self.company)

    @staticmethod
    def idempotency_key(context: Any) -> str:
        ti = context["ti"]
        key = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}"
        map_index = getattr(ti, "map_index", -1)
        return f"{key}/{map_index}" if map_index is not None and map_index >= 0 else key

    def execute(self, context: Any) -> dict[str, Any]:
        requests = self.requests
        if isinstance(requests, str):  # a template rendered to one string of JSON
            import json

            requests = json.loads(requests)
        hook = self._hook()
        job = hook.enqueue(requests, idempotency_key=self.idempotency_key(context), on_error=self.on_error)
        self.log.info(
            "bridge job %s for %s: %s (%d requests)", job["id"], job["company"], job["state"], len(requests)
        )
        if job["state"] in {"completed", "failed", "cancelled", "expired"}:
            return self._finish(job["id"], job["state"])
        if not self.deferrable:
            done = hook.wait(job["id"], timeout=self.wait_timeout.total_seconds(), long_poll=self.long_poll)
            return self._finish(done["id"], done["state"])
        from erpsync.triggers.qbwc_job import QbwcJobTrigger

        self.defer(
            trigger=QbwcJobTrigger(
                job["id"],
                self.qbwc_bridge_conn_id,
                poll_interval=self.poll_interval,
                long_poll=self.long_poll,
            ),
            method_name="execute_complete",
            timeout=self.wait_timeout,
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if not event or event.get("status") == "error":
            from airflow.sdk.exceptions import AirflowException

            raise AirflowException(f"waiting for bridge job failed: {(event or {}).get('message')}")
        return self._finish(event["job_id"], event["status"])

    def _finish(self, job_id: str, state: str) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from erpsync.hooks.qbwc_bridge import job_errors

        job = self._hook().get_job(job_id)
        manifest = {
            "job_id": job_id,
            "company": job.get("company"),
            "state": job["state"],
            "counts": job["counts"],
        }
        if job["state"] == "completed":
            self.log.info("bridge job %s completed: %s", job_id, job["counts"])
            return manifest
        errors = job_errors(job)
        detail = "\n".join(errors) or job.get("error") or ""
        raise AirflowFailException(f"bridge job {job_id} {job['state']}: {detail}")
