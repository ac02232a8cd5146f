"""REST endpoints of the simulator: SOQL with query locators, sObject rows, external-id upserts, Collections.

A mixin of `SalesforceSimulator`: it uses the simulator's `org`, `cursors`, `lock_fault` and `_json`.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .ids import make_id, normalize_id
from .org import MultipleMatches, SaveError, format_datetime
from .schema import OBJECTS, get_object
from .soql import SoqlError, parse
from .wire import Cursor, Session, lock_error, lock_save_error, method_not_allowed, rest_error

__all__ = ["COLLECTION_MAX", "RestApi"]

COLLECTION_MAX = 200


class RestApi:
    """Query, sObject and Collections handlers."""

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
                or self.clock() - cursor.last_used > self.cursor_timeout
                or not offset.isdigit()
            ):
                self.cursors.pop(locator, None)
                return rest_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            cursor.last_used = self.clock()
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
            return rest_error(400, "MALFORMED_QUERY", "A query string has to be specified")
        q = parse(q_text)
        rows = self.org.query(q, include_deleted=include_deleted)
        if q.count_only:
            return JSONResponse({"totalSize": len(rows), "done": True, "records": []})
        self.cursor_counter += 1
        locator = make_id("01g", self.cursor_counter)[:15]
        cursor = Cursor([r["Id"] for r in rows], q.fields, version, self.clock(), endpoint, q.subqueries)
        if len(cursor.ids) > batch:
            self.cursors[locator] = cursor
            while len(self.cursors) > 10:  # a user keeps at most 10 open cursors; the oldest dies
                self.cursors.pop(next(iter(self.cursors)))
        return self._page(cursor, locator, 0, batch, version)

    def _page(self, cursor: Cursor, locator: str, offset: int, batch: int, version: str) -> Response:
        ids = cursor.ids[offset : offset + batch]
        records = []
        for rid in ids:
            rec = self.org.get(rid, include_deleted=True)
            if rec is not None:
                records.append(self.org.shape(rec, cursor.paths, cursor.version, cursor.subqueries))
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
    async def _sobjects(self, request: Request, parts: list[str], version: str, session: Session) -> Response:
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
            return rest_error(404, "NOT_FOUND", "The requested resource does not exist")
        if len(parts) == 1:
            if method == "GET":
                d = obj.describe(version)
                return JSONResponse(
                    {"objectDescribe": {k: v for k, v in d.items() if k != "fields"}, "recentItems": []}
                )
            if method == "POST":
                body = await self._json(request)
                if not isinstance(body, dict):
                    return rest_error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
                if self.lock_fault():
                    return lock_error()
                rid, errors = self.org.create(obj, body, user_id=session.user_id)
                if errors:
                    return JSONResponse([e.rest() for e in errors], status_code=400)
                return JSONResponse({"id": rid, "success": True, "errors": []}, status_code=201)
            return method_not_allowed(method, "GET,HEAD,POST")
        if parts[1] == "describe" and len(parts) == 2:
            return JSONResponse(obj.describe(version))
        if parts[1] in ("deleted", "updated") and len(parts) == 2:
            return self._changed(request, obj, parts[1])
        if len(parts) == 2:
            return await self._record(request, obj, parts[1], version, session)
        if len(parts) == 3:
            return await self._by_external_id(request, obj, parts[1], parts[2], version, session)
        return rest_error(404, "NOT_FOUND", "The requested resource does not exist")

    def _changed(self, request: Request, obj, kind: str) -> Response:
        from .soql import parse_sf_datetime

        try:
            start = parse_sf_datetime(request.query_params["start"])
            end = parse_sf_datetime(request.query_params["end"])
        except (KeyError, ValueError):
            return rest_error(400, "INVALID_REPLICATION_DATE", "start and end must be ISO datetimes")
        if end - start > timedelta(days=30) or start < datetime.now(UTC) - timedelta(days=30):
            return rest_error(400, "INVALID_REPLICATION_DATE", "startDate must be within the last 30 days")
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

    async def _record(self, request: Request, obj, rid: str, version: str, session: Session) -> Response:
        method = request.method
        norm = normalize_id(rid)
        if norm is None or norm[:3] != obj.key_prefix:
            return rest_error(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {rid}"
            )
        rec = self.org.get(norm)
        if rec is None:
            return rest_error(404, "NOT_FOUND", "The requested resource does not exist")
        if method == "GET":
            return JSONResponse(self._read(request, obj, rec, version))
        if method == "PATCH":
            body = await self._json(request)
            if not isinstance(body, dict):
                return rest_error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
            if self.lock_fault():
                return lock_error()
            errors = self.org.update(obj, norm, body, user_id=session.user_id)
            if errors:
                return JSONResponse([e.rest() for e in errors], status_code=400)
            return Response(status_code=204)
        if method == "DELETE":
            errors = self.org.delete(norm)
            if errors:
                return JSONResponse([e.rest() for e in errors], status_code=400)
            return Response(status_code=204)
        return method_not_allowed(method, "GET,HEAD,PATCH,DELETE")

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
        self, request: Request, obj, field_name: str, value: str, version: str, session: Session
    ) -> Response:
        fdef = obj.field(field_name)
        if fdef is None or not (fdef.external_id or fdef.name == "Id"):
            return rest_error(
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
                return rest_error(404, "NOT_FOUND", "The requested resource does not exist")
            if method == "GET":
                return JSONResponse(self._read(request, obj, self.org.get(matches[0]), version))
            errors = self.org.delete(matches[0])
            if errors:
                return JSONResponse([e.rest() for e in errors], status_code=400)
            return Response(status_code=204)
        if method not in ("PATCH", "POST"):
            return method_not_allowed(method, "GET,HEAD,PATCH,DELETE")
        body = await self._json(request)
        if not isinstance(body, dict):
            return rest_error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        if self.lock_fault():
            return lock_error()
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
        self, request: Request, parts: list[str], version: str, session: Session
    ) -> Response:
        method = request.method
        if method == "DELETE" and not parts:
            ids = [i for i in request.query_params.get("ids", "").split(",") if i]
            all_or_none = request.query_params.get("allOrNone", "false").lower() == "true"
            if len(ids) > COLLECTION_MAX:
                return rest_error(
                    400,
                    "EXCEEDED_ID_LIMIT",
                    "record limit reached. cannot submit more than 200 records into this call",
                )
            return self._run_batch(ids, all_or_none, lambda rid: (rid, False, self.org.delete(rid)))
        if (method == "GET" and len(parts) == 1) or (method == "POST" and len(parts) == 1):
            obj = get_object(parts[0])
            if obj is None:
                return rest_error(404, "NOT_FOUND", "The requested resource does not exist")
            if method == "GET":
                ids = request.query_params.get("ids", "").split(",")
                fields = request.query_params.get("fields", "")
            else:
                body = await self._json(request)
                ids, fields = body.get("ids", []), ",".join(body.get("fields", []))
            if not fields:
                return rest_error(400, "MISSING_ARGUMENT", "fields is required")
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
            return rest_error(400, "JSON_PARSER_ERROR", "The request body needs a records array")
        records = body["records"]
        all_or_none = bool(body.get("allOrNone", False))
        if len(records) > COLLECTION_MAX:
            return rest_error(
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
                return rest_error(404, "NOT_FOUND", "The requested resource does not exist")
            if fdef is None or not (fdef.external_id or fdef.name == "Id"):
                return rest_error(
                    400,
                    "INVALID_FIELD",
                    f"Field name provided, {parts[1]} is not an External ID or indexed field for {obj.name}",
                    [parts[1]],
                )
            seen: Counter[str] = Counter(
                str(r.get(fdef.name, "")).lower() for r in records if isinstance(r, dict)
            )
            return self._run_batch(
                records,
                all_or_none,
                lambda r: self._collection_upsert(obj, fdef.name, r, seen, session),
                upsert=True,
            )
        return method_not_allowed(method, "GET,POST,PATCH,DELETE")

    def _record_type(self, record: Any) -> tuple[Any, SaveError | None]:
        if not isinstance(record, dict):
            return None, SaveError("JSON_PARSER_ERROR", "each record must be a JSON object")
        attrs = record.get("attributes")
        obj = get_object(attrs.get("type", "")) if isinstance(attrs, dict) else None
        if obj is None:
            return None, SaveError("INVALID_TYPE", "Must send a concrete entity type.")
        return obj, None

    def _collection_create(self, record: Any, session: Session):
        obj, err = self._record_type(record)
        if err:
            return None, False, [err]
        if record.get("Id"):
            return None, False, [SaveError("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])]
        if self.lock_fault():
            return None, False, [lock_save_error()]
        rid, errors = self.org.create(obj, record, user_id=session.user_id)
        return rid, True, errors

    def _collection_update(self, record: Any, session: Session):
        obj, err = self._record_type(record)
        if err:
            return None, False, [err]
        rid = record.get("Id")
        if not rid:
            return None, False, [SaveError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])]
        if self.lock_fault():
            return rid, False, [lock_save_error()]
        return rid, False, self.org.update(obj, rid, record, user_id=session.user_id)

    def _collection_upsert(self, obj, ext: str, record: Any, seen: Counter, session: Session):
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
            return None, False, [lock_save_error()]
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

    def _run_batch(self, items: list, all_or_none: bool, apply, *, upsert: bool = False) -> Response:
        """Apply each item, then answer HTTP 200 with one result per item (``created`` only on upserts)."""
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
                ok = {"id": rid, "success": True, "errors": []}
                results.append({**ok, "created": created} if upsert else ok)
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
