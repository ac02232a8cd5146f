"""The job queue: enqueue (validated, idempotent, bounded), read back, cancel, expire, settle states.

A job is an ordered list of qbXML requests for one company. Each request becomes a `JobRequest` row
with a bridge-assigned requestID, so results route back whatever else shares the exchange.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from erpsync.errors import ConfigError, FatalSourceError, RateLimitedError, RecordError, SyncError
from erpsync.qbwc_bridge import _qbxml, _sql
from erpsync.qbwc_bridge._sql import ACTIVE_REQUEST_STATES
from erpsync.qbwc_bridge.crud import company_by_name
from erpsync.qbwc_bridge.models import Company, Job, JobRequest

__all__ = [
    "ACTIVE_REQUEST_STATES",
    "REQUEST_STATES",
    "TERMINAL_JOB_STATES",
    "InvalidRequests",
    "JobConflict",
    "QueueFull",
    "UnknownCompany",
    "UnknownJob",
    "cancel_job",
    "enqueue",
    "expire_jobs",
    "get_job",
    "job_view",
    "list_jobs",
    "settle_jobs",
]

TERMINAL_JOB_STATES = frozenset({"completed", "failed", "cancelled", "expired"})
#: Every request state, as `counts` reports them. `in_doubt`: sent, never acknowledged, and the probes
#: could not tell whether QuickBooks applied it; final, never resent, its job ends `failed`.
REQUEST_STATES = ("pending", "sent", "lost", "done", "failed", "in_doubt", "cancelled")
#: Final request states that keep a job from `completed`, counted when the job settles.
_UNAPPLIED_IN_JOB = (
    select(JobRequest.state, func.count())
    .where(JobRequest.job_id == bindparam("job_id"), JobRequest.state.in_(("failed", "in_doubt")))
    .group_by(JobRequest.state)
)


class UnknownCompany(ConfigError):
    """No company file with that name is registered."""


class UnknownJob(FatalSourceError):
    """No job with that id."""


class JobConflict(FatalSourceError):
    """The idempotency key was used before with a different body, or the job can no longer change."""


class QueueFull(RateLimitedError):
    """The company's queue holds as many requests as allowed; retry after the Web Connector drains it."""


class InvalidRequests(RecordError):
    """One or more requests failed validation; `details["errors"]` lists index, field and message."""


def _now() -> float:
    return time.time()


def _body_hash(company: str, requests: list[str], on_error: str) -> str:
    return hashlib.sha256(json.dumps([company, requests, on_error]).encode()).hexdigest()


_CDATA_OR_COMMENT = re.compile(r"<!\[CDATA\[.*?\]\]>|<!--.*?-->", re.S)


def _surrogate_at(text: str) -> int | None:
    """Index of a lone UTF-16 surrogate (JSON "\\ud800" decodes to one; no database can store it)."""
    try:
        text.encode("utf-8")  # fails on surrogates only, at C speed
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _check_text(xml: str) -> None:
    """Refuse what no parser check catches later: lone surrogates and processing instructions.

    The bridge writes the `<?xml?>` and `<?qbxml version?>` headers of each document itself; a PI
    inside a request would travel into the batch and could change how QuickBooks reads the document.
    """
    at = _surrogate_at(xml)
    if at is not None:
        raise _qbxml.BadRequestXml(f"lone UTF-16 surrogate U+{ord(xml[at]):04X} at character {at}")
    if "<?" in xml and "<?" in _CDATA_OR_COMMENT.sub("", xml):
        raise _qbxml.BadRequestXml(
            "processing instruction (<?...?>) in the request: send the request element alone; "
            "the bridge writes the <?xml?> and <?qbxml?> headers"
        )


def _version_check(company: str, version: str | None):
    """A check refusing requests with elements newer than the company's qbXML version, or None.

    The version is what the company's QuickBooks reported in its last Web Connector session; a
    document holding a newer element would be rejected whole (HRESULT 0x80040400) at send time.
    """
    if not version:
        return None
    try:
        from erpsync.qbwc_bridge.qbxml.versions import first_too_new, newest, version_key
    except ImportError:  # the qbXML library is optional for the bridge
        return None
    if version_key(version) >= version_key(newest()):
        return None  # every element the library knows exists in this version

    def check(stored: str) -> None:
        too_new = first_too_new(_qbxml.parse_fragment(stored), version)
        if too_new is not None:
            path, since = too_new
            raise InvalidRequests(
                f"{path} needs qbXML {since}, but the QuickBooks of company {company!r} speaks qbXML "
                f"{version} at most (its last Web Connector session said so); leave the element out "
                "or upgrade QuickBooks",
                where=path,
            )

    return check


