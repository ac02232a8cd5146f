"""A faithful little system in a SQLite file: the reference adapter for tests and demos.

It behaves like the real targets where the operators care: it assigns ids, stamps modification
times, enforces field lengths, required fields and createable/updateable flags per row (refusing
one row, not the batch), finds records by an external-id field, and keeps a write log so tests can
count exactly what was written. Backed by a file, so separate task processes of one DAG run see
the same "system"; `path=None` keeps it in memory for unit tests.

Fault injection, stored in the file so it survives into the next task process:
`crash_after(obj, n)` lets the next n row writes through, then raises RetriableSourceError the way a
dropped connection would, halfway through a batch.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from erpsync.adapters.base import RESULT_COLUMNS, CallLog, FieldMeta, ObjectMeta, ReadWindow
from erpsync.errors import ConfigError, RetriableSourceError

__all__ = ["MemoryAdapter"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (name TEXT PRIMARY KEY, meta TEXT NOT NULL, next_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    object TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, modified TEXT NOT NULL,
    PRIMARY KEY (object, id));
CREATE INDEX IF NOT EXISTS records_modified ON records (object, modified);
CREATE TABLE IF NOT EXISTS writes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, object TEXT NOT NULL, id TEXT NOT NULL, action TEXT NOT NULL,
    at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faults (object TEXT PRIMARY KEY, crash_after INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS busy (object TEXT PRIMARY KEY, remaining INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS clock (id INTEGER PRIMARY KEY CHECK (id = 1), now TEXT NOT NULL);
"""


