"""The Salesforce simulator's HTTP surface: OAuth, versioned REST, collections, Bulk 2.0, limits, admin.

Wire details follow reference/salesforce-api.md: REST errors are lists of ``{message, errorCode, fields}``,
OAuth errors ``{error, error_description}``, collection results carry ``statusCode`` per record with
HTTP 200, Bulk errors are ``[{errorCode, message}]``; every API response has ``Sforce-Limit-Info``;
``nextRecordsUrl``, ``attributes.url`` and ``contentUrl`` are paths, never absolute URLs.

Fault injection lives under ``/__admin`` (no auth: it is a sandbox):

- ``POST /__admin/faults`` ``{"latency_ms": 150, "lock_row_rate": 0.1, "rules": [...]}``; each rule is
  ``{"kind": "status"|"drop"|"request_limit"|"lock_row"|"malformed_json"|"invalid_session"|"repeat_next",
  "count": n, "path": "substring", "method": "PATCH", "status": 503}`` and fires for the next `count`
  matching requests (``lock_row``: the next `count` records written).
- ``DELETE /__admin/faults``; ``POST /__admin/sessions/expire``; ``POST /__admin/limits``
  ``{"used": n, "max": m}``; ``GET /__admin/stats`` (API calls by kind, for benchmarks).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .bulk import DELIMITERS, OPERATIONS, BulkError, IngestJob, QueryJob, parse_soql_for_bulk, process_ingest
from .ids import make_id, normalize_id
from .org import MultipleMatches, Org, SaveError, format_datetime
from .schema import OBJECTS, get_object
from .soql import SoqlError, parse

__all__ = ["Credentials", "SalesforceSimulator"]

VERSIONS = [f"{v}.0" for v in range(31, 63)]
_LABELS = {59: "Winter '24", 60: "Spring '24", 61: "Summer '24", 62: "Winter '25"}
COLLECTION_MAX = 200
JWT_AUDIENCES = {"https://login.salesforce.com", "https://test.salesforce.com"}


@dataclass
class Credentials:
    """The seeded connected app and integration user (written to the sandbox state file)."""

    username: str
    password: str
    security_token: str
    client_id: str
    client_secret: str
    jwt_public_key_pem: bytes | None = None


@dataclass
class _Session:
    user_id: str
    last_used: float
    issued: float


@dataclass
class _Cursor:
    ids: list[str]
    paths: list[tuple[str, ...]]
    version: str
    last_used: float
    endpoint: str


@dataclass
class Faults:
    latency_ms: float = 0.0
    lock_row_rate: float = 0.0
    rules: list[dict] = field(default_factory=list)


class _Drop(Exception):
    """Raised after the response headers went out, so the server cuts the connection mid-response."""


def _rest_error(
    status: int, code: str, message: str, fields: list[str] | None = None, headers: dict | None = None
) -> JSONResponse:
    body = [{"message": message, "errorCode": code, **({"fields": fields} if fields is not None else {})}]
    return JSONResponse(body, status_code=status, headers=headers)


class SalesforceSimulator:
    """State of one simulated org plus the Starlette app serving it."""

    def __init__(self, org: Org, creds: Credentials, *, options: dict | None = None):
        opts = options or {}
        self.org = org
        self.creds = creds
        self.org_id = "00DDn0000000Sbx" + "EAA"
        self.session_timeout = float(opts.get("session_timeout", 7200))
        self.cursor_timeout = float(
            opts.get("cursor_timeout", 900)
        )  # query locators die after ~15 idle minutes
        self.api_max = int(opts.get("daily_api_limit", 100_000))
        self.api_used = 0
        self.bulk_processing_seconds = float(opts.get("bulk_processing_seconds", 0.2))
        self.sessions: dict[str, _Session] = {}
        self.cursors: dict[str, _Cursor] = {}
        self.cursor_counter = 0
        self.jobs: dict[str, IngestJob] = {}
        self.query_jobs: dict[str, QueryJob] = {}
        self.job_counter = 0
        self.faults = Faults(latency_ms=float(opts.get("latency_ms", 0)))
        self.rng = random.Random(int(opts.get("fault_seed", 5)))
        self.stats: Counter[str] = Counter()
        self.save_interval = float(opts.get("save_interval", 2.0))
        self._last_save = time.monotonic()
        self.app = Starlette(
            routes=[
                Route("/services/oauth2/token", self.token, methods=["POST"]),
                Route("/services/oauth2/revoke", self.revoke, methods=["POST"]),
                Route("/services/data", self.versions, methods=["GET"]),
                Route("/services/data/", self.versions, methods=["GET"]),
                Route("/services/data/{version}", self.data, methods=["GET"]),
                Route(
                    "/services/data/{version}/{rest:path}",
                    self.data,
                    methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
                ),
                Route("/__admin/faults", self.admin_faults, methods=["POST", "DELETE", "GET"]),
                Route("/__admin/sessions/expire", self.admin_expire, methods=["POST"]),
                Route("/__admin/limits", self.admin_limits, methods=["POST"]),
                Route("/__admin/stats", self.admin_stats, methods=["GET", "DELETE"]),
            ]
        )

    # ----- admin -------------------------------------------------------------------------------
    async def admin_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults = Faults()
        elif request.method == "POST":
            body = await request.json()
            self.faults = Faults(
                latency_ms=float(body.get("latency_ms", 0)),
                lock_row_rate=float(body.get("lock_row_rate", 0)),
                rules=[dict(r) for r in body.get("rules", [])],
            )
        return JSONResponse(
            {
                "latency_ms": self.faults.latency_ms,
                "lock_row_rate": self.faults.lock_row_rate,
                "rules": self.faults.rules,
            }
        )

    async def admin_expire(self, request: Request) -> Response:
        n = len(self.sessions)
        self.sessions.clear()
        return JSONResponse({"expired": n})

    async def admin_limits(self, request: Request) -> Response:
        body = await request.json()
        self.api_used = int(body.get("used", self.api_used))
        self.api_max = int(body.get("max", self.api_max))
        return JSONResponse({"used": self.api_used, "max": self.api_max})

    async def admin_stats(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.stats.clear()
        return JSONResponse(
            {
                "calls": dict(self.stats),
                "total": sum(self.stats.values()),
                "api_used": self.api_used,
                "api_max": self.api_max,
            }
        )

    # ----- faults ------------------------------------------------------------------------------
    def _take_rule(self, request: Request, kinds: set[str]) -> dict | None:
        for rule in self.faults.rules:
            if rule.get("kind") not in kinds or rule.get("count", 1) <= 0:
                continue
            if rule.get("path") and rule["path"] not in request.url.path:
                continue
            if rule.get("method") and rule["method"].upper() != request.method:
                continue
            rule["count"] = rule.get("count", 1) - 1
            return rule
        return None

    def lock_fault(self) -> bool:
        """True if the next record write should fail with UNABLE_TO_LOCK_ROW (rule first, then rate)."""
        for rule in self.faults.rules:
            if rule.get("kind") == "lock_row" and rule.get("count", 1) > 0:
                rule["count"] = rule.get("count", 1) - 1
                return True
        return self.faults.lock_row_rate > 0 and self.rng.random() < self.faults.lock_row_rate

    # ----- OAuth -------------------------------------------------------------------------------
    async def token(self, request: Request) -> Response:
        await self._latency()
        form = await request.form()
        grant = form.get("grant_type")
        creds = self.creds

        def oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
            return JSONResponse({"error": error, "error_description": description}, status_code=status)

        if grant == "password":
            if form.get("client_id") != creds.client_id:
                return oauth_error("invalid_client_id", "client identifier invalid")
            if form.get("client_secret") != creds.client_secret:
                return oauth_error("invalid_client", "invalid client credentials")
            if (form.get("username") or "").lower() != creds.username.lower():
                return oauth_error("invalid_grant", "authentication failure")
            password = form.get("password") or ""
            if password == creds.password:
                return oauth_error(
                    "invalid_grant", "authentication failure"
                )  # token missing, as on a real org
            if password != creds.password + creds.security_token:
                return oauth_error("invalid_grant", "authentication failure")
        elif grant == "client_credentials":
            if form.get("client_id") != creds.client_id:
                return oauth_error("invalid_client_id", "client identifier invalid")
            if form.get("client_secret") != creds.client_secret:
                return oauth_error("invalid_client", "invalid client credentials")
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            problem = self._check_jwt(form.get("assertion") or "", request)
            if problem:
                return oauth_error("invalid_grant", problem)
        elif not grant:
            return oauth_error("unsupported_grant_type", "grant type not supported")
        else:
            return oauth_error("unsupported_grant_type", "grant type not supported")
        access = f"{self.org_id[:15]}!AR{secrets.token_urlsafe(32)}"
        now = time.monotonic()
        user_id = self.org.integration_user_id
        self.sessions[access] = _Session(user_id, now, now)
        issued = str(int(time.time() * 1000))
        host = request.headers.get("host", "localhost")
        return JSONResponse(
            {
                "access_token": access,
                "instance_url": f"https://{host}",
                "token_type": "Bearer",
                "id": f"https://{host}/id/{self.org_id}/{user_id}",
                "issued_at": issued,
                "scope": "api",
                "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
            }
        )

    def _check_jwt(self, assertion: str, request: Request) -> str | None:
        import jwt

        if not self.creds.jwt_public_key_pem:
            return "invalid assertion"
        host = request.headers.get("host", "localhost")
        try:
            claims = jwt.decode(
                assertion,
                self.creds.jwt_public_key_pem,
                algorithms=["RS256"],
                audience=[*JWT_AUDIENCES, f"https://{host}"],
                options={"require": ["iss", "sub", "aud", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            return "expired authorization code"
        except jwt.InvalidAudienceError:
            return "audience is invalid"
        except jwt.PyJWTError:
            return "invalid assertion"
        if claims["iss"] != self.creds.client_id:
            return "invalid client identifier"
        if claims["exp"] > time.time() + 300:
            return "invalid assertion"  # Salesforce allows at most a few minutes ahead
        if str(claims["sub"]).lower() != self.creds.username.lower():
            return "user hasn't approved this consumer"
        return None

    async def revoke(self, request: Request) -> Response:
        form = await request.form()
        self.sessions.pop(form.get("token") or "", None)
        return Response(status_code=200)

    async def versions(self, request: Request) -> Response:
        return JSONResponse(
            [
                {"label": _LABELS.get(int(float(v)), f"v{v}"), "url": f"/services/data/v{v}", "version": v}
                for v in VERSIONS
            ]
        )

    # ----- the versioned API -------------------------------------------------------------------
    async def _latency(self) -> None:
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)

    def _limit_headers(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.api_used}/{self.api_max}"}

    def _authenticate(self, request: Request) -> _Session | None:
        auth = request.headers.get("authorization", "")
        token = (
            auth[7:] if auth.lower().startswith("bearer ") else auth[6:] if auth.startswith("OAuth ") else ""
        )
        session = self.sessions.get(token)
        now = time.monotonic()
        if session is None or now - session.last_used > self.session_timeout:
            self.sessions.pop(token, None)
            return None
        session.last_used = now
        return session

    async def data(self, request: Request):
        await self._latency()
        version_part = request.path_params["version"]
        rest = request.path_params.get("rest", "")
        parts = [p for p in rest.split("/") if p]
        version = version_part[1:] if version_part.startswith("v") else ""
        if version not in VERSIONS:
            return _rest_error(404, "NOT_FOUND", "The requested resource does not exist")
        session = self._authenticate(request)
        if session is None or self._take_rule(request, {"invalid_session"}):
            return _rest_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        counts = parts[:1] != ["limits"]
        if counts:
            if self.api_used >= self.api_max:
                return _rest_error(
                    403,
                    "REQUEST_LIMIT_EXCEEDED",
                    "TotalRequests Limit exceeded.",
                    headers=self._limit_headers(),
                )
            limit_rule = self._take_rule(request, {"request_limit"})
            if limit_rule:  # injected: the concurrency flavour unless the rule names another message
                message = limit_rule.get("message", "ConcurrentPerOrgLongTxn Limit exceeded.")
                return _rest_error(403, "REQUEST_LIMIT_EXCEEDED", message, headers=self._limit_headers())
            self.api_used += 1
            self.stats[
                f"{request.method} {'/'.join(parts[:2]) if parts[:1] != ['sobjects'] else 'sobjects'}"
            ] += 1
        rule = self._take_rule(request, {"status", "drop", "malformed_json"})
        if rule and rule["kind"] == "status":
            status = int(rule.get("status", 503))
            code = "SERVER_UNAVAILABLE" if status >= 500 else rule.get("errorCode", "UNKNOWN_EXCEPTION")
            return _rest_error(
                status,
                code,
                rule.get("message", "Server temporarily unavailable"),
                headers=self._limit_headers(),
            )
        if rule and rule["kind"] == "drop":
            return _DroppedResponse()
        try:
            response = await self._dispatch(request, parts, version, session)
        except BulkError as exc:
            response = JSONResponse([{"errorCode": exc.code, "message": exc.message}], status_code=exc.status)
        except SoqlError as exc:
            response = _rest_error(400, exc.code, exc.message)
        except _BadJson as exc:
            response = _rest_error(400, "JSON_PARSER_ERROR", str(exc))
        if rule and rule["kind"] == "malformed_json":
            response = Response(
                response.body[: max(1, len(response.body) // 2)],
                status_code=response.status_code,
                media_type="application/json",
            )
        response.headers.update(self._limit_headers())
        self._maybe_save()
        return response

    def _maybe_save(self) -> None:
        if self.org.dirty and time.monotonic() - self._last_save > self.save_interval:
            self.org.save()
            self._last_save = time.monotonic()

    async def _json(self, request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            raise _BadJson(
                f"Unexpected character at [line:{exc.lineno}, column:{exc.colno}]: {exc.msg}"
            ) from exc

    async def _dispatch(
        self, request: Request, parts: list[str], version: str, session: _Session
    ) -> Response:
        method = request.method
        head = parts[0] if parts else ""
        if not parts:
            names = ["sobjects", "query", "queryAll", "limits", "composite", "jobs"]
            return JSONResponse({n: f"/services/data/v{version}/{n}" for n in names})
        if head == "limits" and len(parts) == 1:
            return JSONResponse(self._limits())
        if head in ("query", "queryAll") and method == "GET":
            return self._query(request, parts, version, include_deleted=head == "queryAll")
        if head == "sobjects":
            return await self._sobjects(request, parts[1:], version, session)
        if head == "composite" and parts[1:2] == ["sobjects"]:
            return await self._collections(request, parts[2:], version, session)
        if head == "jobs" and parts[1:2] == ["ingest"]:
            return await self._ingest(request, parts[2:], version, session)
        if head == "jobs" and parts[1:2] == ["query"]:
            return await self._query_jobs(request, parts[2:], version, session)
        return _rest_error(404, "NOT_FOUND", "The requested resource does not exist")

    def _limits(self) -> dict:
        def lim(mx: int, remaining: int) -> dict:
            return {"Max": mx, "Remaining": remaining}

        return {
            "DailyApiRequests": lim(self.api_max, max(0, self.api_max - self.api_used)),
            "DailyBulkApiBatches": lim(15000, 15000 - len(self.jobs)),
            "DailyBulkV2QueryJobs": lim(10000, 10000 - len(self.query_jobs)),
            "DailyBulkV2QueryFileStorageMB": lim(1024000, 1024000),
            "DataStorageMB": lim(
                5, 5 - min(5, sum(len(t) for t in self.org.tables.values()) * 2 // 1024 // 1024)
            ),
            "ConcurrentPerOrgLongTxn": lim(25, 25),
        }

    # ----- SOQL --------------------------------------------------------------------------------
    def _query(self, request: Request, parts: list[str], version: str, include_deleted: bool) -> Response:
        endpoint = parts[0]
        batch = 2000
        options = request.headers.get("sforce-query-options", "")
        for opt in options.split(","):
            key, _, value = opt.strip().partition("=")
            if key.strip().lower() == "batchsize" and value.strip().isdigit():
                batch = min(2000, max(200, int(value)))
        if len(parts) == 2:
            locator, _, offset = parts[1].partition("-")
            cursor = self.cursors.get(locator)
            if (
                cursor is None
                or time.monotonic() - cursor.last_used > self.cursor_timeout
                or not offset.isdigit()
            ):
                self.cursors.pop(locator, None)
                return _rest_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            cursor.last_used = time.monotonic()
            response = self._page(cursor, locator, int(offset), batch, version)
            if self._take_rule(request, {"repeat_next"}):
                # A server bug a client must survive: the page points back at itself.
                body = json.loads(response.body)
                body["nextRecordsUrl"], body["done"] = (
                    f"/services/data/v{version}/{endpoint}/{parts[1]}",
                    False,
                )
                self.cursors[locator] = cursor
                return JSONResponse(body)
            return response
        q_text = request.query_params.get("q")
        if q_text is None:
            return _rest_error(400, "MALFORMED_QUERY", "A query string has to be specified")
        q = parse(q_text)
        rows = self.org.query(q, include_deleted=include_deleted)
        if q.count_only:
            return JSONResponse({"totalSize": len(rows), "done": True, "records": []})
        self.cursor_counter += 1
        locator = make_id("01g", self.cursor_counter)[:15]
        cursor = _Cursor([r["Id"] for r in rows], q.fields, version, time.monotonic(), endpoint)
        if len(cursor.ids) > batch:
            self.cursors[locator] = cursor
            while len(self.cursors) > 10:  # a user keeps at most 10 open cursors; the oldest dies
                self.cursors.pop(next(iter(self.cursors)))
        return self._page(cursor, locator, 0, batch, version)

    def _page(self, cursor: _Cursor, locator: str, offset: int, batch: int, version: str) -> Response:
        ids = cursor.ids[offset : offset + batch]
        records = []
        for rid in ids:
            rec = self.org.get(rid, include_deleted=True)
            if rec is not None:
                records.append(self.org.shape(rec, cursor.paths, cursor.version))
        body: dict[str, Any] = {
            "totalSize": len(cursor.ids),
            "done": offset + batch >= len(cursor.ids),
            "records": records,
        }
        if not body["done"]:
            body["nextRecordsUrl"] = (
                f"/services/data/v{cursor.version}/{cursor.endpoint}/{locator}-{offset + batch}"
            )
        else:
            self.cursors.pop(locator, None)
        return JSONResponse(body)

    # ----- sObjects ----------------------------------------------------------------------------
    async def _sobjects(
        self, request: Request, parts: list[str], version: str, session: _Session
    ) -> Response:
        method = request.method
        if not parts:
            return JSONResponse(
                {
                    "encoding": "UTF-8",
                    "maxBatchSize": 200,
                    "sobjects": [
                        {k: v for k, v in o.describe(version).items() if k != "fields"}
                        for o in OBJECTS.values()
                    ],
                }
            )
        obj = get_object(parts[0])
        if obj is None:
            return _rest_error(404, "NOT_FOUND", "The requested resource does not exist")
        if len(parts) == 1:
            if method == "GET":
                d = obj.describe(version)
                return JSONResponse(
                    {"objectDescribe": {k: v for k, v in d.items() if k != "fields"}, "recentItems": []}
                )
            if method == "POST":
                body = await self._json(request)
                if not isinstance(body, dict):
                    return _rest_error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
                if self.lock_fault():
                    return _lock_error()
                rid, errors = self.org.create(obj, body, user_id=session.user_id)
                if errors:
                    return JSONResponse([e.rest() for e in errors], status_code=400)
                return JSONResponse({"id": rid, "success": True, "errors": []}, status_code=201)
            return _method_not_allowed(method, "GET,HEAD,POST")
        if parts[1] == "describe" and len(parts) == 2:
            return JSONResponse(obj.describe(version))
        if parts[1] in ("deleted", "updated") and len(parts) == 2:
            return self._changed(request, obj, parts[1])
        if len(parts) == 2:
            return await self._record(request, obj, parts[1], version, session)
        if len(parts) == 3:
            return await self._by_external_id(request, obj, parts[1], parts[2], version, session)
        return _rest_error(404, "NOT_FOUND", "The requested resource does not exist")

    def _changed(self, request: Request, obj, kind: str) -> Response:
        from .soql import parse_sf_datetime

        try:
            start = parse_sf_datetime(request.query_params["start"])
            end = parse_sf_datetime(request.query_params["end"])
        except (KeyError, ValueError):
            return _rest_error(400, "INVALID_REPLICATION_DATE", "start and end must be ISO datetimes")
        if end - start > timedelta(days=30) or start < datetime.now(UTC) - timedelta(days=30):
            return _rest_error(400, "INVALID_REPLICATION_DATE", "startDate must be within the last 30 days")
        latest = format_datetime(min(end, datetime.now(UTC)).replace(second=0, microsecond=0))
        if kind == "deleted":
            rows = [
                {"id": d["id"], "deletedDate": d["deletedDate"]}
                for d in self.org.deleted_log
                if d["type"] == obj.name and start <= parse_sf_datetime(d["deletedDate"]) < end
            ]
            return JSONResponse(
                {
                    "deletedRecords": rows,
                    "earliestDateAvailable": format_datetime(datetime.now(UTC) - timedelta(days=15)),
                    "latestDateCovered": latest,
                }
            )
        ids = [
            r["Id"]
            for r in self.org.tables[obj.name].values()
            if not r["IsDeleted"] and start <= parse_sf_datetime(r["SystemModstamp"]) < end
        ]
        return JSONResponse({"ids": ids, "latestDateCovered": latest})

    async def _record(self, request: Request, obj, rid: str, version: str, session: _Session) -> Response:
        method = request.method
        norm = normalize_id(rid)
        if norm is None or norm[:3] != obj.key_prefix:
            return _rest_error(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {rid}"
            )
        rec = self.org.get(norm)
        if rec is None:
            return _rest_error(404, "NOT_FOUND", "The requested resource does not exist")
        if method == "GET":
            return JSONResponse(self._read(request, obj, rec, version))
        if method == "PATCH":
            body = await self._json(request)
            if not isinstance(body, dict):
                return _rest_error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
            if self.lock_fault():
                return _lock_error()
            errors = self.org.update(obj, norm, body, user_id=session.user_id)
            if errors:
                return JSONResponse([e.rest() for e in errors], status_code=400)
            return Response(status_code=204)
        if method == "DELETE":
            errors = self.org.delete(norm)
            if errors:
                return JSONResponse([e.rest() for e in errors], status_code=400)
            return Response(status_code=204)
        return _method_not_allowed(method, "GET,HEAD,PATCH,DELETE")

    def _read(self, request: Request, obj, rec: dict, version: str) -> dict:
        wanted = request.query_params.get("fields")
        names = [f.name for f in obj.fields]
        if wanted:
            names = []
            for n in wanted.split(","):
                fdef = obj.field(n.strip())
                if fdef is None:
                    raise SoqlError(
                        "INVALID_FIELD", f"No such column '{n.strip()}' on sobject of type {obj.name}"
                    )
                names.append(fdef.name)
        return self.org.shape(rec, [(n,) for n in names], version)

    async def _by_external_id(
        self, request: Request, obj, field_name: str, value: str, version: str, session: _Session
    ) -> Response:
        fdef = obj.field(field_name)
        if fdef is None or not (fdef.external_id or fdef.name == "Id"):
            return _rest_error(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field_name}",
            )
        method = request.method
        matches = self.org.find_by(obj, fdef, value)
        if method in ("GET", "DELETE"):
            if len(matches) > 1:
                return JSONResponse(
                    [f"/services/data/v{version}/sobjects/{obj.name}/{i}" for i in matches], status_code=300
                )
            if not matches:
                return _rest_error(404, "NOT_FOUND", "The requested resource does not exist")
            if method == "GET":
                return JSONResponse(self._read(request, obj, self.org.get(matches[0]), version))
            errors = self.org.delete(matches[0])
            if errors:
                return JSONResponse([e.rest() for e in errors], status_code=400)
            return Response(status_code=204)
        if method not in ("PATCH", "POST"):
            return _method_not_allowed(method, "GET,HEAD,PATCH,DELETE")
        body = await self._json(request)
        if not isinstance(body, dict):
            return _rest_error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        if self.lock_fault():
            return _lock_error()
        try:
            rid, created, errors = self.org.upsert(obj, fdef.name, value, body, user_id=session.user_id)
        except MultipleMatches as many:
            return JSONResponse(
                [f"/services/data/v{version}/sobjects/{obj.name}/{i}" for i in many.ids], status_code=300
            )
        if errors:
            return JSONResponse(
                [e.rest() for e in errors], status_code=404 if errors[0].code == "NOT_FOUND" else 400
            )
        if created:
            return JSONResponse({"id": rid, "success": True, "errors": [], "created": True}, status_code=201)
        if float(version) < 46:
            return Response(status_code=204)
        return JSONResponse({"id": rid, "success": True, "errors": [], "created": False}, status_code=200)

    # ----- sObject Collections -----------------------------------------------------------------
    async def _collections(
        self, request: Request, parts: list[str], version: str, session: _Session
    ) -> Response:
        method = request.method
        if method == "DELETE" and not parts:
            ids = [i for i in request.query_params.get("ids", "").split(",") if i]
            all_or_none = request.query_params.get("allOrNone", "false").lower() == "true"
            if len(ids) > COLLECTION_MAX:
                return _rest_error(
                    400,
                    "EXCEEDED_ID_LIMIT",
                    "record limit reached. cannot submit more than 200 records into this call",
                )
            return self._run_batch(ids, all_or_none, lambda rid: (rid, False, self.org.delete(rid)))
        if (method == "GET" and len(parts) == 1) or (method == "POST" and len(parts) == 1):
            obj = get_object(parts[0])
            if obj is None:
                return _rest_error(404, "NOT_FOUND", "The requested resource does not exist")
            if method == "GET":
                ids = request.query_params.get("ids", "").split(",")
                fields = request.query_params.get("fields", "")
            else:
                body = await self._json(request)
                ids, fields = body.get("ids", []), ",".join(body.get("fields", []))
            if not fields:
                return _rest_error(400, "MISSING_ARGUMENT", "fields is required")
            out = []
            for rid in ids:
                rec = self.org.get(rid)
                out.append(
                    None
                    if rec is None or rec["Id"][:3] != obj.key_prefix
                    else self.org.shape(rec, [(f.strip(),) for f in fields.split(",")], version)
                )
            return JSONResponse(out)
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return _rest_error(400, "JSON_PARSER_ERROR", "The request body needs a records array")
        records = body["records"]
        all_or_none = bool(body.get("allOrNone", False))
        if len(records) > COLLECTION_MAX:
            return _rest_error(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        if method == "POST" and not parts:
            return self._run_batch(records, all_or_none, lambda r: self._collection_create(r, session))
        if method == "PATCH" and not parts:
            return self._run_batch(records, all_or_none, lambda r: self._collection_update(r, session))
        if method == "PATCH" and len(parts) == 2:
            obj = get_object(parts[0])
            fdef = obj.field(parts[1]) if obj else None
            if obj is None:
                return _rest_error(404, "NOT_FOUND", "The requested resource does not exist")
            if fdef is None or not (fdef.external_id or fdef.name == "Id"):
                return _rest_error(
                    400,
                    "INVALID_FIELD",
                    f"Field name provided, {parts[1]} is not an External ID or indexed field for {obj.name}",
                    [parts[1]],
                )
            seen: Counter[str] = Counter(
                str(r.get(fdef.name, "")).lower() for r in records if isinstance(r, dict)
            )
            return self._run_batch(
                records, all_or_none, lambda r: self._collection_upsert(obj, fdef.name, r, seen, session)
            )
        return _method_not_allowed(method, "GET,POST,PATCH,DELETE")

    def _record_type(self, record: Any) -> tuple[Any, SaveError | None]:
        if not isinstance(record, dict):
            return None, SaveError("JSON_PARSER_ERROR", "each record must be a JSON object")
        attrs = record.get("attributes")
        obj = get_object(attrs.get("type", "")) if isinstance(attrs, dict) else None
        if obj is None:
            return None, SaveError("INVALID_TYPE", "Must send a concrete entity type.")
        return obj, None

    def _collection_create(self, record: Any, session: _Session):
        obj, err = self._record_type(record)
        if err:
            return None, False, [err]
        if record.get("Id"):
            return None, False, [SaveError("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])]
        if self.lock_fault():
            return None, False, [_lock_save_error()]
        rid, errors = self.org.create(obj, record, user_id=session.user_id)
        return rid, True, errors

    def _collection_update(self, record: Any, session: _Session):
        obj, err = self._record_type(record)
        if err:
            return None, False, [err]
        rid = record.get("Id")
        if not rid:
            return None, False, [SaveError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])]
        if self.lock_fault():
            return rid, False, [_lock_save_error()]
        return rid, False, self.org.update(obj, rid, record, user_id=session.user_id)

    def _collection_upsert(self, obj, ext: str, record: Any, seen: Counter, session: _Session):
        rtype, err = self._record_type(record)
        if err:
            return None, False, [err]
        if rtype.name != obj.name:
            return (
                None,
                False,
                [SaveError("INVALID_TYPE", f"Record type {rtype.name} does not match {obj.name}")],
            )
        key = next((k for k in record if k.lower() == ext.lower()), None)
        value = record.get(key) if key else None
        if value in (None, ""):
            return None, False, [SaveError("MISSING_ARGUMENT", f"{ext} not specified", [ext])]
        if seen[str(value).lower()] > 1:
            return (
                None,
                False,
                [SaveError("DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {value}", [ext])],
            )
        if self.lock_fault():
            return None, False, [_lock_save_error()]
        values = {k: v for k, v in record.items() if k != key}
        try:
            return self.org.upsert(obj, ext, value, values, user_id=session.user_id)
        except MultipleMatches as many:
            return (
                None,
                False,
                [
                    SaveError(
                        "DUPLICATE_EXTERNAL_ID",
                        f"{ext}: more than one record found for external id field: {many.ids}",
                        [ext],
                    )
                ],
            )

    def _run_batch(self, items: list, all_or_none: bool, apply) -> Response:
        snap = self.org.snapshot() if all_or_none else None
        results = []
        failed = False
        for item in items:
            rid, created, errors = apply(item)
            if errors:
                failed = True
                results.append(
                    {
                        "id": rid if isinstance(rid, str) and rid else None,
                        "success": False,
                        "errors": [e.collection() for e in errors],
                    }
                )
            else:
                results.append({"id": rid, "success": True, "errors": [], "created": created})
        if all_or_none and failed:
            self.org.restore(snap)
            rolled = SaveError(
                "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "Record rolled back because not all records "
                "were valid and the request was using AllOrNone header",
            )
            results = [
                r if not r["success"] else {"id": None, "success": False, "errors": [rolled.collection()]}
                for r in results
            ]
        return JSONResponse(results)

    # ----- Bulk API 2.0 ------------------------------------------------------------------------
    async def _ingest(self, request: Request, parts: list[str], version: str, session: _Session) -> Response:
        method = request.method
        if not parts:
            if method == "GET":
                return JSONResponse(
                    {
                        "done": True,
                        "nextRecordsUrl": None,
                        "records": [j.info(self.bulk_processing_seconds) for j in self.jobs.values()],
                    }
                )
            if method != "POST":
                return _method_not_allowed(method, "GET,POST")
            body = await self._json(request)
            if not isinstance(body, dict):
                raise BulkError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
            obj = get_object(str(body.get("object", "")))
            op = body.get("operation")
            if obj is None:
                raise BulkError(
                    400, "INVALIDENTITY", f"Entity '{body.get('object')}' is not supported by the Bulk API."
                )
            if op not in OPERATIONS:
                raise BulkError(400, "INVALIDJOB", f"Invalid operation: {op}")
            ext = body.get("externalIdFieldName")
            if op == "upsert":
                fdef = obj.field(ext or "")
                if fdef is None or not (fdef.external_id or fdef.name == "Id"):
                    raise BulkError(400, "INVALIDJOB", f"External ID field {ext} is not valid for {obj.name}")
                ext = fdef.name
            delim = body.get("columnDelimiter", "COMMA")
            if delim not in DELIMITERS or body.get("lineEnding", "LF") not in ("LF", "CRLF"):
                raise BulkError(400, "INVALIDJOB", "Invalid columnDelimiter or lineEnding")
            if body.get("contentType", "CSV") != "CSV":
                raise BulkError(400, "INVALIDJOB", "Only CSV content is supported")
            self.job_counter += 1
            job = IngestJob(
                make_id("750", self.job_counter),
                obj.name,
                op,
                ext if op == "upsert" else None,
                version,
                session.user_id,
                body.get("lineEnding", "LF"),
                delim,
            )
            self.jobs[job.id] = job
            return JSONResponse(job.info(self.bulk_processing_seconds))
        job = self.jobs.get(normalize_id(parts[0]) or "")
        if job is None:
            raise BulkError(404, "NOT_FOUND", f"The requested resource does not exist: job {parts[0]}")
        if len(parts) == 1:
            if method == "GET":
                return JSONResponse(job.info(self.bulk_processing_seconds))
            if method == "DELETE":
                if job.visible_state(self.bulk_processing_seconds) not in (
                    "UploadComplete",
                    "JobComplete",
                    "Aborted",
                    "Failed",
                ):
                    raise BulkError(400, "INVALIDJOBSTATE", "Only closed jobs can be deleted")
                del self.jobs[job.id]
                return Response(status_code=204)
            if method == "PATCH":
                body = await self._json(request)
                state = body.get("state") if isinstance(body, dict) else None
                if job.state != "Open":
                    raise BulkError(409, "INVALIDJOBSTATE", f"Job {job.id} is not open (state {job.state})")
                if state == "Aborted":
                    job.state = "Aborted"
                    return JSONResponse(job.info(self.bulk_processing_seconds))
                if state != "UploadComplete":
                    raise BulkError(
                        400, "INVALIDJOBSTATE", f"Invalid state {state!r}: use UploadComplete or Aborted"
                    )
                job.state = "UploadComplete"
                if job.data is None:
                    job.final_state, job.error_message = "Failed", "InvalidBatch : No data was uploaded"
                else:
                    process_ingest(job, self.org, self.lock_fault)
                job.closed_at = time.monotonic()
                return JSONResponse(job.info(self.bulk_processing_seconds) | {"state": "UploadComplete"})
            return _method_not_allowed(method, "GET,PATCH,DELETE")
        sub = parts[1]
        if sub == "batches" and method == "PUT":
            if job.state != "Open":
                raise BulkError(409, "INVALIDJOBSTATE", f"Job {job.id} is not open for uploads")
            if job.data is not None:
                raise BulkError(
                    409, "INVALIDJOBSTATE", "Only one upload is allowed per job; create another job"
                )
            ctype = request.headers.get("content-type", "")
            if not ctype.startswith("text/csv"):
                raise BulkError(400, "INVALIDCONTENTTYPE", f"Content type {ctype!r} is not text/csv")
            raw = await request.body()
            if len(raw) > 100 * 1024 * 1024:
                raise BulkError(400, "EXCEEDED_QUOTA", "The upload is larger than 100 MB")
            try:
                job.data = raw.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise BulkError(400, "INVALIDBATCH", f"The upload is not UTF-8: {exc}") from exc
            return Response(status_code=201)
        if sub in ("successfulResults", "failedResults", "unprocessedrecords") and method == "GET":
            if job.visible_state(self.bulk_processing_seconds) not in ("JobComplete", "Failed", "Aborted"):
                raise BulkError(400, "INVALIDJOBSTATE", "Results are available once the job is complete")
            return PlainTextResponse(job.result_csv(sub), media_type="text/csv")
        raise BulkError(404, "NOT_FOUND", "The requested resource does not exist")

    async def _query_jobs(
        self, request: Request, parts: list[str], version: str, session: _Session
    ) -> Response:
        method = request.method
        if not parts:
            if method == "GET":
                return JSONResponse(
                    {
                        "done": True,
                        "records": [j.info(self.bulk_processing_seconds) for j in self.query_jobs.values()],
                    }
                )
            body = await self._json(request)
            if not isinstance(body, dict) or body.get("operation") not in ("query", "queryAll"):
                raise BulkError(400, "INVALIDJOB", "operation must be query or queryAll")
            q = parse_soql_for_bulk(str(body.get("query", "")))
            if q.count_only:
                raise BulkError(400, "INVALIDJOB", "COUNT() is not supported in Bulk API 2.0 queries")
            self.job_counter += 1
            job = QueryJob(
                make_id("750", self.job_counter),
                q,
                body["operation"],
                version,
                session.user_id,
                body.get("columnDelimiter", "COMMA"),
                body.get("lineEnding", "LF"),
            )
            job.record_ids = [
                r["Id"] for r in self.org.query(q, include_deleted=body["operation"] == "queryAll")
            ]
            self.query_jobs[job.id] = job
            return JSONResponse(job.info(self.bulk_processing_seconds) | {"state": "UploadComplete"})
        job = self.query_jobs.get(normalize_id(parts[0]) or "")
        if job is None:
            raise BulkError(404, "NOT_FOUND", f"The requested resource does not exist: job {parts[0]}")
        if len(parts) == 1:
            if method == "GET":
                return JSONResponse(job.info(self.bulk_processing_seconds))
            if method == "DELETE":
                del self.query_jobs[job.id]
                return Response(status_code=204)
            if method == "PATCH":
                job.state = "Aborted"
                return JSONResponse(job.info(self.bulk_processing_seconds))
        if parts[1:] == ["results"] and method == "GET":
            if job.visible_state(self.bulk_processing_seconds) != "JobComplete":
                raise BulkError(400, "INVALIDJOBSTATE", "Results are available once the job is complete")
            try:
                max_records = int(request.query_params.get("maxRecords", "50000"))
                start = (
                    int(base64.urlsafe_b64decode(request.query_params["locator"]).decode())
                    if request.query_params.get("locator")
                    else 0
                )
            except (ValueError, UnicodeDecodeError) as exc:
                raise BulkError(400, "INVALIDLOCATOR", "Invalid locator or maxRecords") from exc
            text, n, nxt = job.page(self.org, start, max(1, max_records))
            locator = base64.urlsafe_b64encode(str(nxt).encode()).decode() if nxt is not None else "null"
            return PlainTextResponse(
                text,
                media_type="text/csv",
                headers={"Sforce-Locator": locator, "Sforce-NumberOfRecords": str(n)},
            )
        raise BulkError(404, "NOT_FOUND", "The requested resource does not exist")


class _BadJson(Exception):
    pass


def _lock_save_error() -> SaveError:
    return SaveError("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records")


def _lock_error() -> JSONResponse:
    return JSONResponse([_lock_save_error().rest()], status_code=400)


def _method_not_allowed(method: str, allowed: str) -> JSONResponse:
    return _rest_error(
        405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}"
    )


class _DroppedResponse(Response):
    """Send headers promising a body, then fail: uvicorn closes the socket mid-response."""

    def __init__(self):
        super().__init__(b"", status_code=200)

    async def __call__(self, scope, receive, send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"trunc', "more_body": True})
        raise _Drop("connection dropped by fault injection")
