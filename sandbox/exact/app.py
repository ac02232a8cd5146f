"""The Exact Online simulator as an ASGI app: OAuth, `current/Me`, divisions, regular/bulk/sync endpoints.

Wire behaviour follows reference/exact-online.md §11: the `{"d": ...}` envelope, `__next` paging (60
per page on regular endpoints, 1,000 on bulk and sync, where `$select` is mandatory), OData literals,
`/Date(ms)/` dates, Int64 `Timestamp` as a string, `OrderID`/`EntryID` keys, the six rate-limit
headers in epoch milliseconds on division calls only, 429 past 60/min or 5,000/day per division,
and the 10-errors-per-hour block. Handlers are `async` so everything runs on the event loop thread
and the state needs no locks.

Sandbox-only endpoints under `/admin` inject faults (latency, 5xx, 429), revoke consent, hand out a
fresh consent (refresh token) without a browser, count stock (`/admin/stock`: what a stock count
transaction does in Exact, which has no API to write stock) and report counters for tests.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from erpsync.sandbox.exact._entities import BULK, ENTITIES, SYNC, EntitySpec, resolve
from erpsync.sandbox.exact._limits import RateLimiter
from erpsync.sandbox.exact._oauth import OAuthError, OAuthServer
from erpsync.sandbox.exact._odata import ODataError, parse_filter
from erpsync.sandbox.exact._store import ApiError, Division, ExactStore

__all__ = ["ExactSimulator", "SimulatorOptions", "odata_error"]

REGULAR_PAGE, BULK_PAGE = 60, 1000
_KEY_PATH = re.compile(
    r"^(?P<path>[A-Za-z]+/[A-Za-z]+)(?:\((?:guid)?'(?P<key>[^']*)'\))?(?P<count>/\$count)?$"
)


def odata_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Exact's error body: the text sits in `error.message.value` and `code` is usually empty."""
    return JSONResponse(
        {"error": {"code": "", "message": {"lang": "", "value": message}}}, status, headers=headers
    )


