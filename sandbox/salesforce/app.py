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
- ``POST /__admin/clock`` ``{"advance": seconds}`` moves the org's clock forward (session and query
  locator idleness, SystemModstamp), so tests of timeouts never sleep; ``GET`` reads the offset.
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
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .bulk import BulkError, IngestJob, QueryJob
from .bulk_api import BulkApi
from .org import Org
from .rest import RestApi
from .soql import SoqlError
from .wire import BadJson, Cursor, DroppedResponse, Session, rest_error

__all__ = ["Credentials", "SalesforceSimulator"]

VERSIONS = [f"{v}.0" for v in range(31, 63)]
_LABELS = {59: "Winter '24", 60: "Spring '24", 61: "Summer '24", 62: "Winter '25"}
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
class Faults:
    latency_ms: float = 0.0
    lock_row_rate: float = 0.0
    rules: list[dict] = field(default_factory=list)


class SalesforceSimulator(RestApi, BulkApi):
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
        self.sessions: dict[str, Session] = {}
        self.cursors: dict[str, Cursor] = {}
        self.cursor_counter = 0
        self.jobs: dict[str, IngestJob] = {}
        self.query_jobs: dict[str, QueryJob] = {}
        self.job_counter = 0
        self.faults = Faults(latency_ms=float(opts.get("latency_ms", 0)))
        self.rng = random.Random(int(opts.get("fault_seed", 5)))
        self.stats: Counter[str] = Counter()
        self.save_interval = float(opts.get("save_interval", 2.0))
        self._last_save = time.monotonic()
        self.clock_offset = 0.0  # seconds added by POST /__admin/clock
        self.app = Starlette(
            routes=[
                Route("/services/oauth2/token", self.token, methods=["POST"]),
                Route("/services/oauth2/revoke", self.revoke, methods=["POST"]),
                Route("/services/Soap/u/{version}", self.soap_login, methods=["POST"]),
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
                Route("/__admin/clock", self.admin_clock, methods=["GET", "POST"]),
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

    def clock(self) -> float:
        """Monotonic seconds as the org sees them: real time plus what `/__admin/clock` advanced."""
        return time.monotonic() + self.clock_offset

    async def admin_clock(self, request: Request) -> Response:
        if request.method == "POST":
            body = await request.json()
            advance = float(body.get("advance", 0))
            if advance < 0:
                return JSONResponse({"error": "the clock only moves forward"}, status_code=400)
            self.clock_offset += advance
            self.org.clock_offset = self.clock_offset
        return JSONResponse({"offset": self.clock_offset})

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
        access = self._new_session()
        user_id = self.org.integration_user_id
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

    async def soap_login(self, request: Request) -> Response:
        """The partner SOAP ``login()`` call: username + password with the security token appended.

        simple-salesforce (and so the Airflow provider) logs in this way when a connection has a security
        token; the answer's ``serverUrl`` host becomes the client's instance.
        """
        await self._latency()
        from xml.etree import ElementTree

        try:
            root = ElementTree.fromstring(await request.body())
        except ElementTree.ParseError as exc:
            return _soap_fault("INVALID_REQUEST", f"malformed login request: {exc}", 500)
        ns = "{urn:partner.soap.sforce.com}"
        username = root.findtext(f".//{ns}login/{ns}username") or ""
        password = root.findtext(f".//{ns}login/{ns}password") or ""
        creds = self.creds
        if username.lower() != creds.username.lower() or password != creds.password + creds.security_token:
            return _soap_fault(
                "INVALID_LOGIN", "Invalid username, password, security token; or user locked out."
            )
        version = request.path_params["version"]
        access = self._new_session()
        host = request.headers.get("host", "localhost")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com">'
            "<soapenv:Body><loginResponse><result>"
            f"<metadataServerUrl>https://{host}/services/Soap/m/{version}/{self.org_id}</metadataServerUrl>"
            "<passwordExpired>false</passwordExpired><sandbox>true</sandbox>"
            f"<serverUrl>https://{host}/services/Soap/u/{version}/{self.org_id}</serverUrl>"
            f"<sessionId>{access}</sessionId><userId>{self.org.integration_user_id}</userId>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return Response(body, media_type="text/xml; charset=utf-8")

    def _new_session(self) -> str:
        access = f"{self.org_id[:15]}!AR{secrets.token_urlsafe(32)}"
        now = self.clock()
        self.sessions[access] = Session(self.org.integration_user_id, now, now)
        return access

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

    def _authenticate(self, request: Request) -> Session | None:
        auth = request.headers.get("authorization", "")
        token = (
            auth[7:] if auth.lower().startswith("bearer ") else auth[6:] if auth.startswith("OAuth ") else ""
        )
        session = self.sessions.get(token)
        now = self.clock()
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
            return rest_error(404, "NOT_FOUND", "The requested resource does not exist")
        session = self._authenticate(request)
        if session is None or self._take_rule(request, {"invalid_session"}):
            return rest_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        counts = parts[:1] != ["limits"]
        if counts:
            if self.api_used >= self.api_max:
                return rest_error(
                    403,
                    "REQUEST_LIMIT_EXCEEDED",
                    "TotalRequests Limit exceeded.",
                    headers=self._limit_headers(),
                )
            limit_rule = self._take_rule(request, {"request_limit"})
            if limit_rule:  # injected: the concurrency flavour unless the rule names another message
                message = limit_rule.get("message", "ConcurrentPerOrgLongTxn Limit exceeded.")
                return rest_error(403, "REQUEST_LIMIT_EXCEEDED", message, headers=self._limit_headers())
            self.api_used += 1
            self.stats[
                f"{request.method} {'/'.join(parts[:2]) if parts[:1] != ['sobjects'] else 'sobjects'}"
            ] += 1
        rule = self._take_rule(request, {"status", "drop", "malformed_json"})
        if rule and rule["kind"] == "status":
            status = int(rule.get("status", 503))
            code = "SERVER_UNAVAILABLE" if status >= 500 else rule.get("errorCode", "UNKNOWN_EXCEPTION")
            return rest_error(
                status,
                code,
                rule.get("message", "Server temporarily unavailable"),
                headers=self._limit_headers(),
            )
        if rule and rule["kind"] == "drop":
            return DroppedResponse()
        try:
            response = await self._dispatch(request, parts, version, session)
        except BulkError as exc:
            response = JSONResponse([{"errorCode": exc.code, "message": exc.message}], status_code=exc.status)
        except SoqlError as exc:
            response = rest_error(400, exc.code, exc.message)
        except BadJson as exc:
            response = rest_error(400, "JSON_PARSER_ERROR", str(exc))
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
            raise BadJson(
                f"Unexpected character at [line:{exc.lineno}, column:{exc.colno}]: {exc.msg}"
            ) from exc

    async def _dispatch(self, request: Request, parts: list[str], version: str, session: Session) -> Response:
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
        return rest_error(404, "NOT_FOUND", "The requested resource does not exist")

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


def _soap_fault(code: str, message: str, status: int = 500) -> Response:
    """A SOAP fault as the partner API sends it (HTTP 500, sf:exceptionCode inside the detail)."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {message}</faultstring><detail>"
        f'<sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode>'
        f"<sf:exceptionMessage>{message}</sf:exceptionMessage></sf:LoginFault></detail>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Response(body, status_code=status, media_type="text/xml; charset=utf-8")