def _validate(requests: list[str], short_id: str, version_check=None) -> list[dict[str, Any]]:
    """Return one row per request (index, kind, caller requestID, the XML as stored with our
    requestID `<short_id>.<index>`), or raise InvalidRequests naming every bad request."""
    errors, parsed = [], []
    for index, xml in enumerate(requests):
        try:
            if not isinstance(xml, str) or not xml.strip():
                raise _qbxml.BadRequestXml("empty request; expected one qbXML request element")
            _check_text(xml)
            qb_rid = f"{short_id}.{index}"
            kind, caller_rid, stored = _qbxml.prepare_request(xml, request_id=qb_rid)
            if version_check is not None:
                version_check(stored)
            parsed.append(
                {
                    "index": index,
                    "kind": kind,
                    "caller_request_id": caller_rid,
                    "qb_rid": qb_rid,
                    "xml": stored,
                }
            )
        except SyncError as exc:  # QbxmlValidationError (a RecordError) or an unsafe/malformed-XML error
            field = exc.details.get("field") or getattr(exc, "field", None) or exc.where
            errors.append({"index": index, "field": field, "message": exc.message})
    if errors:
        first = errors[0]
        raise InvalidRequests(
            f"{len(errors)} of {len(requests)} requests are invalid; first: request {first['index']}"
            f"{' field ' + str(first['field']) if first['field'] else ''}: {first['message']}",
            where="requests",
            details={"errors": errors},
        )
    return parsed


def enqueue(
    *,
    session: Session,
    company: str,
    requests: list[str],
    on_error: str = "continue",
    idempotency_key: str | None = None,
    max_queued: int,
    max_per_job: int,
    ttl_seconds: float,
) -> tuple[Job, bool]:
    """Queue a job; return (job, created). The same idempotency key returns the existing job."""
    if on_error not in {"continue", "stop"}:
        raise InvalidRequests("on_error must be 'continue' or 'stop'", where="on_error")
    if not isinstance(requests, list) or not requests:
        raise InvalidRequests("requests must be a non-empty list of qbXML request elements", where="requests")
    if len(requests) > max_per_job:
        raise InvalidRequests(
            f"{len(requests)} requests in one job; at most {max_per_job} are allowed", where="requests"
        )
    if not isinstance(company, str) or _surrogate_at(company) is not None:
        raise InvalidRequests("company must be a name without lone UTF-16 surrogates", where="company")
    found = company_by_name(session=session, name=company)
    if found is None:
        raise UnknownCompany(f"no company named {company!r} is registered with the bridge", where="company")
    body_hash = _body_hash(company, requests, on_error)
    if idempotency_key:
        existing = session.scalar(
            select(Job).where(Job.company_id == found.id, Job.idempotency_key == idempotency_key)
        )
        if existing is not None:
            if existing.body_hash != body_hash:
                raise JobConflict(
                    f"Idempotency-Key {idempotency_key!r} was used for a different job ({existing.id})",
                    where="Idempotency-Key",
                )
            return existing, False
    job_id = uuid.uuid4().hex
    parsed = _validate(requests, job_id[:20], _version_check(company, found.qbxml_version))
    queued = session.scalar(
        select(func.count(JobRequest.id)).where(
            JobRequest.company_id == found.id, JobRequest.state.in_(ACTIVE_REQUEST_STATES)
        )
    )
    if queued + len(requests) > max_queued:
        raise QueueFull(
            f"company {company!r} already has {queued} requests queued (limit {max_queued})",
            retry_after=60,
        )
    now = _now()
    job = Job(
        id=job_id,
        company_id=found.id,
        idempotency_key=idempotency_key or None,
        body_hash=body_hash,
        state="queued",
        on_error=on_error,
        request_count=len(requests),
        created_at=now,
        updated_at=now,
        expires_at=now + ttl_seconds,
    )
    session.add(job)
    session.flush()
    session.execute(
        insert(JobRequest),
        [
            {
                "job_id": job.id,
                "company_id": found.id,
                "position": p["index"],
                "kind": p["kind"],
                "request_xml": p["xml"],
                "caller_request_id": p["caller_request_id"],
                "qb_request_id": p["qb_rid"],
                "state": "pending",
                "record_count": 0,
                "attempts": 0,
                "solo": False,
                "updated_at": now,
            }
            for p in parsed
        ],
    )
    return job, True


