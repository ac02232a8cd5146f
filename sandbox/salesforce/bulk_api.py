"""Bulk API 2.0 endpoints of the simulator: ingest jobs (upload, close, results) and query jobs (CSV pages).

A mixin of `SalesforceSimulator`; the job model and row processing live in `bulk.py`.
"""

from __future__ import annotations

import base64
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from .bulk import DELIMITERS, OPERATIONS, BulkError, IngestJob, QueryJob, parse_soql_for_bulk, process_ingest
from .ids import make_id, normalize_id
from .schema import get_object
from .wire import Session, method_not_allowed

__all__ = ["BulkApi"]


class BulkApi:
    """Ingest and query job handlers."""

    # ----- Bulk API 2.0 ------------------------------------------------------------------------
    async def _ingest(self, request: Request, parts: list[str], version: str, session: Session) -> Response:
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
                return method_not_allowed(method, "GET,POST")
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
            return method_not_allowed(method, "GET,PATCH,DELETE")
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
        self, request: Request, parts: list[str], version: str, session: Session
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
            if q.subqueries:
                raise BulkError(
                    400, "INVALIDJOB", "Bulk API 2.0 queries do not support parent-to-child subqueries"
                )
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
