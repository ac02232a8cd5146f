"""The jobs REST API that DAG tasks use (HTTP only; persistence lives in jobs.py).

    POST   /api/v1/jobs              enqueue (Idempotency-Key header; same key -> same job)    write
    GET    /api/v1/jobs              list (?company=&state=&limit=)                             read
    GET    /api/v1/jobs/{id}         state + per-request results (?wait=seconds long-polls)     read
    DELETE /api/v1/jobs/{id}         cancel what has not been sent                              write
    GET    /api/v1/tokens            list tokens (never their secrets)                          admin
    POST   /api/v1/tokens            create one: {name, companies, rights, expires_in}          admin
    DELETE /api/v1/tokens/{id|name}  revoke                                                     admin

Every call needs `Authorization: Bearer TOKEN` (HTTP Basic with the token as password works too, for
browsers). The static QBWC_BRIDGE_API_TOKEN holds every right on every company; tokens made with
`qbwc-bridge token create` or POST /api/v1/tokens hold their rights on their companies only. The token
is checked before a byte of the body is read, and a body over MAX_BODY_BYTES is refused with 413.

Errors: 401 missing, unknown, expired or revoked token; 403 the token lacks the right or the company
(a job of another company is 403 too, not 404: job ids are random, so the answer reveals nothing a
token could not already see, and it tells a DAG with the wrong token what is wrong); 404 unknown
company/job (only to tokens that may see every company, so a scoped token cannot probe names); 409
key reuse or finished job; 413 body too large; 422 invalid request (field named, nothing queued);
429 queue full (Retry-After).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from erpsync.errors import AuthError, ConfigError, SyncError
from erpsync.qbwc_bridge import crud, jobs, metrics
from erpsync.qbwc_bridge.models import Company, Job, JobRequest

__all__ = [
    "EnqueueBody",
    "Forbidden",
    "Principal",
    "TokenBody",
    "error_response",
    "principal_for",
    "read_body",
    "router",
]

#: One line per job created or cancelled and per token created or revoked, naming the token (never
#: its secret), so "who queued this delete?" has an answer.
audit = logging.getLogger("erpsync.qbwc_bridge.audit")

#: Requests that remove records from QuickBooks: only a token with the delete right may queue them.
DELETE_KINDS = frozenset({"ListDelRq", "TxnDelRq"})
STATIC_TOKEN_NAME = "static:QBWC_BRIDGE_API_TOKEN"

router = APIRouter(prefix="/api/v1", tags=["jobs"])


class EnqueueBody(BaseModel):
    company: str = Field(description="Company name as registered with `qbwc-bridge company add`")
    requests: list[str] = Field(
        description='qbXML request elements, e.g. "<CustomerAddRq>...</CustomerAddRq>"'
    )
    on_error: str = Field(default="continue", description='"continue" or "stop"')


class TokenBody(BaseModel):
    name: str = Field(description="Unique among active tokens; named in the audit log and jobs.created_by")
    companies: list[str] | None = Field(default=None, description="Company names; null = every company")
    rights: str | list[str] = Field(default="read,write", description="read, write, delete, admin")
    expires_in: str | float | None = Field(default=None, description='e.g. "30d", "12h", 3600; null = never')


class Forbidden(AuthError):
    """The token is valid but lacks the right or the company for this call (403)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name, its companies (None = all) and its rights."""

    name: str
    companies: frozenset[str] | None
    rights: frozenset[str]

    def may(self, right: str, company: str | None = None) -> bool:
        if right not in self.rights:
            return False
        return company is None or self.companies is None or company in self.companies

    def check(self, right: str, company: str | None = None) -> None:
        """Raise Forbidden naming what is missing (never which other companies exist)."""
        if right not in self.rights:
            raise Forbidden(f"token {self.name!r} lacks the {right} right", where="Authorization")
        if not self.may(right, company):
            raise Forbidden(f"token {self.name!r} may not {right} company {company!r}", where="company")


_STATUS = [
    (Forbidden, 403),
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


def _secret(authorization: str | None) -> str | None:
    """The token from `Bearer TOKEN`, or the password of HTTP Basic (browsers asking for /status)."""
    scheme, _, value = (authorization or "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            return base64.b64decode(value, validate=True).decode().partition(":")[2] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def principal_for(request: Request) -> Principal:
    """Resolve the caller's token or raise 401. The static token holds every right on every company."""
    challenge = {"WWW-Authenticate": 'Bearer, Basic realm="qbwc-bridge", charset="UTF-8"'}
    token = _secret(request.headers.get("authorization"))
    if token is None:
        raise HTTPException(401, "missing bearer token", headers=challenge)
    bridge = _bridge(request)
    configured = bridge.settings.api_token
    if configured and hmac.compare_digest(token.encode(), configured.encode()):
        return Principal(STATIC_TOKEN_NAME, None, frozenset(crud.RIGHTS))
    with bridge.store.reading() as s:
        found = crud.find_token(session=s, token=token)
        if found is not None:
            return Principal(found.name, crud.token_companies(found), frozenset(found.rights.split(",")))
    raise HTTPException(401, "invalid, expired or revoked bearer token", headers=challenge)