def _clean(value: Any) -> Any:
    """Turn pandas/numpy scalars into JSON values (NaN and NA become None)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or getattr(value, "ndim", 0) > 0:  # Parquet lists come back as arrays
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
        if isinstance(value, float) and math.isnan(value):
            return None
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    return value


class MemoryAdapter:
    """A SQLite-backed system implementing `SystemAdapter`.

    :param path: the backing file; None keeps everything in memory (one process only).
    :param name: the system's name in reports.
    :param conn_id: accepted for symmetry with the real adapters; unused.
    """

    def __init__(self, path: str | Path | None = None, *, name: str = "memory", conn_id: str | None = None):
        self.name = name
        self.path = str(path) if path else ":memory:"
        self.call_log = CallLog()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        if self.path != ":memory:":
            # A simulated system: durability across power loss does not matter, speed between tasks does.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)
        self._db.create_function(
            "erpsync_norm",
            1,
            lambda v: None if v is None else " ".join(str(v).split()).casefold(),
            deterministic=True,
        )

    # ---- setup helpers (tests, demo) ------------------------------------------------------------

    def define(
        self,
        obj: str,
        fields: Iterable[FieldMeta],
        *,
        id_field: str = "Id",
        modified_field: str | None = "SystemModstamp",
        id_prefix: str | None = None,
    ) -> ObjectMeta:
        """Create (or redefine) an object with its field metadata."""
        meta = ObjectMeta(obj, {f.name: f for f in fields}, id_field=id_field, modified_field=modified_field)
        stored = {
            "id_field": id_field,
            "modified_field": modified_field,
            "id_prefix": id_prefix or obj[:3].upper(),
            "fields": [asdict(f) for f in meta.fields.values()],
        }
        self._db.execute(
            "INSERT INTO objects (name, meta, next_id) VALUES (?, ?, 1) "
            "ON CONFLICT(name) DO UPDATE SET meta = excluded.meta",
            (obj, json.dumps(stored)),
        )
        return meta

    def set_clock(self, now: datetime) -> None:
        """Fix the time the system stamps on writes (so tests control data intervals)."""
        self._db.execute(
            "INSERT INTO clock (id, now) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET now = excluded.now",
            (now.astimezone(UTC).isoformat(),),
        )

    def seed(
        self, obj: str, rows: Iterable[dict[str, Any]], *, modified: datetime | None = None
    ) -> list[str]:
        """Insert or replace records as they are in the source (no validation); return their ids."""
        meta = self._meta(obj)
        ids = []
        with self._lock:
            for row in rows:
                row = {k: _clean(v) for k, v in row.items()}
                rid = row.get(meta.id_field) or self._next_id(obj)
                row[meta.id_field] = rid
                stamp = (modified or self._now()).astimezone(UTC).isoformat()
                if meta.modified_field:
                    row[meta.modified_field] = stamp
                self._db.execute(
                    "INSERT INTO records (object, id, data, modified) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(object, id) DO UPDATE SET data = excluded.data, modified = excluded.modified",
                    (obj, rid, json.dumps(row), stamp),
                )
                ids.append(rid)
        return ids

    def change(
        self, obj: str, rid: str, changes: dict[str, Any], *, modified: datetime | None = None
    ) -> None:
        """Edit one record in place, as a user would in the system's UI."""
        record = self.get(obj, rid)
        if record is None:
            raise KeyError(f"{obj} {rid} does not exist")
        self.seed(obj, [{**record, **changes}], modified=modified)

    def get(self, obj: str, rid: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT data FROM records WHERE object = ? AND id = ?", (obj, rid)).fetchone()
        return json.loads(row[0]) if row else None

    def all(self, obj: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT data FROM records WHERE object = ? ORDER BY id", (obj,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def write_log(self, obj: str | None = None) -> list[dict[str, Any]]:
        """Every create/update this system accepted, in order (what tests count writes with)."""
        q = "SELECT object, id, action, at FROM writes"
        args: tuple = ()
        if obj:
            q, args = q + " WHERE object = ?", (obj,)
        return [
            dict(zip(("object", "id", "action", "at"), r, strict=True))
            for r in self._db.execute(q + " ORDER BY seq", args)
        ]

    def crash_after(self, obj: str, rows: int | None) -> None:
        """Accept `rows` more row writes to `obj`, then fail mid-call (None clears the fault)."""
        if rows is None:
            self._db.execute("DELETE FROM faults WHERE object = ?", (obj,))
        else:
            self._db.execute(
                "INSERT INTO faults (object, crash_after) VALUES (?, ?) "
                "ON CONFLICT(object) DO UPDATE SET crash_after = excluded.crash_after",
                (obj, rows),
            )

    def refuse_transiently(self, obj: str, rows: int) -> None:
        """Refuse the next `rows` row writes to `obj` as locked (UNABLE_TO_LOCK_ROW, retriable)."""
        self._db.execute(
            "INSERT INTO busy (object, remaining) VALUES (?, ?) "
            "ON CONFLICT(object) DO UPDATE SET remaining = excluded.remaining",
            (obj, rows),
        )

    # ---- SystemAdapter ---------------------------------------------------------------------------

    def check_connection(self) -> tuple[bool, str]:
        with self.call_log.timed("check_connection", "-"):
            n = self._db.execute("SELECT count(*) FROM objects").fetchone()[0]
        return True, f"{self.name}: {n} object(s) at {self.path}"

    def describe(self, obj: str) -> ObjectMeta:
        with self.call_log.timed("describe", obj):
            return self._meta(obj)

    def read(
        self,
        obj: str,
        *,
        window: ReadWindow | None = None,
        columns: list[str] | None = None,
        chunk_rows: int = 50_000,
    ) -> Iterator[pd.DataFrame]:
        meta = self._meta(obj)
        self._check_columns(meta, columns)
        q, args = "SELECT data FROM records WHERE object = ?", [obj]
        if window and window.start:
            q, args = q + " AND modified >= ?", [*args, window.start.astimezone(UTC).isoformat()]
        if window and window.end:
            q, args = q + " AND modified < ?", [*args, window.end.astimezone(UTC).isoformat()]
        offset = 0
        while True:
            with self.call_log.timed("read", obj) as entry:
                rows = self._db.execute(
                    q + " ORDER BY modified, id LIMIT ? OFFSET ?", (*args, chunk_rows, offset)
                ).fetchall()
                entry["rows"] = len(rows)
            if not rows:
                return
            yield self._frame(meta, [json.loads(r[0]) for r in rows], columns)
            offset += len(rows)
            if len(rows) < chunk_rows:
                return

    def read_by_keys(
        self,
        obj: str,
        field: str,
        keys: Iterable[Any],
        *,
        columns: list[str] | None = None,
        casefold: bool = False,
    ) -> pd.DataFrame:
        meta = self._meta(obj)
        self._check_columns(meta, [field, *(columns or [])])

        with self.call_log.timed("read_by_keys", obj) as entry:
            found = self._find(meta, field, keys, casefold=casefold)
            entry["rows"] = len(found)
        cols = None if columns is None else list(dict.fromkeys([meta.id_field, field, *columns]))
        return self._frame(meta, found, cols)

    def _find(
        self, meta: ObjectMeta, field: str, keys: Iterable[Any], *, casefold: bool = False
    ) -> list[dict]:
        """Return the records whose `field` equals one of `keys` (as text; trimmed and casefolded)."""

        def norm(v: Any) -> str:
            return " ".join(str(v).split()).casefold() if casefold else str(v)

        wanted = {norm(k) for k in keys if _clean(k) is not None}
        if not wanted:
            return []
        if field == meta.id_field and not casefold:
            ids = sorted(wanted)
        else:
            # Filter inside SQLite on the one extracted value, then load only the matching records.
            path = '$."' + field.replace('"', '\\"') + '"'
            value = (
                "erpsync_norm(json_extract(data, ?))" if casefold else "CAST(json_extract(data, ?) AS TEXT)"
            )
            ids = []
            keys = sorted(wanted)
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                ids += [
                    rid
                    for (rid,) in self._db.execute(
                        f"SELECT id FROM records WHERE object = ? AND {value} IN ({','.join('?' * len(part))})",
                        (meta.name, path, *part),
                    )
                ]
        found = []
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            marks = ",".join("?" * len(part))
            found += [
                json.loads(data)
                for (data,) in self._db.execute(
                    f"SELECT data FROM records WHERE object = ? AND id IN ({marks}) ORDER BY id",
                    (meta.name, *part),
                )
            ]
        return found

    def upsert(self, obj: str, rows: pd.DataFrame, *, identity: str) -> pd.DataFrame:
        meta = self._meta(obj)
        results = []
        with self.call_log.timed("upsert", obj, rows=len(rows)), self._lock:
            values = rows[identity].tolist() if identity in rows.columns else []
            by_identity = {
                str(rec[identity]): rec[meta.id_field]
                for rec in self._find(meta, identity, values)
                if rec.get(identity) not in (None, "")
            }
            for row in rows.to_dict("records"):
                results.append(self._upsert_one(meta, row, identity, by_identity))
        return pd.DataFrame(results, columns=RESULT_COLUMNS)

    # ---- internals -----------------------------------------------------------------------------

    def _upsert_one(self, meta: ObjectMeta, row: dict, identity: str, by_identity: dict) -> dict:
        key = _clean(row.pop("_source_key", None))
        target_id = _clean(row.pop("_target_id", None))
        values = {k: _clean(v) for k, v in row.items() if not k.startswith("_")}
        if target_id is None and values.get(identity) is not None:
            target_id = by_identity.get(str(values[identity]))
        existing = self.get(meta.name, target_id) if target_id else None
        if target_id and existing is None:
            return self._refused(
                key, target_id, "ENTITY_IS_DELETED", f"{meta.name} {target_id} does not exist"
            )
        action = "updated" if existing else "created"
        problem = self._validate(meta, values, creating=existing is None)
        if problem:
            return self._refused(key, target_id, *problem)
        if self._busy(meta.name):
            return {
                **self._refused(key, target_id, "UNABLE_TO_LOCK_ROW", "record locked by another user"),
                "retriable": True,
            }
        self._maybe_crash(meta.name)
        rid = target_id or self._next_id(meta.name)
        record = {**(existing or {}), **values, meta.id_field: rid}
        stamp = self._now().isoformat()
        if meta.modified_field:
            record[meta.modified_field] = stamp
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(
            "INSERT INTO records (object, id, data, modified) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(object, id) DO UPDATE SET data = excluded.data, modified = excluded.modified",
            (meta.name, rid, json.dumps(record), stamp),
        )
        self._db.execute(
            "INSERT INTO writes (object, id, action, at) VALUES (?, ?, ?, ?)", (meta.name, rid, action, stamp)
        )
        self._db.execute("COMMIT")
        if record.get(identity) not in (None, ""):
            by_identity[str(record[identity])] = rid
        return {
            "_source_key": key,
            "target_id": rid,
            "action": action,
            "error": None,
            "error_code": None,
            "retriable": False,
        }

    @staticmethod
    def _refused(key: Any, target_id: Any, code: str, message: str) -> dict:
        return {
            "_source_key": key,
            "target_id": target_id,
            "action": "failed",
            "error": message,
            "error_code": code,
            "retriable": False,
        }

    @staticmethod
    def _validate(meta: ObjectMeta, values: dict, *, creating: bool) -> tuple[str, str] | None:
        for name, value in values.items():
            fm = meta.field(name)
            if fm is None:
                return "INVALID_FIELD", f"{meta.name} has no field {name!r}"
            if not creating and not fm.updateable and name != meta.id_field:
                return "INVALID_FIELD_FOR_INSERT_UPDATE", f"{meta.name}.{name} cannot be updated"
            if creating and not fm.createable:
                return "INVALID_FIELD_FOR_INSERT_UPDATE", f"{meta.name}.{name} cannot be set on create"
            if isinstance(value, float) and not math.isfinite(value):
                return (
                    "NUMBER_OUTSIDE_VALID_RANGE",
                    f"{meta.name}.{name}: {value} is not a number the system can store",
                )
            if fm.length is not None and value is not None and len(str(value)) > fm.length:
                return (
                    "STRING_TOO_LONG",
                    f"{meta.name}.{name}: {len(str(value))} characters, at most {fm.length} allowed",
                )
        if creating:
            missing = [
                f.name for f in meta.fields.values() if f.required and values.get(f.name) in (None, "")
            ]
            if missing:
                return "REQUIRED_FIELD_MISSING", f"{meta.name} requires {', '.join(missing)}"
        return None

    def _busy(self, obj: str) -> bool:
        row = self._db.execute("SELECT remaining FROM busy WHERE object = ?", (obj,)).fetchone()
        if not row or row[0] <= 0:
            return False
        self._db.execute("UPDATE busy SET remaining = remaining - 1 WHERE object = ?", (obj,))
        return True

    def _maybe_crash(self, obj: str) -> None:
        row = self._db.execute("SELECT crash_after FROM faults WHERE object = ?", (obj,)).fetchone()
        if row is None:
            return
        if row[0] <= 0:
            self._db.execute("DELETE FROM faults WHERE object = ?", (obj,))
            raise RetriableSourceError(
                f"connection to {self.name} dropped while writing {obj} (injected fault)", where=self.path
            )
        self._db.execute("UPDATE faults SET crash_after = crash_after - 1 WHERE object = ?", (obj,))

    def _meta(self, obj: str) -> ObjectMeta:
        row = self._db.execute("SELECT meta FROM objects WHERE name = ?", (obj,)).fetchone()
        if row is None:
            raise ConfigError(f"{self.name} has no object {obj!r}", where=self.path)
        stored = json.loads(row[0])
        fields = {f["name"]: FieldMeta(**f) for f in stored["fields"]}
        return ObjectMeta(obj, fields, id_field=stored["id_field"], modified_field=stored["modified_field"])

    def _check_columns(self, meta: ObjectMeta, columns: list[str] | None) -> None:
        known = set(meta.fields) | {meta.id_field} | ({meta.modified_field} if meta.modified_field else set())
        unknown = [c for c in columns or [] if c not in known]
        if unknown:
            raise ConfigError(
                f"{meta.name} has no field(s) {', '.join(unknown)}", where=f"{self.name}.{meta.name}"
            )

    def _next_id(self, obj: str) -> str:
        prefix = json.loads(
            self._db.execute("SELECT meta FROM objects WHERE name = ?", (obj,)).fetchone()[0]
        )["id_prefix"]
        n = self._db.execute(
            "UPDATE objects SET next_id = next_id + 1 WHERE name = ? RETURNING next_id - 1", (obj,)
        ).fetchone()[0]
        return f"{prefix}{n:06d}"

    def _now(self) -> datetime:
        row = self._db.execute("SELECT now FROM clock WHERE id = 1").fetchone()
        if row is None:
            return datetime.now(UTC)
        # Advance the fixed clock a microsecond per write so stamps stay unique and ordered.
        now = datetime.fromisoformat(row[0]) + timedelta(microseconds=1)
        self.set_clock(now)
        return now

    @staticmethod
    def _frame(meta: ObjectMeta, records: list[dict], columns: list[str] | None) -> pd.DataFrame:
        if columns is None:
            columns = list(dict.fromkeys([meta.id_field, *meta.fields, *(r for rec in records for r in rec)]))
        return pd.DataFrame([{c: rec.get(c) for c in columns} for rec in records], columns=columns)
