"""The Autotask simulator's HTTP surface: zone discovery, the REST API v1.0 of one tenant, admin routes.

URL layout (one host plays both Autotask hosts; paths are case-insensitive, reference §1):

- ``GET /atservicesrest/v1.0/zoneInformation?user=`` (no credentials, not counted): ``{zoneName, url,
  webUrl, ci}``; an unknown or empty user is HTTP 500 (§1, observed). ``url`` is the zone's REST root,
  ``https://<host>/zone{N}/ATServicesRest/``; the API lives under ``{url}V1.0/``.
- ``GET /atservicesrest/versioninformation`` -> ``{"apiVersions": ["1.0"]}`` (not counted).
- Every other ``/atservicesrest/...`` or ``/zone{M}/...`` path of another zone answers 401, as a call to
  the wrong zone does (§9); ``POST /__admin/zone`` moves the tenant, so clients can test re-discovery.
- Under the zone root: ``ThresholdInformation``; per entity ``query`` (GET ``?search=`` / POST),
  ``query/count``, ``query/next`` / ``query/prev`` (the page URLs), ``{id}``, create (POST), update
  (PATCH) and replace (PUT), ``entityInformation``, ``entityInformation/fields``,
  ``entityInformation/userDefinedFields``; Contacts are written only under ``Companies/{id}/Contacts``.

Every API call needs ``UserName``, ``Secret`` and ``ApiIntegrationcode`` (401 otherwise);
``ImpersonationResourceId`` is optional and must name an active resource (403 otherwise). Each
authenticated call counts against the tenant's rolling threshold (see ``_threshold``) before it is
served, whatever its outcome; above it the answer is 429. Errors are ``{"errors": [string, ...]}``.

Admin routes (no auth, a sandbox): ``GET|DELETE /__admin/stats``; ``GET|POST /__admin/threshold``
(``{"add": n}`` counts n requests of other integrations now, ``{"clear": true}``); ``POST /__admin/clock``
(``{"advance": seconds}``); ``POST /__admin/zone`` (``{"zone": n}``); ``GET|POST|DELETE /__admin/faults``
(``{"latency_ms": 150, "rules": [{"status": 503, "count": 2, "path": "Companies", "method": "PATCH"}]}``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._query import QueryError, parse_query
from ._schema import ENTITIES, EntitySpec, Picklist, entity_by_path
from ._store import ApiError, Tenant
from ._threshold import SimClock, Threshold

__all__ = ["AutotaskSimulator", "SimulatorOptions", "error"]

ZONE_NAMES = {2: "America East", 5: "America West", 14: "America East 2", 19: "EU1 (English)", 24: "EU2"}
_ZONE_PATH = re.compile(r"^/zone(?P<zone>\d+)/atservicesrest/v1\.0/(?P<rest>.*)$", re.IGNORECASE)
_DISCOVERY = "/atservicesrest/v1.0/zoneinformation"
_VERSIONS = "/atservicesrest/versioninformation"


def error(status: int, *messages: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Autotask's error body for every status: an array of strings (§9)."""
    return JSONResponse({"errors": list(messages)}, status_code=status, headers=headers)