def require(right: str) -> Callable[[Request], Principal]:
    """A dependency: the caller's principal, which must hold `right` (on some company)."""

    def dependency(request: Request) -> Principal:
        principal = principal_for(request)
        if right not in principal.rights:
            raise HTTPException(403, f"token {principal.name!r} lacks the {right} right")
        return principal

    return dependency


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes, by Content-Length or while streaming.

    The one body reader of the bridge: the jobs and tokens API and the SOAP endpoint (app.py, which
    answers the HTTPException as a SOAP fault) all read through it.
    """
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise HTTPException(400, f"Content-Length {declared[:40]!r} is not a byte count")
    if declared is not None and int(declared) > limit:
        raise HTTPException(413, f"request body of {declared} bytes exceeds the {limit} byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body exceeds the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(model: type[BaseModel], raw: bytes) -> BaseModel:
    """Validate a JSON body; a bad one answers 422 in FastAPI's own shape (field named in loc)."""
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        errors = jsonable_encoder(exc.errors(include_url=False, include_context=False, include_input=False))
        for err in errors:
            err["loc"] = ["body", *err.get("loc", [])]
        raise HTTPException(422, errors) from None


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


Reader = Annotated[Principal, Depends(require("read"))]
Writer = Annotated[Principal, Depends(require("write"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def _enqueue(bridge, principal: Principal, body: EnqueueBody, idempotency_key: str | None):
    cfg = bridge.settings
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
                if "delete" not in principal.rights:
                    deleting = s.scalar(
                        select(JobRequest.kind)
                        .where(JobRequest.job_id == job.id, JobRequest.kind.in_(DELETE_KINDS))
                        .limit(1)
                    )
                    if deleting is not None:  # raising rolls the new job back
                        raise Forbidden(
                            f"token {principal.name!r} lacks the delete right needed for {deleting}",
                            where="requests",
                        )
                if created:
                    job.created_by = principal.name[:100]
                view = jobs.job_view(session=s, job=job, with_results=False)
            return view, created
        except IntegrityError:
            if attempt:  # a concurrent enqueue with the same key won the race; read its job
                raise
    raise AssertionError("unreachable")


@router.post("/jobs", status_code=201, openapi_extra=_body_schema(EnqueueBody))
async def enqueue_job(
    request: Request, principal: Writer, idempotency_key: Annotated[str | None, Header()] = None
) -> JSONResponse:
    bridge = _bridge(request)
    raw = await read_body(request, bridge.settings.max_body_bytes)  # the token was checked first
    body = _parse(EnqueueBody, raw)
    if idempotency_key is not None and len(idempotency_key) > 255:
        return JSONResponse({"detail": "Idempotency-Key is longer than 255 characters"}, status_code=422)
    try:
        principal.check("write", body.company)
        view, created = await run_in_threadpool(_enqueue, bridge, principal, body, idempotency_key)
    except SyncError as exc:
        if isinstance(exc, Forbidden):
            audit.warning("refused: %s (company %r)", exc.message, body.company)
        return error_response(exc)
    if created:
        metrics.JOBS_ENQUEUED.inc(company=body.company)
        audit.info(
            "job %s created for company %r (%d requests) by token %r",
            view["id"],
            body.company,
            view["request_count"],
            principal.name,
        )
    return JSONResponse(view, status_code=201 if created else 200)


@router.get("/jobs")
def list_jobs(
    request: Request,
    principal: Reader,
    company: str | None = None,
    state: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """A token sees the jobs of its companies only; naming another company is 403."""
    bridge = _bridge(request)
    try:
        principal.check("read", company)
        with bridge.store.reading() as s:
            if company or principal.companies is None:
                found = jobs.list_jobs(session=s, company=company, state=state, limit=limit)
            else:
                stmt = (
                    select(Job)
                    .join(Company, Company.id == Job.company_id)
                    .where(Company.name.in_(sorted(principal.companies)))
                    .order_by(Job.created_at.desc())
                    .limit(limit)
                )
                found = list(s.scalars(stmt.where(Job.state == state) if state else stmt))
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


@router.get("/jobs/{job_id}")
async def get_job(
    request: Request,
    job_id: str,
    principal: Reader,
    wait: Annotated[float, Query(ge=0, description="long-poll up to this many seconds")] = 0,
    results: bool = True,
) -> JSONResponse:
    bridge = _bridge(request)
    deadline = time.monotonic() + min(wait, bridge.settings.max_wait_seconds)
    delay = 0.05
    try:
        while True:
            view = await run_in_threadpool(_read, bridge, job_id, False)
            principal.check("read", view["company"])
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


@router.delete("/jobs/{job_id}")
def cancel_job(request: Request, job_id: str, principal: Writer) -> JSONResponse:
    bridge = _bridge(request)
    try:
        with bridge.store.session() as s:
            job = jobs.get_job(session=s, job_id=job_id)
            company = s.get(Company, job.company_id)
            principal.check("write", company.name if company else None)
            job = jobs.cancel_job(session=s, job_id=job_id)
            view = jobs.job_view(session=s, job=job, with_results=False)
    except SyncError as exc:
        if isinstance(exc, Forbidden):
            audit.warning("refused: %s (job %s)", exc.message, job_id)
        return error_response(exc)
    audit.info("job %s of company %r cancelled by token %r", job_id, view["company"], principal.name)
    return JSONResponse(view)


@router.get("/tokens", tags=["tokens"])
def list_tokens(request: Request, principal: Admin) -> JSONResponse:
    with _bridge(request).store.reading() as s:
        return JSONResponse({"tokens": [crud.token_view(t) for t in crud.list_tokens(session=s)]})


@router.post("/tokens", status_code=201, tags=["tokens"], openapi_extra=_body_schema(TokenBody))
async def create_token(request: Request, principal: Admin) -> JSONResponse:
    """Create a token; the secret is in this answer only (the store keeps its SHA-256)."""
    bridge = _bridge(request)
    body = _parse(TokenBody, await read_body(request, bridge.settings.max_body_bytes))

    def create() -> dict[str, Any]:
        expires = (
            None if body.expires_in is None else crud.parse_duration(str(body.expires_in), where="expires_in")
        )
        with bridge.store.session() as s:
            secret = crud.create_token(
                session=s, name=body.name, companies=body.companies, rights=body.rights, expires_in=expires
            )
            made = crud.find_token(session=s, token=secret)
            return {"token": secret, **crud.token_view(made)}

    try:
        view = await run_in_threadpool(create)
    except ConfigError as exc:
        return JSONResponse({"detail": exc.message, "where": exc.where}, status_code=422)
    audit.info(
        "token %r (id %s) created by token %r: companies %s, rights %s, expires_at %s",
        view["name"],
        view["id"],
        principal.name,
        view["companies"] or "all",
        ",".join(view["rights"]),
        view["expires_at"],
    )
    return JSONResponse(view, status_code=201)


@router.delete("/tokens/{ref}", tags=["tokens"])
def revoke_token(request: Request, ref: str, principal: Admin) -> JSONResponse:
    """Revoke by id or by name; 404 when neither matches. Revoking takes effect on the next call."""
    try:
        with _bridge(request).store.session() as s:
            revoked = [crud.token_view(t) for t in crud.revoke_token(session=s, ref=ref)]
    except ConfigError as exc:
        return JSONResponse({"detail": exc.message, "where": exc.where}, status_code=404)
    for view in revoked:
        audit.info("token %r (id %s) revoked by token %r", view["name"], view["id"], principal.name)
    return JSONResponse({"revoked": revoked})
