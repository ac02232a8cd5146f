"""Persistence of the simulated company file: one SQLite database (in memory when no path).

Records are kept as the JSON of their ``*Ret`` dict, so a query renders them without a mapping
layer. Each `process()` call runs in one transaction, which also gives rollbackOnError for free.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,          -- Customer, ItemService, ..., Account, Invoice, ...
    family TEXT NOT NULL,        -- name space: entity, item, account, paymentmethod, ..., or txn
    seq INTEGER NOT NULL,
    name_key TEXT,               -- lower-cased FullName for list objects (unique per family)
    data TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS objects_name ON objects(family, name_key) WHERE name_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS objects_kind ON objects(kind, seq);
CREATE TABLE IF NOT EXISTS data_ext_defs (
    owner_id TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (owner_id, name)
);
CREATE TABLE IF NOT EXISTS data_ext (
    owner_id TEXT NOT NULL, name TEXT NOT NULL, object_id TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (owner_id, name, object_id)
);
-- every Ret of a record carries its DataExts: look them up by the record, not by a scan
CREATE INDEX IF NOT EXISTS data_ext_object ON data_ext(object_id, owner_id);
CREATE TABLE IF NOT EXISTS deleted (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS message_sets (
    id TEXT PRIMARY KEY, checksum TEXT NOT NULL, response TEXT NOT NULL, seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Store:
    """A thread-safe SQLite store; `transaction()` wraps one qbXML message set."""

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL" if path else "PRAGMA journal_mode=MEMORY")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.lock = threading.RLock()
        self._depth = 0

    def close(self) -> None:
        with self.lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block atomically (nested calls join the outer transaction)."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    @contextmanager
    def savepoint(self, name: str = "rq") -> Iterator[None]:
        """Undo one request's partial writes when it fails (inside a transaction)."""
        self._db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self._db.execute(f"ROLLBACK TO {name}")
            self._db.execute(f"RELEASE {name}")
            raise
        self._db.execute(f"RELEASE {name}")

    # -- counters ---------------------------------------------------------------------------------
    def next_counter(self, key: str, start: int) -> int:
        with self.lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            value = int(row[0]) + 1 if row else start
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))
            return value

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- objects ------------------------------------------------------------------------------------
    def put(self, obj_id: str, kind: str, family: str, name_key: str | None, data: dict[str, Any]) -> None:
        row = self._db.execute("SELECT seq FROM objects WHERE id = ?", (obj_id,)).fetchone()
        seq = row[0] if row else self.next_counter("seq", 1)
        self._db.execute(
            "INSERT OR REPLACE INTO objects (id, kind, family, seq, name_key, data) VALUES (?, ?, ?, ?, ?, ?)",
            (obj_id, kind, family, seq, name_key, json.dumps(data)),
        )

    def get(self, obj_id: str) -> tuple[str, dict[str, Any]] | None:
        row = self._db.execute("SELECT kind, data FROM objects WHERE id = ?", (obj_id,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def by_name(self, family: str, full_name: str) -> tuple[str, dict[str, Any]] | None:
        row = self._db.execute(
            "SELECT kind, data FROM objects WHERE family = ? AND name_key = ?", (family, full_name.lower())
        ).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def all(self, kinds: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
        marks = ",".join("?" * len(kinds))
        rows = self._db.execute(f"SELECT kind, data FROM objects WHERE kind IN ({marks}) ORDER BY seq", kinds)
        return [(kind, json.loads(data)) for kind, data in rows]

    def count(self, kinds: tuple[str, ...]) -> int:
        marks = ",".join("?" * len(kinds))
        return self._db.execute(f"SELECT COUNT(*) FROM objects WHERE kind IN ({marks})", kinds).fetchone()[0]

    def delete(self, obj_id: str, kind: str, tombstone: dict[str, Any]) -> None:
        self._db.execute("DELETE FROM objects WHERE id = ?", (obj_id,))
        self._db.execute("DELETE FROM data_ext WHERE object_id = ?", (obj_id,))
        self._db.execute(
            "INSERT OR REPLACE INTO deleted (id, kind, data) VALUES (?, ?, ?)",
            (obj_id, kind, json.dumps(tombstone)),
        )

    def deleted(self, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(kinds))
        rows = self._db.execute(f"SELECT data FROM deleted WHERE kind IN ({marks}) ORDER BY rowid", kinds)
        return [json.loads(r[0]) for r in rows]

    # -- DataExt ----------------------------------------------------------------------------------
    def put_def(self, owner_id: str, name: str, data: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO data_ext_defs (owner_id, name, data) VALUES (?, ?, ?)",
            (owner_id, name, json.dumps(data)),
        )

    def get_def(self, owner_id: str, name: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT data FROM data_ext_defs WHERE owner_id = ? AND name = ?", (owner_id, name)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def defs(self, owner_id: str | None) -> list[dict[str, Any]]:
        if owner_id is None:
            rows = self._db.execute("SELECT data FROM data_ext_defs ORDER BY rowid")
        else:
            rows = self._db.execute(
                "SELECT data FROM data_ext_defs WHERE owner_id = ? ORDER BY rowid", (owner_id,)
            )
        return [json.loads(r[0]) for r in rows]

    def set_ext(self, owner_id: str, name: str, object_id: str, value: str | None) -> None:
        if value is None:
            self._db.execute(
                "DELETE FROM data_ext WHERE owner_id = ? AND name = ? AND object_id = ?",
                (owner_id, name, object_id),
            )
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO data_ext (owner_id, name, object_id, value) VALUES (?, ?, ?, ?)",
                (owner_id, name, object_id, value),
            )

    def get_ext(self, owner_id: str, name: str, object_id: str) -> str | None:
        row = self._db.execute(
            "SELECT value FROM data_ext WHERE owner_id = ? AND name = ? AND object_id = ?",
            (owner_id, name, object_id),
        ).fetchone()
        return row[0] if row else None

    def exts_for(self, object_id: str, owner_ids: list[str]) -> list[tuple[str, str, str]]:
        marks = ",".join("?" * len(owner_ids))
        rows = self._db.execute(
            f"SELECT owner_id, name, value FROM data_ext WHERE object_id = ? AND owner_id IN ({marks}) ORDER BY rowid",
            (object_id, *owner_ids),
        )
        return list(rows)

    # -- message sets (error recovery) ------------------------------------------------------------
    def put_message_set(self, set_id: str, checksum: str, response: str, keep: int) -> None:
        seq = self.next_counter("message_set_seq", 1)
        self._db.execute(
            "INSERT OR REPLACE INTO message_sets (id, checksum, response, seq) VALUES (?, ?, ?, ?)",
            (set_id, checksum, response, seq),
        )
        self._db.execute("DELETE FROM message_sets WHERE seq <= ?", (seq - keep,))

    def get_message_set(self, set_id: str) -> tuple[str, str] | None:
        row = self._db.execute(
            "SELECT checksum, response FROM message_sets WHERE id = ?", (set_id,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def clear_message_set(self, set_id: str | None) -> None:
        if set_id is None:
            self._db.execute("DELETE FROM message_sets")
        else:
            self._db.execute("DELETE FROM message_sets WHERE id = ?", (set_id,))

    def reset(self) -> None:
        with self.transaction():
            for table in ("objects", "data_ext_defs", "data_ext", "deleted", "message_sets", "meta"):
                self._db.execute(f"DELETE FROM {table}")