def get_job(*, session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise UnknownJob(f"no job {job_id!r}", where="job_id")
    return job


def _result(jr: JobRequest) -> dict[str, Any]:
    return {
        "index": jr.position,
        "request_id": jr.caller_request_id or jr.qb_request_id,
        "kind": jr.kind,
        "state": jr.state,
        "status_code": jr.status_code,
        "status_severity": jr.status_severity,
        "status_message": jr.status_message,
        "list_id": jr.list_id,
        "txn_id": jr.txn_id,
        "edit_sequence": jr.edit_sequence,
        "record_count": jr.record_count,
        "response_xml": jr.response_xml,
        "probe_attempts": jr.probe_attempts or 0,
    }


def job_view(*, session: Session, job: Job, with_results: bool = True) -> dict[str, Any]:
    """The job as the API returns it (the hook relies on these names)."""
    company = session.get(Company, job.company_id)
    counts: dict[str, int] = dict(
        session.execute(
            select(JobRequest.state, func.count())
            .where(JobRequest.job_id == job.id)
            .group_by(JobRequest.state)
        ).all()
    )
    view: dict[str, Any] = {
        "id": job.id,
        "company": company.name if company else None,
        "state": job.state,
        "on_error": job.on_error,
        "idempotency_key": job.idempotency_key,
        "request_count": job.request_count,
        "counts": {s: counts.get(s, 0) for s in REQUEST_STATES},
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "expires_at": job.expires_at,
        "finished_at": job.finished_at,
        "error": job.error,
        "payload_pruned_at": job.payload_pruned_at,  # qbXML removed after the retention period
    }
    if with_results:
        rows = session.scalars(
            select(JobRequest).where(JobRequest.job_id == job.id).order_by(JobRequest.position)
        )
        view["results"] = [_result(r) for r in rows]
    return view


def list_jobs(
    *, session: Session, company: str | None = None, state: str | None = None, limit: int = 100
) -> list[Job]:
    stmt = select(Job).order_by(Job.created_at.desc()).limit(max(1, min(limit, 1000)))
    if company:
        found = company_by_name(session=session, name=company)
        if found is None:
            raise UnknownCompany(f"no company named {company!r}", where="company")
        stmt = stmt.where(Job.company_id == found.id)
    if state:
        stmt = stmt.where(Job.state == state)
    return list(session.scalars(stmt))


def cancel_job(*, session: Session, job_id: str) -> Job:
    """Cancel what has not been sent yet; requests already on the wire still report their outcome.

    On PostgreSQL the company's lock is taken first (as every Web Connector write does), so a job
    settled by a concurrent receiveResponseXML is seen settled here, never overwritten as cancelled.
    """
    job = get_job(session=session, job_id=job_id)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_sql.LOCK_COMPANY, {"id": job.company_id})
        session.refresh(job)
    if job.state in TERMINAL_JOB_STATES:
        raise JobConflict(f"job {job_id} is already {job.state}", where="job_id")
    now = _now()
    session.execute(
        update(JobRequest)
        .where(JobRequest.job_id == job.id, JobRequest.state == "pending")
        .values(state="cancelled", status_message="cancelled before it was sent", updated_at=now)
    )
    job.state, job.updated_at, job.finished_at = "cancelled", now, now
    return job


def expire_jobs(*, session: Session, company_id: int, now: float | None = None) -> int:
    """Mark the company's unfinished jobs past their deadline expired; their unsent requests are dropped."""
    now = now or _now()
    # Runs on every authenticate: ids first (usually none), so the common case is one cheap SELECT.
    expired = list(session.scalars(_sql.EXPIRED_JOBS, {"company_id": company_id, "now": now}))
    if not expired:
        return 0
    session.execute(
        update(JobRequest)
        .where(JobRequest.job_id.in_(expired), JobRequest.state == "pending")
        .values(
            state="cancelled",
            status_message="expired: no Web Connector session sent it in time",
            updated_at=now,
        )
    )
    session.execute(
        update(Job)
        .where(Job.id.in_(expired))
        .values(
            state="expired",
            updated_at=now,
            finished_at=now,
            error="the job expired before the Web Connector sent all of its requests",
        )
    )
    return len(expired)


def settle_jobs(*, session: Session, job_ids: set[str]) -> None:
    """Recompute the state of `job_ids` from their requests (after an exchange changed them).

    Runs after every exchange, so a job still in flight costs two index probes (the job_id/state
    index), not a count of all its requests; only a job with nothing active left is counted.
    """
    if not job_ids:
        return
    session.flush()  # what follows reads with Core statements, which do not autoflush
    now = _now()
    changes = []
    for row in session.execute(_sql.SETTLE_JOBS, {"ids": sorted(job_ids)}):
        change = {
            "b_id": row.id,
            "b_state": row.state,
            "b_finished_at": row.finished_at,
            "b_error": row.error,
        }
        if row.active:
            change["b_state"] = "in_progress" if row.touched else row.state
        else:
            unapplied = dict(session.execute(_UNAPPLIED_IN_JOB, {"job_id": row.id}).all())
            change["b_finished_at"] = now
            if unapplied:
                # Never `completed` while a write may be missing: in_doubt requests fail the job too.
                change["b_state"] = "failed"
                change["b_error"] = _settle_error(unapplied, row.request_count)
            else:
                change["b_state"] = "completed"
        change["b_updated_at"] = now
        changes.append(change)
    if changes:
        session.execute(_sql.SETTLE, changes)


def _settle_error(unapplied: dict[str, int], total: int) -> str:
    """The error of a finished job that is not `completed`: how many requests failed / are in doubt."""
    parts = []
    if unapplied.get("failed"):
        parts.append(f"{unapplied['failed']} of {total} requests failed")
    if unapplied.get("in_doubt"):
        parts.append(
            f"{unapplied['in_doubt']} of {total} requests in doubt (sent, never acknowledged, and QuickBooks "
            "could not be asked whether they were applied; not resent: check QuickBooks)"
        )
    return "; ".join(parts)
