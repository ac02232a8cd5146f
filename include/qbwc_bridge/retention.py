"""Payload retention: the qbXML of finished jobs (customer data) is removed after a retention period.

The store needs a request's qbXML only while it may still be sent or reconciled, and its answer only
until the DAG task has read it. After `QBWC_BRIDGE_PAYLOAD_RETENTION_DAYS` (default 30) from the
job's end, `request_xml` becomes "" and `response_xml` NULL; the job, its state, counts, and each
request's state, status code/message and ListID/TxnID/EditSequence are kept (the audit trail and
idempotency keys still work), and the job records `payload_pruned_at`. The HCP answer of sessions
older than the period (company file facts) is dropped too. A request still pending, sent or lost
(a cancelled job's request on the wire) keeps its payload until it settles.

It runs from `qbwc-bridge prune [--older-than DAYS]` and, in a serving bridge, at most once an hour
on a background thread started by a successful Web Connector login (`AutoPruner`): no extra process
to schedule, and a bridge nobody polls has nothing new to prune.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select, update

from erpsync.errors import ConfigError
from erpsync.qbwc_bridge._sql import ACTIVE_REQUEST_STATES
from erpsync.qbwc_bridge.db import Store
from erpsync.qbwc_bridge.models import Job, JobRequest, Ticket

__all__ = ["PRUNE_EVERY_SECONDS", "AutoPruner", "PruneReport", "prune_payloads"]

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 3600.0
#: Jobs per transaction: keeps each write short (SQLite has one writer, and SOAP calls queue behind it).
BATCH_JOBS = 200
_FINISHED = ("completed", "failed", "cancelled", "expired")


@dataclass
class PruneReport:
    jobs: int = 0
    requests: int = 0
    sessions: int = 0


def prune_payloads(store: Store, *, older_than_days: float, now: float | None = None) -> PruneReport:
    """Remove the qbXML of jobs finished more than `older_than_days` ago, and old sessions' HCP answers."""
    if older_than_days < 0:
        raise ConfigError(f"retention must be 0 days or more, got {older_than_days}", where="--older-than")
    now = time.time() if now is None else now
    cutoff = now - older_than_days * 86_400
    report = PruneReport()
    after = ""
    while True:
        with store.session() as s:
            ids = list(
                s.scalars(
                    select(Job.id)
                    .where(
                        Job.state.in_(_FINISHED),
                        Job.finished_at < cutoff,
                        Job.payload_pruned_at.is_(None),
                        Job.id > after,
                    )
                    .order_by(Job.id)
                    .limit(BATCH_JOBS)
                )
            )
            if not ids:
                break
            after = ids[-1]
            report.requests += (
                s.execute(
                    update(JobRequest)
                    .where(JobRequest.job_id.in_(ids), JobRequest.state.not_in(ACTIVE_REQUEST_STATES))
                    .values(request_xml="", response_xml=None)
                ).rowcount
                or 0
            )
            busy = set(
                s.scalars(
                    select(JobRequest.job_id)
                    .where(JobRequest.job_id.in_(ids), JobRequest.state.in_(ACTIVE_REQUEST_STATES))
                    .distinct()
                )
            )
            done = [job_id for job_id in ids if job_id not in busy]
            if done:
                s.execute(update(Job).where(Job.id.in_(done)).values(payload_pruned_at=now))
            report.jobs += len(done)
    with store.session() as s:
        report.sessions = (
            s.execute(
                update(Ticket)
                .where(
                    Ticket.hcp_response.is_not(None),
                    Ticket.created_at < cutoff,
                    (Ticket.state != "open") | (Ticket.expires_at < now),
                )
                .values(hcp_response=None)
            ).rowcount
            or 0
        )
    return report


class AutoPruner:
    """Runs `prune_payloads` on a background thread at most once per PRUNE_EVERY_SECONDS per process."""

    def __init__(self, store: Store):
        self._store = store
        self._guard = threading.Lock()
        self._next = 0.0
        self.thread: threading.Thread | None = None

    def maybe_start(self, days: float) -> None:
        """Start a pruning pass if none ran within the hour; `days` 0 means automatic pruning is off."""
        now = time.monotonic()
        if days <= 0 or now < self._next:
            return
        with self._guard:
            if now < self._next:
                return
            self._next = now + PRUNE_EVERY_SECONDS
            self.thread = threading.Thread(target=self._run, args=(days,), name="qbwc-prune", daemon=True)
            self.thread.start()

    def _run(self, days: float) -> None:
        try:
            report = prune_payloads(self._store, older_than_days=days)
        except Exception:  # never take a login down with it; the next hour tries again
            log.exception("pruning stored qbXML payloads failed")
            return
        if report.jobs or report.requests or report.sessions:
            log.info(
                "pruned qbXML payloads older than %s days: %d jobs, %d requests, %d sessions",
                days,
                report.jobs,
                report.requests,
                report.sessions,
            )
