"""Bulk API 2.0 jobs: ingest (CSV upload, state machine, three result CSVs) and query (CSV pages).

Jobs are processed when the client closes the upload (``UploadComplete``); the job then reads
``InProgress`` for `processing_seconds` before it shows its final state, so clients must poll as they
would against the real service. Rows go through the same `Org` save rules as REST writes.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .org import MultipleMatches, Org, SaveError, format_datetime
from .schema import ObjectDef, get_object
from .soql import SoqlError, SoqlQuery

__all__ = ["DELIMITERS", "BulkError", "IngestJob", "QueryJob", "process_ingest"]

DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}
OPERATIONS = {"insert", "update", "upsert", "delete", "hardDelete"}


class BulkError(Exception):
    """A refused Bulk request: rendered as `[{"errorCode": ..., "message": ...}]` with `status`."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class IngestJob:
    id: str
    object: str
    operation: str
    external_id_field: str | None
    version: str
    user_id: str
    line_ending: str = "LF"
    column_delimiter: str = "COMMA"
    state: str = "Open"
    created: str = field(default_factory=lambda: format_datetime(datetime.now(UTC)))
    data: str | None = None
    closed_at: float | None = None
    final_state: str | None = None
    error_message: str | None = None
    processed: int = 0
    failed: int = 0
    successful_rows: list[list[str]] = field(default_factory=list)
    failed_rows: list[list[str]] = field(default_factory=list)
    unprocessed_rows: list[list[str]] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    processing_ms: int = 0

    def visible_state(self, processing_seconds: float) -> str:
        if self.final_state and self.closed_at is not None:
            if time.monotonic() - self.closed_at >= processing_seconds:
                self.state = self.final_state
            else:
                self.state = "InProgress"
        return self.state

    def info(self, processing_seconds: float) -> dict[str, Any]:
        state = self.visible_state(processing_seconds)
        done = state in ("JobComplete", "Failed", "Aborted")
        return {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": self.user_id,
            "createdDate": self.created,
            "systemModstamp": self.created,
            "state": state,
            "externalIdFieldName": self.external_id_field,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.version),
            "jobType": "V2Ingest",
            "contentUrl": f"services/data/v{self.version}/jobs/ingest/{self.id}/batches",
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
            "numberRecordsProcessed": self.processed if done else 0,
            "numberRecordsFailed": self.failed if done else 0,
            "retries": 0,
            "totalProcessingTime": self.processing_ms if done else 0,
            "apiActiveProcessingTime": self.processing_ms if done else 0,
            "apexProcessingTime": 0,
            "errorMessage": self.error_message if done else None,
        }

    def result_csv(self, kind: str) -> str:
        delim = DELIMITERS[self.column_delimiter]
        buf = io.StringIO()
        writer = csv.writer(
            buf, delimiter=delim, lineterminator="\r\n" if self.line_ending == "CRLF" else "\n"
        )
        if kind == "successfulResults":
            writer.writerow(["sf__Id", "sf__Created", *self.header])
            writer.writerows(self.successful_rows)
        elif kind == "failedResults":
            writer.writerow(["sf__Id", "sf__Error", *self.header])
            writer.writerows(self.failed_rows)
        else:
            writer.writerow(self.header)
            writer.writerows(self.unprocessed_rows)
        return buf.getvalue()


@dataclass
class QueryJob:
    id: str
    query: SoqlQuery
    operation: str
    version: str
    user_id: str
    column_delimiter: str = "COMMA"
    line_ending: str = "LF"
    created: str = field(default_factory=lambda: format_datetime(datetime.now(UTC)))
    state: str = "UploadComplete"
    closed_at: float = field(default_factory=time.monotonic)
    record_ids: list[str] = field(default_factory=list)
    error_message: str | None = None

    def visible_state(self, processing_seconds: float) -> str:
        if self.state in ("UploadComplete", "InProgress"):
            self.state = (
                "JobComplete" if time.monotonic() - self.closed_at >= processing_seconds else "InProgress"
            )
        return self.state

    def info(self, processing_seconds: float) -> dict[str, Any]:
        state = self.visible_state(processing_seconds)
        return {
            "id": self.id,
            "operation": self.operation,
            "object": self.query.obj.name,
            "createdById": self.user_id,
            "createdDate": self.created,
            "systemModstamp": self.created,
            "state": state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.version),
            "jobType": "V2Query",
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
            "numberRecordsProcessed": len(self.record_ids) if state == "JobComplete" else 0,
            "retries": 0,
            "totalProcessingTime": 0,
            "errorMessage": self.error_message,
        }

    def page(self, org: Org, start: int, max_records: int) -> tuple[str, int, int | None]:
        """Return (CSV text, rows in it, next start or None) for one results page."""
        paths = self.query.fields
        buf = io.StringIO()
        writer = csv.writer(
            buf,
            delimiter=DELIMITERS[self.column_delimiter],
            lineterminator="\r\n" if self.line_ending == "CRLF" else "\n",
        )
        writer.writerow([".".join(p) for p in paths])
        ids = self.record_ids[start : start + max_records]
        for rid in ids:
            rec = org.get(rid, include_deleted=True)
            writer.writerow(["" if (v := org.flat_value(rec, p)) is None else _csv_value(v) for p in paths])
        nxt = start + len(ids)
        return buf.getvalue(), len(ids), (nxt if nxt < len(self.record_ids) else None)


