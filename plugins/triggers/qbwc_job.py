"""`QbwcJobTrigger`: wait for a bridge job in the triggerer, holding no worker slot.

It long-polls `GET /api/v1/jobs/{id}?wait=` with async httpx, so a job that finishes is noticed at
once while an idle wait costs one open request per `long_poll` seconds. Transient failures (bridge
restarting, 5xx, timeouts) are waited out, because the job lives in the bridge's store and survives
them; a refused token or an unknown job ends the wait with an error event. The event is a small
dict (state and counts), never the results; the operator reads those through the hook.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

__all__ = ["QbwcJobTrigger"]

_TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})


class QbwcJobTrigger(BaseTrigger):
    """Fire once the bridge job `job_id` is completed, failed, cancelled or expired.

    :param job_id: the job id returned by the enqueue call.
    :param qbwc_bridge_conn_id: connection of the bridge (token read in the triggerer, never serialized).
    :param poll_interval: pause after a transient error, seconds.
    :param long_poll: how long each request asks the bridge to hold the answer, seconds.
    """

    def __init__(
        self,
        job_id: str,
        qbwc_bridge_conn_id: str = "qbwc_bridge_default",
        poll_interval: float = 5.0,
        long_poll: float = 30.0,
    ):
        super().__init__()
        if not isinstance(job_id, str) or not job_id:
            raise ValueError(f"job_id must be a non-empty string, got {job_id!r}")
        if poll_interval <= 0 or long_poll < 0:
            raise ValueError(
                f"poll_interval must be > 0 and long_poll >= 0, got {poll_interval}, {long_poll}"
            )
        self.job_id = job_id
        self.qbwc_bridge_conn_id = qbwc_bridge_conn_id
        self.poll_interval = float(poll_interval)
        self.long_poll = float(long_poll)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "erpsync.triggers.qbwc_job.QbwcJobTrigger",
            {
                "job_id": self.job_id,
                "qbwc_bridge_conn_id": self.qbwc_bridge_conn_id,
                "poll_interval": self.poll_interval,
                "long_poll": self.long_poll,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import httpx
        from airflow.sdk import BaseHook

        from erpsync.errors import RetriableSourceError, SyncError
        from erpsync.hooks.qbwc_bridge import bridge_config, classify_response

        try:
            cfg = bridge_config(await BaseHook.aget_connection(self.qbwc_bridge_conn_id))
        except Exception as exc:
            yield TriggerEvent({"status": "error", "job_id": self.job_id, "message": f"connection: {exc}"})
            return
        headers = {"Authorization": f"Bearer {cfg.token}"}
        async with httpx.AsyncClient(base_url=cfg.base_url, verify=cfg.verify, headers=headers) as client:
            while True:
                try:
                    resp = await client.get(
                        f"/api/v1/jobs/{self.job_id}",
                        params={"wait": self.long_poll, "results": "false"},
                        timeout=cfg.timeout + self.long_poll,
                    )
                    if resp.status_code >= 400:
                        try:
                            body = resp.json()
                        except ValueError:
                            body = resp.text
                        raise classify_response(
                            resp.status_code, body, f"job {self.job_id}", resp.headers.get("retry-after")
                        )
                    job = resp.json()
                except (httpx.TransportError, RetriableSourceError) as exc:
                    self.log.info("bridge not answering for job %s (%s); waiting", self.job_id, exc)
                    await asyncio.sleep(self.poll_interval)
                    continue
                except SyncError as exc:
                    yield TriggerEvent({"status": "error", "job_id": self.job_id, "message": str(exc)})
                    return
                if job["state"] in _TERMINAL:
                    yield TriggerEvent(
                        {
                            "status": job["state"],
                            "job_id": self.job_id,
                            "company": job.get("company"),
                            "counts": job.get("counts", {}),
                            "error": job.get("error"),
                        }
                    )
                    return
                if self.long_poll == 0:
                    await asyncio.sleep(self.poll_interval)