@dataclass
class SimulatorOptions:
    """Knobs with Autotask's real values as defaults; tests and the benchmark change them."""

    threshold: int = 10_000
    threshold_window_seconds: float = 3600.0
    #: Multiplies the 0.5 s / 1 s threshold latency (0 turns it off, 0.1 makes it 50 / 100 ms).
    threshold_latency_scale: float = 1.0
    #: Fixed latency added to every API call, like a WAN round trip (the benchmark uses 150).
    latency_ms: float = 0.0
    #: Reproduce the observed silent drop of unknown filter operators instead of refusing them.
    drop_unknown_operators: bool = False
    save_interval: float = 2.0

    @classmethod
    def from_mapping(cls, options: dict[str, Any]) -> SimulatorOptions:
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(
                f"unknown Autotask simulator option(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        for name, value in options.items():
            if name == "drop_unknown_operators":
                if not isinstance(value, bool):
                    raise ValueError(f"Autotask simulator option {name} must be true or false, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"Autotask simulator option {name} must be a number, got {value!r}")
        return cls(**options)


@dataclass(frozen=True)
class Caller:
    """Who makes one request: the API user, and the resource its writes are attributed to."""

    username: str
    acting_as: int


@dataclass
class Faults:
    latency_ms: float = 0.0
    rules: list[dict] = field(default_factory=list)


class AutotaskSimulator:
    """One tenant served over HTTP(S); handlers are async on one event loop, so state needs no locks."""

    def __init__(
        self, tenant: Tenant, options: SimulatorOptions | None = None, *, clock: SimClock | None = None
    ):
        self.tenant = tenant
        self.options = options or SimulatorOptions()
        self.clock = clock or SimClock()
        self.threshold = Threshold(
            limit=self.options.threshold,
            window_seconds=self.options.threshold_window_seconds,
            latency_scale=self.options.threshold_latency_scale,
            clock=self.clock,
        )
        self.faults = Faults(latency_ms=self.options.latency_ms)
        self.stats: Counter[str] = Counter()
        self._last_save = time.monotonic()
        self.app = Starlette(
            routes=[
                Route("/__admin/stats", self.admin_stats, methods=["GET", "DELETE"]),
                Route("/__admin/threshold", self.admin_threshold, methods=["GET", "POST"]),
                Route("/__admin/clock", self.admin_clock, methods=["POST"]),
                Route("/__admin/zone", self.admin_zone, methods=["POST"]),
                Route("/__admin/faults", self.admin_faults, methods=["GET", "POST", "DELETE"]),
                Route("/{path:path}", self.dispatch, methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
            ]
        )

    # ----- admin ------------------------------------------------------------------------------
    async def _admin_body(self, request: Request) -> dict:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            raise ApiError(400, f"admin body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "admin body must be a JSON object")
        return body

    async def admin_stats(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.stats.clear()
        return JSONResponse(
            {
                "calls": dict(self.stats),
                "total": sum(self.stats.values()),
                "threshold_count": self.threshold.current(),
                "refused": self.threshold.refused,
            }
        )

    async def admin_threshold(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await self._admin_body(request)
                add = body.get("add", 0)
                if isinstance(add, bool) or not isinstance(add, int) or add < 0:
                    raise ApiError(400, "'add' must be a non-negative integer")
            except ApiError as exc:
                return error(exc.status, *exc.messages)
            if body.get("clear"):
                self.threshold.clear()
            if add:
                self.threshold.record(add)
        return JSONResponse(
            {
                "externalRequestThreshold": self.threshold.limit,
                "requestThresholdTimeframe": int(self.threshold.window_seconds // 60),
                "currentTimeframeRequestCount": self.threshold.current(),
            }
        )

    async def admin_clock(self, request: Request) -> Response:
        try:
            body = await self._admin_body(request)
            advance = body.get("advance")
            if isinstance(advance, bool) or not isinstance(advance, int | float) or advance < 0:
                raise ApiError(400, "'advance' must be a non-negative number of seconds")
        except ApiError as exc:
            return error(exc.status, *exc.messages)
        self.clock.advance(float(advance))
        return JSONResponse({"now": self.clock()})

    async def admin_zone(self, request: Request) -> Response:
        try:
            body = await self._admin_body(request)
            zone = body.get("zone")
            if isinstance(zone, bool) or not isinstance(zone, int) or zone < 1:
                raise ApiError(400, "'zone' must be a positive integer")
        except ApiError as exc:
            return error(exc.status, *exc.messages)
        self.tenant.zone = zone
        self.tenant.dirty = True
        return JSONResponse({"zone": zone, "url": self.zone_url(request)})

    async def admin_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults = Faults()
        elif request.method == "POST":
            try:
                body = await self._admin_body(request)
                rules = body.get("rules", [])
                if not isinstance(rules, list) or not all(
                    isinstance(r, dict) and "status" in r for r in rules
                ):
                    raise ApiError(400, "'rules' must be a list of objects with a 'status'")
                self.faults = Faults(float(body.get("latency_ms", 0)), [dict(r) for r in rules])
            except (ApiError, TypeError, ValueError) as exc:
                return error(400, *(exc.messages if isinstance(exc, ApiError) else [str(exc)]))
        return JSONResponse({"latency_ms": self.faults.latency_ms, "rules": self.faults.rules})

    def _take_fault(self, request: Request) -> dict | None:
        for rule in self.faults.rules:
            if rule.get("count", 1) <= 0:
                continue
            if rule.get("path") and rule["path"].lower() not in request.url.path.lower():
                continue
            if rule.get("method") and rule["method"].upper() != request.method:
                continue
            rule["count"] = rule.get("count", 1) - 1
            return rule
        return None

    # ----- helpers ----------------------------------------------------------------------------
    @staticmethod
    def base_url(request: Request) -> str:
        host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
        return f"{request.url.scheme}://{host}"

    def zone_url(self, request: Request) -> str:
        return f"{self.base_url(request)}/zone{self.tenant.zone}/ATServicesRest/"

    def _maybe_save(self) -> None:
        if self.tenant.dirty and time.monotonic() - self._last_save >= self.options.save_interval:
            self.tenant.save()
            self._last_save = time.monotonic()

    # ----- entry point ------------------------------------------------------------------------
    async def dispatch(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        lower = path.lower().rstrip("/")
        if lower == _DISCOVERY and request.method == "GET":
            return self.zone_information(request)
        if lower == _VERSIONS and request.method == "GET":
            return JSONResponse({"apiVersions": ["1.0"]})
        match = _ZONE_PATH.match(path)
        if match is None and not lower.startswith(("/atservicesrest/", "/zone")):
            return error(404, f"No such resource: {path}")
        user, problem = self.authenticate(request)
        if problem is not None:
            return problem
        if match is None or int(match["zone"]) != self.tenant.zone:
            # The tenant is not served here: real Autotask answers a call to the wrong zone with 401.
            return error(
                401, "The user's database is not in this zone; look the zone up with zoneInformation."
            )
        verdict = self.threshold.hit()
        if not verdict.allowed:
            return error(
                429,
                f"The request threshold of {self.threshold.limit} requests per "
                f"{int(self.threshold.window_seconds // 60)} minutes has been exceeded for this database.",
            )
        delay = verdict.added_latency + self.faults.latency_ms / 1000
        if delay:
            await asyncio.sleep(delay)
        rest = [urllib.parse.unquote(p) for p in match["rest"].split("/") if p]
        self.stats[f"{request.method} {'/'.join(_shape(rest))}"] += 1
        fault = self._take_fault(request)
        if fault is not None:
            return error(int(fault["status"]), f"Injected fault {fault['status']}.")
        try:
            response = await self.api(request, rest, user)
        except ApiError as exc:
            response = error(exc.status, *exc.messages)
        except QueryError as exc:
            response = error(exc.status, exc.message)
        self._maybe_save()
        if verdict.added_latency:
            response.headers["X-Sandbox-Threshold-Latency"] = f"{verdict.added_latency:g}"
        return response

    def zone_information(self, request: Request) -> Response:
        name = request.query_params.get("user", "")
        if not name or name.lower() not in self.tenant.users:
            # 500, not 404, for an unknown or empty user (reference §1, observed by django-autotask).
            return error(500, f"Zone information could not be determined for user '{name}'.")
        zone = self.tenant.zone
        return JSONResponse(
            {
                "zoneName": ZONE_NAMES.get(zone, f"Zone {zone}"),
                "url": self.zone_url(request),
                "webUrl": f"{self.base_url(request)}/ww{zone}/",
                "ci": self.tenant.ci,
            }
        )

    def authenticate(self, request: Request) -> tuple[Caller | None, Response | None]:
        headers = request.headers  # case-insensitive, as Autotask's header names are (§2)
        missing = [h for h in ("UserName", "Secret", "ApiIntegrationcode") if not headers.get(h)]
        if missing:
            return None, error(401, f"Missing authentication header(s): {', '.join(missing)}.")
        user = self.tenant.users.get(headers["UserName"].lower())
        if (
            user is None
            or headers["Secret"] != user.secret
            or headers["ApiIntegrationcode"] != user.integration_code
        ):
            return None, error(401, "The user name, secret or API integration code is not valid.")
        raw = headers.get("ImpersonationResourceId")
        if not raw:
            return Caller(user.username, user.resource_id), None
        resource = self.tenant.records["resources"].get(int(raw)) if raw.strip().isdigit() else None
        if resource is None or not resource.get("isActive"):
            return None, error(
                403, f"ImpersonationResourceId {raw} is not an active resource that may be impersonated."
            )
        return Caller(user.username, resource["id"]), None

    # ----- API --------------------------------------------------------------------------------
    async def api(self, request: Request, rest: list[str], user) -> Response:
        method = request.method
        if [p.lower() for p in rest] == ["thresholdinformation"]:
            if method != "GET":
                raise ApiError(405, "ThresholdInformation supports GET only.")
            return JSONResponse(
                {
                    "externalRequestThreshold": self.threshold.limit,
                    "requestThresholdTimeframe": int(self.threshold.window_seconds // 60),
                    "currentTimeframeRequestCount": self.threshold.current(),
                }
            )
        if not rest:
            raise ApiError(404, "No entity named in the URL.")
        entity = entity_by_path(rest[0])
        if entity is None:
            raise ApiError(404, f"'{rest[0]}' is not an entity of this API.")
        tail = [p.lower() for p in rest[1:]]
        if tail[:1] == ["query"]:
            return await self.query(request, entity, tail[1:])
        if tail[:1] == ["entityinformation"]:
            if method != "GET":
                raise ApiError(405, "entityInformation supports GET only.")
            return self.entity_information(entity, tail[1:])
        if not tail:
            return await self.write_root(request, entity, user)
        if len(tail) == 1:
            return self.by_id(request, entity, rest[1], parent=None)
        # Child URLs: Companies/{id}/Contacts[/{id}]
        child = entity_by_path(rest[2])
        if child is None or child.parent != entity.path or len(tail) > 3:
            raise ApiError(404, f"No such resource: {'/'.join(rest)}")
        parent_id = _path_id(rest[1], entity)
        if parent_id not in self.tenant.rows(entity):
            raise ApiError(404, f"No {entity.label} with id {parent_id} was found.")
        if len(tail) == 3:
            return self.by_id(request, child, rest[3], parent=parent_id)
        return await self.write_child(request, child, parent_id, user)

    async def json_body(self, request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"The request body is not valid JSON: {exc}.") from None

    async def write_root(self, request: Request, entity: EntitySpec, user) -> Response:
        method = request.method
        if entity.parent:
            raise ApiError(
                405,
                f"{entity.path} are created, updated and deleted under {entity.parent}/{{id}}/{entity.path}; "
                f"{entity.path} itself supports query and get by id only.",
            )
        if method == "POST" and entity.can_create:
            body = await self.json_body(request)
            new_id = self.tenant.create(entity, body, now=self.clock(), creator=user.acting_as)
            return JSONResponse({"itemId": new_id})
        if method in {"PATCH", "PUT"} and entity.can_update:
            body = await self.json_body(request)
            rid = self.tenant.update(entity, body, now=self.clock(), replace=method == "PUT")
            return JSONResponse({"itemId": rid})
        if method == "GET":
            raise ApiError(405, f"GET {entity.path} is not a list call; query with {entity.path}/query.")
        raise ApiError(405, f"{method} is not supported on {entity.path}.")

    async def write_child(self, request: Request, entity: EntitySpec, parent_id: int, user) -> Response:
        method = request.method
        body = await self.json_body(request) if method in {"POST", "PATCH", "PUT"} else None
        if method == "POST":
            new_id = self.tenant.create(
                entity, body, now=self.clock(), creator=user.acting_as, parent_id=parent_id
            )
            return JSONResponse({"itemId": new_id})
        if method in {"PATCH", "PUT"}:
            rid = self.tenant.update(
                entity, body, now=self.clock(), replace=method == "PUT", parent_id=parent_id
            )
            return JSONResponse({"itemId": rid})
        raise ApiError(405, f"{method} is not supported on {entity.parent}/{{id}}/{entity.path}.")

    def by_id(self, request: Request, entity: EntitySpec, raw_id: str, parent: int | None) -> Response:
        rid = _path_id(raw_id, entity)
        if request.method == "DELETE":
            if not entity.can_delete or (entity.parent and parent is None):
                raise ApiError(
                    405,
                    f"{entity.path} cannot be deleted through the API"
                    + ("; inactivate instead." if entity.path == "Companies" else "."),
                )
            self.tenant.delete(entity, rid, parent)
            return JSONResponse({"itemId": rid})
        if request.method != "GET":
            raise ApiError(405, f"{request.method} is not supported on {entity.path}/{{id}}.")
        row = self.tenant.rows(entity).get(rid)
        if row is None or (parent is not None and row.get(entity.parent_field) != parent):
            raise ApiError(404, f"No {entity.label} with id {rid} was found.")
        return JSONResponse({"item": self.tenant.render(entity, row)})

    def entity_information(self, entity: EntitySpec, tail: list[str]) -> Response:
        if not tail:
            return JSONResponse(
                {
                    "info": {
                        "name": entity.label,
                        "canCreate": entity.can_create,
                        "canUpdate": entity.can_update,
                        "canQuery": True,
                        "canDelete": entity.can_delete,
                        "hasUserDefinedFields": entity.has_udfs,
                        "supportsWebhookCallouts": entity.path in {"Companies", "Contacts"},
                        "userAccessForCreate": "All" if entity.can_create else "None",
                        "userAccessForDelete": "All" if entity.can_delete else "None",
                        "userAccessForQuery": "All",
                        "userAccessForUpdate": "All" if entity.can_update else "None",
                    }
                }
            )
        if tail == ["fields"]:
            return JSONResponse({"fields": [_field_info(f) for f in entity.fields]})
        if tail == ["userdefinedfields"]:
            return JSONResponse({"fields": [_udf_info(d) for d in self.tenant.udf_definitions(entity)]})
        raise ApiError(404, f"No such resource: {entity.path}/entityInformation/{'/'.join(tail)}")

    # ----- queries ----------------------------------------------------------------------------
    async def query(self, request: Request, entity: EntitySpec, tail: list[str]) -> Response:
        method = request.method
        if tail not in ([], ["count"], ["next"], ["prev"]):
            raise ApiError(404, f"No such resource: {entity.path}/query/{'/'.join(tail)}")
        if tail in (["next"], ["prev"]) and method != "GET":
            raise ApiError(405, "Page URLs are GET only.")
        if method == "GET":
            search = request.query_params.get("search")
            if not search:
                raise ApiError(400, "A GET query needs the query document in ?search=.")
            try:
                body = json.loads(search)
            except ValueError as exc:
                raise ApiError(400, f"The search parameter is not valid JSON: {exc}.") from None
        elif method == "POST":
            body = await self.json_body(request)
        else:
            raise ApiError(405, f"{method} is not supported on {entity.path}/query.")
        q = parse_query(
            entity,
            body,
            self.tenant.udf_names(entity),
            drop_unknown_operators=self.options.drop_unknown_operators,
        )
        rows = self.tenant.rows(entity)
        if tail == ["count"]:
            return JSONResponse({"queryCount": sum(1 for row in rows.values() if q.predicate(row))})
        after, before = None, None
        if tail:
            try:
                paging = json.loads(request.query_params.get("paging") or "")
                after, before = paging.get("after"), paging.get("before")
            except (ValueError, AttributeError):
                raise ApiError(400, "The paging parameter of a page URL is not valid.") from None
        matching = sorted(rid for rid, row in rows.items() if q.predicate(row))
        if before is not None:
            earlier = [rid for rid in matching if rid < before]
            page = earlier[-q.max_records :]
        else:
            start = (
                0
                if after is None
                else next((i for i, rid in enumerate(matching) if rid > after), len(matching))
            )
            page = matching[start : start + q.max_records]
        if len(matching) > q.max_records and q.include_fields is not None and "id" not in q.include_fields:
            raise QueryError(
                500, "IncludeFields must contain id when a query can return more than 500 records."
            )
        items = [self.tenant.render(entity, rows[rid], q.include_fields, q.include_udfs) for rid in page]
        has_next = bool(page) and matching[-1] > page[-1]
        has_prev = bool(page) and matching[0] < page[0]
        search_text = json.dumps(body, separators=(",", ":"))
        base = f"{self.zone_url(request)}V1.0/{entity.path}/query"

        def page_url(kind: str, paging: dict) -> str:
            return f"{base}/{kind}?" + urllib.parse.urlencode(
                {"paging": json.dumps(paging, separators=(",", ":")), "search": search_text}
            )

        return JSONResponse(
            {
                "items": items,
                "pageDetails": {
                    "count": len(items),
                    "requestCount": q.max_records,
                    "prevPageUrl": page_url("prev", {"before": page[0]}) if has_prev else None,
                    "nextPageUrl": page_url("next", {"after": page[-1]}) if has_next else None,
                },
            }
        )


def _shape(rest: list[str]) -> list[str]:
    """Stats key: ids replaced by {id}, so counters group by endpoint."""
    return ["{id}" if p.isdigit() else p for p in rest]


def _path_id(raw: str, entity: EntitySpec) -> int:
    if not raw.isdigit():
        raise ApiError(404, f"'{raw}' is not an id of the {entity.label} Entity.")
    return int(raw)


def _picklist_values(picklist: Picklist) -> list[dict]:
    return [
        {
            "value": str(value),  # strings in metadata, integers in records (§7)
            "label": label,
            "isDefaultValue": picklist.default == value,
            "sortOrder": n,
            "parentValue": "",
            "isActive": active,
            "isSystem": True,
        }
        for n, (value, label, active) in enumerate(picklist.values, start=1)
    ]


def _field_info(f) -> dict:
    return {
        "name": f.name,
        "dataType": f.data_type,
        "length": f.length,
        "isRequired": f.required,
        "isReadOnly": f.read_only,
        "isQueryable": f.queryable,
        "isReference": bool(f.reference),
        "referenceEntityType": ENTITIES[f.reference.lower()].label if f.reference else "",
        "isPickList": f.picklist is not None,
        "picklistValues": _picklist_values(f.picklist) if f.picklist is not None else None,
        "picklistParentValueField": "",
        "isSupportedWebhookField": not f.read_only,
    }


_UDF_TYPES = {1: "string", 2: "double", 3: "datetime", 4: "string"}


def _udf_info(d: dict) -> dict:
    return {
        "name": d["name"],
        "label": d["name"],
        "type": _UDF_TYPES.get(d["dataType"], "string"),
        "length": 1024 if d["dataType"] == 1 else 0,
        "description": d.get("description"),
        "isRequired": bool(d.get("isRequired")),
        "isReadOnly": False,
        "isQueryable": True,
        "isProtected": bool(d.get("isProtected")),
        "isEncrypted": bool(d.get("isEncrypted")),
        "isActive": bool(d.get("isActive")),
        "isPickList": d["dataType"] == 4,
        "picklistValues": [] if d["dataType"] == 4 else None,
        "defaultValue": d.get("defaultValue"),
    }
