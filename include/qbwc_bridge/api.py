"""The jobs REST API that DAG tasks use (HTTP only; persistence lives in jobs.py).

    POST   /api/v1/jobs              enqueue (Idempotency-Key header; same key -> same job)
    GET    /api/v1/jobs              list (?company=&state=&limit=)
    GET    /api/v1/jobs/{id}         state + per-request results (?wait=seconds long-polls)
    DELETE /api/v1/jobs/{id}         cancel what has not been sent

Errors: 401 bad token, 404 unknown company/job, 409 key reuse or finished job, 422 invalid request
(field named, nothing queued), 429 queue full (Retry-After).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from erpsync.errors import SyncError
from erpsync.qbwc_bridge import jobs, metrics
from erpsync.qbwc_bridge.crud import token_is_valid

__all__ = ["EnqueueBody", "error_response", "router"]

router = APIRouter(prefix="/api/v1", tags=["jobs"])


class EnqueueBody(BaseModel):
    company: str = Field(description="Company name as registered with `qbwc-bridge company add`")
    requests: list[str] = Field(
        description='qbXML request elements, e.g. "<CustomerAddRq>...</CustomerAddRq>"'
    )
    on_error: str = Field(default="continue", description='"continue" or "stop"')


_STATUS = [
    (jobs.UnknownCompany, 404),
    (jobs.UnknownJob, 404),
    (jobs.JobConflict, 409),
    (jobs.InvalidRequests, 422),
    (jobs.QueueFull, 429),
]


def error_response(exc: SyncError) -> JSONResponse:
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 400)
    body: dict[str, Any] = {"detail": exc.message, "where": exc.where, **exc.details}
    headers = {}
    if isinstance(exc, jobs.QueueFull):
        headers["Retry-After"] = str(int(exc.retry_after or 60))
    return JSONResponse(body, status_code=status, headers=headers)


def _bridge(request: Request):
    return request.app.state.bridge


def require_token(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    from fastapi import HTTPException

    bridge = _bridge(request)
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    configured = bridge.settings.api_token
    if configured and hmac.compare_digest(token.encode(), configured.encode()):
        return
    with bridge.store.reading() as s:
        if token_is_valid(session=s, token=token):
            return
    raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


Auth = Depends(require_token)


@router.post("/jobs", status_code=201, dependencies=[Auth])
def enqueue_job(
    request: Request, body: EnqueueBody, idempotency_key: Annotated[str | None, Header()] = None
) -> JSONResponse:
    bridge = _bridge(request)
    cfg = bridge.settings
    if idempotency_key is not None and len(idempotency_key) > 255:
        return JSONResponse({"detail": "Idempotency-Key is longer than 255 characters"}, status_code=422)
    for attempt in range(2):
        try:
            with bridge.store.session() as s:
                job, created = jobs.enqueue(
                    session=s,
                    company=body.company,
                    requests=body.requests,
                    on_error=body.on_error,
                    idempotency_key=idempotency_key,
                    max_queued=cfg.max_queued_requests,
                    max_per_job=cfg.max_requests_per_job,
                    ttl_seconds=cfg.job_ttl_seconds,
                )
                view = jobs.job_view(session=s, job=job, with_results=False)
            break
        except IntegrityError:
            if attempt:  # a concurrent enqueue with the same key won the race; read its job
                raise
        except SyncError as exc:
            return error_response(exc)
    if created:
        metrics.JOBS_ENQUEUED.inc(company=body.company)
    return JSONResponse(view, status_code=201 if created else 200)


@router.get("/jobs", dependencies=[Auth])
def list_jobs(
    request: Request,
    company: str | None = None,
    state: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    bridge = _bridge(request)
    try:
        with bridge.store.reading() as s:
            found = jobs.list_jobs(session=s, company=company, state=state, limit=limit)
            return JSONResponse(
                {"jobs": [jobs.job_view(session=s, job=j, with_results=False) for j in found]}
            )
    except SyncError as exc:
        return error_response(exc)


def _read(bridge, job_id: str, results: bool) -> dict[str, Any]:
    with bridge.store.reading() as s:
        job = jobs.get_job(session=s, job_id=job_id)
        overdue = job.state in {"queued", "in_progress"} and job.expires_at < time.time()
        if not overdue:
            return jobs.job_view(session=s, job=job, with_results=results)
    with bridge.store.session() as s:  # rare: settle the expiry, then answer
        job = jobs.get_job(session=s, job_id=job_id)
        jobs.expire_jobs(session=s, company_id=job.company_id)
        return jobs.job_view(session=s, job=job, with_results=results)


@router.get("/jobs/{job_id}", dependencies=[Auth])
async def get_job(
    request: Request,
    job_id: str,
    wait: Annotated[float, Query(ge=0, description="long-poll up to this many seconds")] = 0,
    results: bool = True,
) -> JSONResponse:
    bridge = _bridge(request)
    deadline = time.monotonic() + min(wait, bridge.settings.max_wait_seconds)
    delay = 0.05
    try:
        while True:
            view = await run_in_threadpool(_read, bridge, job_id, False)
            if view["state"] in jobs.TERMINAL_JOB_STATES or time.monotonic() >= deadline:
                break
            if await request.is_disconnected():
                break
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)
        if results:
            view = await run_in_threadpool(_read, bridge, job_id, True)
    except SyncError as exc:
        return error_response(exc)
    return JSONResponse(view)


@router.delete("/jobs/{job_id}", dependencies=[Auth])
def cancel_job(request: Request, job_id: str) -> JSONResponse:
    bridge = _bridge(request)
    try:
        with bridge.store.session() as s:
            job = jobs.cancel_job(session=s, job_id=job_id)
            return JSONResponse(jobs.job_view(session=s, job=job, with_results=False))
    except SyncError as exc:
        return error_response(exc)