def _csv_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _row_values(obj: ObjectDef, header: list[str], row: list[str]) -> tuple[dict[str, Any], SaveError | None]:
    """Turn one CSV row into a field dict: `#N/A` nulls a field, an empty cell leaves it alone."""
    values: dict[str, Any] = {}
    for name, cell in zip(header, row, strict=False):
        if cell == "":
            continue
        value = None if cell == "#N/A" else cell
        if "." in name:
            rel_name, ext = name.split(".", 1)
            values[rel_name] = {ext: value}
        else:
            values[name] = value
    return values, None


def check_header(obj: ObjectDef, header: list[str]) -> str | None:
    """Return the Bulk error text for a header naming an unknown field, or None if it is fine."""
    for name in header:
        base = name.split(".", 1)[0]
        ok = obj.field(name) is not None if "." not in name else obj.relationship(base) is not None
        if not ok:
            return f"InvalidBatch : Field name not found : {name}"
    return None


def process_ingest(job: IngestJob, org: Org, lock_fault: Callable[[], bool]) -> None:
    """Run every row of the uploaded CSV through the org and fill the three result lists."""
    started = time.monotonic()
    obj = get_object(job.object)
    text = job.data or ""
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=DELIMITERS[job.column_delimiter]))
    if not rows:
        job.final_state, job.error_message = "Failed", "InvalidBatch : No data found in the upload"
        return
    job.header, body = rows[0], [r for r in rows[1:] if r]
    problem = check_header(obj, job.header)
    if problem is None and job.operation in ("update", "delete", "hardDelete") and "Id" not in job.header:
        problem = "InvalidBatch : Field name not found : Id"
    if (
        problem is None
        and job.operation == "upsert"
        and not any(h.lower() == (job.external_id_field or "").lower() for h in job.header)
    ):
        problem = f"InvalidBatch : Field name not found : {job.external_id_field}"
    if problem:
        job.final_state, job.error_message = "Failed", problem
        job.unprocessed_rows = body
        return
    key_col = next(
        (n for n, h in enumerate(job.header) if h.lower() == (job.external_id_field or "").lower()), None
    )
    key_counts: dict[str, int] = {}
    if job.operation == "upsert" and key_col is not None:
        for row in body:
            if len(row) > key_col and row[key_col]:
                key_counts[row[key_col].lower()] = key_counts.get(row[key_col].lower(), 0) + 1
    for row in body:
        if key_col is not None and len(row) > key_col and key_counts.get(row[key_col].lower(), 0) > 1:
            # Salesforce refuses every row of a job that repeats an external id, not just the later ones.
            job.failed_rows.append(
                [
                    "",
                    f"DUPLICATE_EXTERNAL_ID:Duplicate external id specified: {row[key_col]}:"
                    f"{job.external_id_field} --",
                    *row,
                ]
            )
            continue
        if len(row) != len(job.header):
            job.failed_rows.append(
                ["", f"INVALID_FIELD:Row has {len(row)} columns, header has {len(job.header)}: --", *row]
            )
            continue
        values, _ = _row_values(obj, job.header, row)
        rid, created, errors = _apply(job, obj, org, values, lock_fault)
        if errors:
            job.failed_rows.append([rid or "", errors[0].bulk(), *row])
        else:
            job.successful_rows.append([rid, "true" if created else "false", *row])
    job.processed = len(body)
    job.failed = len(job.failed_rows)
    job.final_state = "JobComplete"
    job.processing_ms = int((time.monotonic() - started) * 1000)


def _apply(job: IngestJob, obj: ObjectDef, org: Org, values: dict, lock_fault: Callable[[], bool]):
    if lock_fault():
        return (
            values.get("Id"),
            False,
            [
                SaveError(
                    "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records", []
                )
            ],
        )
    op = job.operation
    if op == "insert":
        rid, errors = org.create(obj, values, user_id=job.user_id)
        return rid, True, errors
    if op == "update":
        rid = values.pop("Id", None)
        return rid, False, org.update(obj, rid or "", values, user_id=job.user_id)
    if op in ("delete", "hardDelete"):
        rid = values.get("Id")
        return rid, False, org.delete(rid or "")
    ext = (
        next(k for k in values if k.lower() == job.external_id_field.lower())
        if any(k.lower() == job.external_id_field.lower() for k in values)
        else None
    )
    if ext is None:
        return (
            None,
            False,
            [
                SaveError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{job.external_id_field}]",
                    [job.external_id_field],
                )
            ],
        )
    value = values.pop(ext)
    try:
        return org.upsert(obj, job.external_id_field, value, values, user_id=job.user_id)
    except MultipleMatches as many:
        return (
            None,
            False,
            [
                SaveError(
                    "DUPLICATE_EXTERNAL_ID",
                    f"{job.external_id_field}: more than one record found for external id field: {many.ids}",
                    [job.external_id_field],
                )
            ],
        )


def parse_soql_for_bulk(text: str) -> SoqlQuery:
    from .soql import parse

    try:
        return parse(text)
    except SoqlError as exc:
        raise BulkError(400, exc.code, exc.message) from exc