@dataclass
class SimulatorOptions:
    """Knobs, all with Exact's real values as defaults; tests shrink them to run in seconds."""

    client_id: str = "b81cc4de-d192-400e-bcb4-09254394c52a"
    client_secret: str = "sandbox-exact-secret-0c9e"
    redirect_uri: str = "http://localhost:8080/exact/callback"
    access_token_ttl: float = 600.0
    min_token_age: float = 570.0
    code_ttl: float = 180.0
    minutely_limit: int = 60
    daily_limit: int = 5000
    minute_seconds: float = 60.0
    day_seconds: float = 86_400.0
    error_budget: int = 10  # 400/401/403/404 per client, division, endpoint and hour; 0 = off
    realistic_429_headers: bool = False
    reuse_error: str = "invalid_grant"  # or "unauthorized_client" (the 2018 body)
    latency: float = 0.0
    item_count: int = 250

    @classmethod
    def from_mapping(cls, options: dict[str, Any]) -> SimulatorOptions:
        known = {k: v for k, v in options.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Fault:
    """An injected failure: answer `status` (or only delay) for the next `count` matching requests."""

    status: int | None = None
    count: int = 1
    match: str = "/api/"
    latency: float = 0.0
    body: str | None = None


@dataclass
class Stats:
    requests: int = 0
    division_calls: dict[str, int] = field(default_factory=dict)
    token_calls: int = 0
    faults_served: int = 0


class ExactSimulator:
    """State (store, OAuth, limits, faults) plus the Starlette app that serves it."""

    def __init__(self, data_dir: Path | None, options: SimulatorOptions, *, seed: bool = True):
        from erpsync.sandbox.exact._seed import seed_store

        self.options = options
        self.state_path = data_dir / "exact-state.json" if data_dir else None
        self.store = ExactStore()
        self.oauth = OAuthServer(
            {options.client_id: {"secret": options.client_secret, "redirect_uri": options.redirect_uri}},
            access_ttl=options.access_token_ttl,
            min_token_age=options.min_token_age,
            code_ttl=options.code_ttl,
            reuse_error=options.reuse_error,
        )
        self.limits = RateLimiter(
            minutely=options.minutely_limit,
            daily=options.daily_limit,
            minute_seconds=options.minute_seconds,
            day_seconds=options.day_seconds,
            realistic_429_headers=options.realistic_429_headers,
        )
        self.faults: list[Fault] = []
        self.latency = options.latency
        self.stats = Stats()
        self._errors: dict[tuple, list[float]] = {}
        self._last_save = 0.0
        if not self._load() and seed:
            seed_store(self.store, item_count=options.item_count)
        self.app = Starlette(routes=self._routes())

    # ---- persistence ----------------------------------------------------------------------------

    def _load(self) -> bool:
        if self.state_path is None or not self.state_path.exists():
            return False
        data = json.loads(self.state_path.read_text())
        self.store.divisions = {int(k): Division.from_json(v) for k, v in data["divisions"].items()}
        self.oauth.load_json(data.get("chains", {}))
        return True

    def save(self) -> None:
        """Write divisions and consent chains atomically, so a restart keeps data and refresh tokens."""
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "divisions": {str(k): v.as_json() for k, v in self.store.divisions.items()},
            "chains": self.oauth.as_json(),
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.state_path)
        self._last_save = time.monotonic()

    def _maybe_save(self, *, force: bool = False) -> None:
        if force or time.monotonic() - self._last_save > 1.0:
            self.save()

    def seeded_consent(self, divisions: list[int] | None = None) -> str:
        """Grant the seeded client access as if a user had consented long ago; return the refresh token.

        The chain is backdated by one access-token lifetime, so its first refresh is allowed at once
        (a fresh consent would otherwise have to wait out the 570-second minimum token age).
        """
        chain = self.oauth.consent(self.options.client_id, divisions or sorted(self.store.divisions))
        chain.issued_at -= self.options.access_token_ttl
        chain.access_tokens.clear()
        self._maybe_save(force=True)
        return chain.refresh_token

    # ---- routing ----------------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        return [
            Route("/api/oauth2/auth", self.authorize, methods=["GET"]),
            Route("/api/oauth2/token", self.token, methods=["POST"]),
            Route("/api/v1/current/Me", self.me, methods=["GET"]),
            Route(
                "/api/v1/{division}/{rest:path}", self.division_call, methods=["GET", "POST", "PUT", "DELETE"]
            ),
            Route("/admin/faults", self.admin_faults, methods=["POST", "DELETE"]),
            Route("/admin/revoke", self.admin_revoke, methods=["POST"]),
            Route("/admin/consent", self.admin_consent, methods=["POST"]),
            Route("/admin/stats", self.admin_stats, methods=["GET"]),
            Route("/admin/limits/reset", self.admin_reset_limits, methods=["POST"]),
            Route("/admin/stock", self.admin_stock, methods=["POST"]),
        ]

    async def _fault(self, request: Request) -> Response | None:
        self.stats.requests += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        for fault in self.faults:
            if fault.count > 0 and fault.match in request.url.path:
                fault.count -= 1
                if fault.latency:
                    await asyncio.sleep(fault.latency)
                if fault.status is None:
                    return None
                self.stats.faults_served += 1
                if fault.body is not None:
                    return Response(fault.body, fault.status, media_type="application/json")
                if fault.status == 429:
                    return PlainTextResponse("Too Many Requests", 429)
                return odata_error(fault.status, "An error has occurred. (injected by the sandbox)")
        return None

    # ---- OAuth --------------------------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        redirect_uri = q.get("redirect_uri", "")
        try:
            if q.get("response_type") != "code":
                raise OAuthError(400, "unsupported_response_type", "Only response_type=code is supported.")
            divisions = sorted(self.store.divisions)
            if q.get("divisions"):  # sandbox extension: the divisions the user ticks on the consent page
                divisions = [int(d) for d in q["divisions"].split(",") if int(d) in self.store.divisions]
            location = self.oauth.authorize(q.get("client_id", ""), redirect_uri, divisions, q.get("state"))
        except OAuthError as exc:
            return JSONResponse(exc.body(), exc.status)
        self._maybe_save(force=True)
        return RedirectResponse(location, status_code=302)

    async def token(self, request: Request) -> Response:
        if (fault := await self._fault(request)) is not None:
            return fault
        self.stats.token_calls += 1
        if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
            return JSONResponse(
                {
                    "error": "invalid_request",
                    "error_description": "The body must be application/x-www-form-urlencoded.",
                },
                400,
            )
        form = {k: str(v) for k, v in (await request.form()).items()}
        try:
            pair = self.oauth.token(form)
        except OAuthError as exc:
            headers = {"Reason": exc.reason} if exc.reason else None
            return JSONResponse(exc.body(), exc.status, headers=headers)
        self._maybe_save(force=True)
        return JSONResponse(pair, headers={"Cache-Control": "no-store"})

    def _authenticate(self, request: Request):
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        return self.oauth.check_access(header[7:].strip())

    @staticmethod
    def _unauthorized() -> Response:
        return PlainTextResponse(
            "Unauthorized", 401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )

    async def me(self, request: Request) -> Response:
        if (fault := await self._fault(request)) is not None:
            return fault
        chain = self._authenticate(request)
        if chain is None:
            return self._unauthorized()
        current = chain.divisions[0] if chain.divisions else None
        base = str(request.base_url).rstrip("/")
        me = {
            "__metadata": {
                "uri": f"{base}/api/v1/current/Me(guid'{self.store.USER['UserID']}')",
                "type": "Exact.Web.Api.System.Me",
            },
            **self.store.USER,
            "Email": self.store.USER["UserName"],
            "CurrentDivision": current,
            "DivisionCustomer": "5f2b3c4d-0000-4000-8000-000000000001",
            "LanguageCode": "nl-NL",
            "Legislation": 1,
        }
        return JSONResponse({"d": {"results": [me]}})

    # ---- division calls ---------------------------------------------------------------------------------

    def _error_blocked(self, key: tuple) -> bool:
        budget = self.options.error_budget
        if not budget:
            return False
        now = time.time()
        recent = [t for t in self._errors.get(key, []) if now - t < 3600]
        self._errors[key] = recent
        return len(recent) >= budget

    def _count_error(self, key: tuple, status: int) -> None:
        if status in (400, 401, 403, 404):
            self._errors.setdefault(key, []).append(time.time())

    async def division_call(self, request: Request) -> Response:
        if (fault := await self._fault(request)) is not None:
            return fault
        chain = self._authenticate(request)
        if chain is None:
            return self._unauthorized()
        raw_division, rest = request.path_params["division"], request.path_params["rest"]
        try:
            division = int(raw_division)
        except ValueError:
            return odata_error(400, f"Invalid division '{raw_division}': a division is a number")
        if division not in chain.divisions or division not in self.store.divisions:
            return odata_error(403, f"Forbidden: no access to division {division} for this app")
        endpoint = _KEY_PATH.sub(lambda m: m.group("path"), rest).lower()
        error_key = (chain.client_id, division, endpoint)
        if self._error_blocked(error_key):
            return odata_error(
                403,
                f"Too many errors on {endpoint} in division {division}: this app is blocked for an hour "
                "(more than 10 errors per endpoint per hour)",
            )
        verdict = self.limits.count(chain.client_id, division)
        if not verdict.allowed:
            # Exact answers a limit with a bare 429 and no JSON body (picqer#528): clients must not parse it.
            return PlainTextResponse("Too Many Requests", 429, headers=verdict.headers)
        self.stats.division_calls[str(division)] = self.stats.division_calls.get(str(division), 0) + 1
        try:
            response = await self._dispatch(request, self.store.division(division), rest)
        except ApiError as exc:
            response = odata_error(exc.status, exc.message)
        except ODataError as exc:
            response = odata_error(400, str(exc))
        self._count_error(error_key, response.status_code)
        response.headers.update(verdict.headers)
        return response

    async def _dispatch(self, request: Request, div: Division, rest: str) -> Response:
        low = rest.lower()
        method = request.method
        if low in ("system/divisions", "hrm/divisions"):
            self._only_get(method)
            return self._divisions(request, div, low)
        if low == "sync/deleted":
            self._only_get(method)
            rows = sorted(div.deleted, key=lambda r: r["Timestamp"])
            fields = ("ID", "Timestamp", "Division", "EntityKey", "EntityType", "DeletedBy", "DeletedDate")
            return self._collection(
                request, rows, fields, mode="sync", type_name="Exact.Web.Api.Models.Sync.Deleted", key="ID"
            )
        if low.startswith(("sync/", "bulk/")):
            self._only_get(method)
            mode, _, path = low.partition("/")
            target = (SYNC if mode == "sync" else BULK).get(path)
            if target is None:
                raise ApiError(404, f"Resource not found: {mode}/{rest.split('/', 1)[1]} does not exist")
            spec = ENTITIES[target.lower()]
            return self._collection(
                request, list(div.table(spec).values()), spec.fields, mode=mode, spec=spec, div=div
            )
        if low == "read/logistics/stockposition":
            self._only_get(method)
            return self._stock_position(request, div)
        m = _KEY_PATH.match(rest)
        spec = resolve(m.group("path")) if m else None
        if spec is None:
            raise ApiError(404, f"Resource not found for the segment '{rest}'")
        key = m.group("key")
        if key is not None and method != "POST" and not _is_guid(key):
            raise ApiError(400, f"Invalid key '{key}': {spec.key} is a guid, use {spec.path}(guid'...')")
        if method == "GET":
            if m.group("count"):
                return PlainTextResponse(
                    str(len(self._filtered(request, list(div.table(spec).values()), spec)))
                )
            if key is not None:
                record = self.store.get(div, spec, key)
                return JSONResponse(
                    {"d": self._render(request, div, spec, record, self._select(request, spec, "regular"))}
                )
            return self._collection(
                request, list(div.table(spec).values()), spec.fields, mode="regular", spec=spec, div=div
            )
        if method == "POST":
            if key is not None:
                raise ApiError(400, "POST goes to the entity set, without a key")
            body = await self._json(request)
            record = self.store.create(div, spec, body)
            self._maybe_save()
            rendered = self._render(request, div, spec, record, None)
            if "return=representation" not in request.headers.get("prefer", ""):
                # Without the header Exact leaves most properties null in the answer (reference §5):
                # only the key and what the client sent come back, so clients must ask for the rest.
                sent = set(body) if isinstance(body, dict) else set()
                rendered = {
                    k: (v if k in sent or k in ("__metadata", spec.key) else None)
                    for k, v in rendered.items()
                }
            return JSONResponse({"d": rendered}, 201)
        if key is None:
            raise ApiError(400, f"{method} needs a key: {spec.path}(guid'...')")
        if method == "PUT":
            self.store.update(div, spec, key, await self._json(request))
        else:
            self.store.delete(div, spec, key)
        self._maybe_save()
        return Response(status_code=204)

    @staticmethod
    def _only_get(method: str) -> None:
        if method != "GET":
            raise ApiError(405, f"Method {method} is not allowed on this resource")

    @staticmethod
    async def _json(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw or b"null")
        except ValueError as exc:
            raise ApiError(400, f"Error reading JSON in the request body: {exc}") from None

    def _divisions(self, request: Request, div: Division, which: str) -> Response:
        chain = self._authenticate(request)
        codes = sorted(self.store.divisions) if which == "system/divisions" else chain.divisions
        base = str(request.base_url).rstrip("/")
        rows = []
        for code in codes:
            d = self.store.divisions[code]
            rows.append(
                {
                    "__metadata": {
                        "uri": f"{base}/api/v1/{div.code}/{which}({code})",
                        "type": "Exact.Web.Api.Models.HRM.Division",
                    },
                    **d.info,
                    "HID": str(code),
                    "CustomerName": d.customer_name,
                    "Main": code == min(self.store.divisions),
                }
            )
        return JSONResponse({"d": {"results": rows}})

    def _stock_position(self, request: Request, div: Division) -> Response:
        raw = request.query_params.get("itemId", "")
        m = re.fullmatch(r"guid'([^']*)'", raw)
        if not m or not _is_guid(m.group(1)):
            raise ApiError(400, "itemId: give the item as itemId=guid'...'")
        item_id = m.group(1).lower()
        self.store._ref(div, "logistics/Items", item_id, "itemId")
        position = div.table(ENTITIES["inventory/stockpositions"]).get(item_id)
        row = {
            "ItemId": item_id,
            "InStock": 0.0,
            "FreeStock": 0.0,
            "ReservedStock": 0.0,
            "PlanningIn": 0.0,
            "PlanningOut": 0.0,
            "ProjectedStock": 0.0,
        }
        if position is not None:
            row.update(
                InStock=position["CurrentStock"],
                FreeStock=position["FreeStock"],
                ReservedStock=position["ReservedStock"],
                PlanningIn=position["PlanningIn"],
                PlanningOut=position["PlanningOut"],
                ProjectedStock=position["ProjectedStock"],
            )
        row["__metadata"] = {"type": "Exact.Web.Api.Models.Read.Logistics.StockPosition"}
        return JSONResponse({"d": {"results": [row]}})

    # ---- query options, paging, rendering ----------------------------------------------------------------

    @staticmethod
    def _select(
        request: Request, spec: EntitySpec | None, mode: str, fields: tuple[str, ...] = ()
    ) -> list[str] | None:
        raw = request.query_params.get("$select")
        if raw is None or not raw.strip():
            if mode in ("bulk", "sync"):
                raise ApiError(
                    400,
                    "The $select query option is mandatory on bulk and sync endpoints: list the properties you need",
                )
            return None
        names = [n.strip() for n in raw.split(",") if n.strip()]
        if "*" in names:
            if mode in ("bulk", "sync"):
                raise ApiError(
                    400, "$select=* is not allowed on bulk and sync endpoints: list the properties you need"
                )
            return None
        allowed = {f.lower(): f for f in (spec.all_fields if spec else fields)}
        if mode in ("bulk", "sync"):
            allowed["timestamp"] = "Timestamp"
        chosen = []
        for name in names:
            if name.lower() not in allowed:
                type_name = spec.type_name if spec else "this type"
                raise ApiError(400, f"$select: the property '{name}' does not exist on type '{type_name}'")
            chosen.append(allowed[name.lower()])
        return chosen

    def _filtered(
        self, request: Request, rows: list[dict], spec: EntitySpec, extra: tuple[str, ...] = ()
    ) -> list[dict]:
        raw = request.query_params.get("$filter")
        if not raw:
            return rows
        predicate = parse_filter(raw, spec.all_fields + extra)
        return [r for r in rows if predicate(r)]

    def _collection(
        self,
        request: Request,
        rows: list[dict],
        fields: tuple[str, ...],
        *,
        mode: str,
        spec: EntitySpec | None = None,
        div: Division | None = None,
        type_name: str | None = None,
        key: str | None = None,
    ) -> Response:
        params = request.query_params
        select = self._select(request, spec, mode, fields)
        extra = ("Timestamp",) if mode in ("bulk", "sync") else ()
        all_fields = spec.all_fields if spec else fields
        if params.get("$filter"):
            predicate = parse_filter(params["$filter"], all_fields + extra)
            rows = [r for r in rows if predicate(r)]
        total = len(rows)
        key = key or (spec.key if spec else "ID")
        order = params.get("$orderby")
        if order:
            lookup = {f.lower(): f for f in all_fields + extra}
            for part in reversed([p.strip() for p in order.split(",") if p.strip()]):
                name, _, direction = part.partition(" ")
                if name.lower() not in lookup:
                    raise ApiError(400, f"$orderby: the property '{name}' does not exist")
                field_name = lookup[name.lower()]
                rows = sorted(
                    rows,
                    key=lambda r, f=field_name: (r.get(f) is None, r.get(f) if r.get(f) is not None else 0),
                    reverse=direction.strip().lower() == "desc",
                )
        elif mode == "sync":
            rows = sorted(rows, key=lambda r: r["Timestamp"])
        else:
            rows = sorted(rows, key=lambda r: str(r[key]))
        cap = BULK_PAGE if mode in ("bulk", "sync") else REGULAR_PAGE
        top = params.get("$top")
        if top is not None:
            if not top.isdigit():
                raise ApiError(400, f"$top: '{top}' is not a non-negative number")
            top = int(top)
        skiptoken, skip = params.get("$skiptoken"), params.get("$skip")
        if skiptoken:
            if mode == "sync" and not order:
                m = re.fullmatch(r"(\d+)L?", skiptoken)
                if not m:
                    raise ApiError(400, f"$skiptoken: '{skiptoken}' is not valid here")
                rows = [r for r in rows if r["Timestamp"] > int(m.group(1))]
            else:
                m = re.fullmatch(r"guid'([^']*)'", skiptoken)
                if not m:
                    raise ApiError(400, f"$skiptoken: '{skiptoken}' is not valid here")
                rows = [r for r in rows if str(r[key]) > m.group(1).lower()]
        elif skip:
            if not skip.isdigit():
                raise ApiError(400, f"$skip: '{skip}' is not a non-negative number")
            rows = rows[int(skip) :]
        size = cap if top is None else min(cap, top)
        page, remaining = rows[:size], rows[size:]
        body: dict[str, Any] = {
            "results": [
                self._render(request, div, spec, r, select, mode=mode, type_name=type_name, key=key)
                for r in page
            ]
        }
        if params.get("$inlinecount") == "allpages":
            body["__count"] = str(total)
        more = remaining and (top is None or top > size)
        if more:
            query = {k: v for k, v in params.items() if k not in ("$skiptoken", "$skip", "$top")}
            if top is not None:
                query["$top"] = str(top - size)
            if order:
                query["$skip"] = str(int(skip or 0) + size)
            elif mode == "sync":
                query["$skiptoken"] = f"{page[-1]['Timestamp']}L"
            else:
                query["$skiptoken"] = f"guid'{page[-1][key]}'"
            body["__next"] = str(
                request.url.replace(
                    query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote, safe="$',()")
                )
            )
        return JSONResponse({"d": body})

    def _render(
        self,
        request: Request,
        div: Division | None,
        spec: EntitySpec | None,
        record: dict,
        select: list[str] | None,
        *,
        mode: str = "regular",
        type_name: str | None = None,
        key: str | None = None,
    ) -> dict:
        base = str(request.base_url).rstrip("/")
        key = key or (spec.key if spec else "ID")
        division = div.code if div else record.get("Division")
        path = spec.path if spec else "sync/Deleted"
        out: dict[str, Any] = {
            "__metadata": {
                "uri": f"{base}/api/v1/{division}/{path}(guid'{record[key]}')",
                "type": type_name or spec.type_name,
            }
        }
        names = select or [f for f in (spec.all_fields if spec else record) if f not in ("Timestamp",)]
        if select is None and mode in ("bulk", "sync"):
            names = [*names, "Timestamp"]
        expand = {e.strip().lower() for e in request.query_params.get("$expand", "").split(",") if e.strip()}
        for name in names:
            if spec is not None and name in spec.children:
                child_path, link = spec.children[name]
                if name.lower() in expand and div is not None:
                    child_spec = ENTITIES[child_path.lower()]
                    children = [c for c in div.table(child_spec).values() if c.get(link) == record[key]]
                    children.sort(key=lambda c: c.get("LineNumber", 0))
                    out[name] = {
                        "results": [self._render(request, div, child_spec, c, None) for c in children]
                    }
                else:
                    out[name] = {"__deferred": {"uri": f"{out['__metadata']['uri']}/{name}"}}
                continue
            value = record.get(name)
            if name == "Timestamp" and value is not None:
                value = str(value)  # Edm.Int64 goes over the wire as a string
            out[name] = value
        return out

    # ---- admin (sandbox only) ------------------------------------------------------------------------

    async def admin_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
            self.latency = self.options.latency
            return JSONResponse({"faults": 0})
        body = await request.json()
        if "latency" in body and "status" not in body and "count" not in body:
            self.latency = float(body["latency"])
        else:
            self.faults.append(Fault(**{k: v for k, v in body.items() if k in Fault.__dataclass_fields__}))
        return JSONResponse({"faults": len(self.faults), "latency": self.latency})

    async def admin_revoke(self, request: Request) -> Response:
        count = self.oauth.revoke(self.options.client_id)
        self._maybe_save(force=True)
        return JSONResponse({"revoked_chains": count})

    async def admin_consent(self, request: Request) -> Response:
        raw = request.query_params.get("divisions")
        divisions = [int(d) for d in raw.split(",")] if raw else None
        return JSONResponse({"refresh_token": self.seeded_consent(divisions)})

    async def admin_stats(self, request: Request) -> Response:
        return JSONResponse(
            {
                "requests": self.stats.requests,
                "division_calls": self.stats.division_calls,
                "token_calls": self.stats.token_calls,
                "faults_served": self.stats.faults_served,
                "oauth": self.oauth.stats,
                "rate_limited": self.limits.refused,
            }
        )

    async def admin_stock(self, request: Request) -> Response:
        """A stock count: set an item's quantity in stock (`{"division", "code", "current"}`); the item's
        stock position gets a new Timestamp, as a stock transaction would give it in Exact."""
        body = await request.json()
        div = self.store.divisions.get(int(body.get("division", 0)))
        items = div.table(ENTITIES["logistics/items"]).values() if div else []
        item = next((i for i in items if i.get("Code") == body.get("code")), None)
        if item is None:
            return odata_error(404, f"no item {body.get('code')!r} in division {body.get('division')!r}")
        position = self.store.set_stock(div, item, current=float(body["current"]))
        self._maybe_save()
        return JSONResponse({k: v for k, v in position.items() if k != "Warehouse"})

    async def admin_reset_limits(self, request: Request) -> Response:
        self.limits.reset()
        self._errors.clear()
        return JSONResponse({"ok": True})


def _is_guid(value: str) -> bool:
    return bool(
        re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", value)
    )
