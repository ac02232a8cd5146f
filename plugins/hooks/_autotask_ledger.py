"""The Autotask hook's call ledger: what the tasks of this package share about the tenant's budget.

Two stores, one interface (`AutotaskHook.ledger` picks one from the connection):

* `SqliteLedger` (default, extra ``ledger_path``): a SQLite file shared by the tasks on one host.
* `SqlLedger` (extra ``ledger_url``): a PostgreSQL database shared by the tasks on every host, for
  workers spread over several machines (Celery, Kubernetes) that draw on one tenant.

Both hold the calls per minute of each budget key (the rolling hour), a total per key that only grows
(the package's calls since a threshold reading), the last ``ThresholdInformation`` reading, the zones
and cached ``entityInformation`` answers. A call is *reserved* before it is sent (`reserve`): one
transaction that locks the key, checks the rolling hour against the cap and counts the call, so tasks
calling at the same moment, on one host or many, neither lose a count nor pass the share together.

Losing a ledger costs little (the tenant's ``ThresholdInformation`` still guards the threshold), so the
SQLite file runs without fsync. sqlite3 and SQLAlchemy load on first use, never at DAG parse time.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from erpsync.errors import ConfigError

__all__ = ["SqlLedger", "SqliteLedger", "default_ledger_path", "open_ledger"]

#: Rolling hour in minutes; minutes older than twice that are deleted now and then.
_HOUR = 60


def default_ledger_path() -> str:
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return str(Path(home) / "erpsync" / "autotask-ledger.sqlite")


def open_ledger(*, path: str, url: str | None) -> SqliteLedger | SqlLedger:
    """Return the ledger the connection asks for: a database URL when given, else the SQLite file."""
    return SqlLedger(url) if url else SqliteLedger(path)


class SqliteLedger:
    """A small SQLite file shared by every task on a host (WAL, one writer at a time)."""

    def __init__(self, path: str):
        import sqlite3

        self.path = path
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS calls (budget_key TEXT NOT NULL, minute INTEGER NOT NULL, "
                "n INTEGER NOT NULL, PRIMARY KEY (budget_key, minute))"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS zones (cache_key TEXT PRIMARY KEY, root TEXT NOT NULL, "
                "zone_name TEXT, found_at REAL NOT NULL)"
            )
            # Every call ever recorded per budget key: "our calls since the tenant's count was read".
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS totals (budget_key TEXT PRIMARY KEY, n INTEGER NOT NULL)"
            )
            # The last ThresholdInformation reading, shared by the tasks for a short time.
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS thresholds (budget_key TEXT PRIMARY KEY, threshold INTEGER NOT NULL, "
                "tenant_count INTEGER NOT NULL, read_at REAL NOT NULL, total_at_read INTEGER NOT NULL)"
            )
            # entityInformation answers and lookup tables, JSON, with when read.
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS metadata (cache_key TEXT PRIMARY KEY, body TEXT NOT NULL, "
                "read_at REAL NOT NULL)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"cannot open the Autotask call ledger {path}: {exc}; set the connection extra 'ledger_path' "
                "to a writable file (or 'ledger_url' to a shared database)",
                where="ledger_path",
            ) from exc
        self._lock = threading.Lock()

    def _count(self, key: str, minute: int, n: int) -> None:
        self._db.execute(
            "INSERT INTO calls (budget_key, minute, n) VALUES (?, ?, ?) "
            "ON CONFLICT (budget_key, minute) DO UPDATE SET n = n + excluded.n",
            (key, minute, n),
        )
        self._db.execute(
            "INSERT INTO totals (budget_key, n) VALUES (?, ?) "
            "ON CONFLICT (budget_key) DO UPDATE SET n = n + excluded.n",
            (key, n),
        )
        if minute % 10 == 0:
            self._db.execute("DELETE FROM calls WHERE minute < ?", (minute - 2 * _HOUR,))

    def record(self, key: str, now: float, n: int = 1) -> None:
        """Count `n` calls already sent (a call nobody reserved, e.g. the UI's Test button)."""
        with self._lock:
            self._count(key, int(now // 60), n)

    def reserve(self, key: str, now: float, cap: int) -> int | None:
        """Count one call if the rolling hour has room under `cap`; return the hour's calls with it, else None."""
        minute = int(now // 60)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # the file's write lock: one reservation at a time
            try:
                used = self._db.execute(
                    "SELECT COALESCE(SUM(n), 0) FROM calls WHERE budget_key = ? AND minute > ?",
                    (key, minute - _HOUR),
                ).fetchone()[0]
                if used + 1 > cap:
                    self._db.execute("COMMIT")
                    return None
                self._count(key, minute, 1)
                self._db.execute("COMMIT")
                return int(used) + 1
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def window(self, key: str, now: float) -> list[tuple[int, int]]:
        """Return `(minute, calls)` of the rolling hour, oldest first."""
        minute = int(now // 60)
        with self._lock:
            rows = self._db.execute(
                "SELECT minute, n FROM calls WHERE budget_key = ? AND minute > ? ORDER BY minute",
                (key, minute - _HOUR),
            ).fetchall()
        return [(int(m), int(n)) for m, n in rows]

    def total(self, key: str) -> int:
        """Return every call recorded for `key` so far (a counter that only grows)."""
        with self._lock:
            row = self._db.execute("SELECT n FROM totals WHERE budget_key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def zone(self, cache_key: str) -> tuple[str, str | None, float] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT root, zone_name, found_at FROM zones WHERE cache_key = ?", (cache_key,)
            ).fetchone()
        return (row[0], row[1], float(row[2])) if row else None

    def save_zone(self, cache_key: str, root: str, zone_name: str | None, now: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO zones (cache_key, root, zone_name, found_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (cache_key) DO UPDATE SET root = excluded.root, zone_name = excluded.zone_name, "
                "found_at = excluded.found_at",
                (cache_key, root, zone_name, now),
            )

    def forget_zone(self, cache_key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM zones WHERE cache_key = ?", (cache_key,))

    def threshold(self, key: str) -> tuple[int, int, float, int] | None:
        """Return the shared `(threshold, tenant_count, read_at, total_at_read)` reading, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT threshold, tenant_count, read_at, total_at_read FROM thresholds WHERE budget_key = ?",
                (key,),
            ).fetchone()
        return (int(row[0]), int(row[1]), float(row[2]), int(row[3])) if row else None

    def save_threshold(self, key: str, threshold: int, tenant_count: int, read_at: float, total: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO thresholds (budget_key, threshold, tenant_count, read_at, total_at_read) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (budget_key) DO UPDATE SET threshold = excluded.threshold, "
                "tenant_count = excluded.tenant_count, read_at = excluded.read_at, "
                "total_at_read = excluded.total_at_read",
                (key, threshold, tenant_count, read_at, total),
            )

    def forget_threshold(self, key: str) -> None:
        """Make the shared reading stale for everybody; its threshold value stays known (`last_threshold`)."""
        with self._lock:
            self._db.execute("UPDATE thresholds SET read_at = 0 WHERE budget_key = ?", (key,))

    def last_threshold(self, key: str) -> int | None:
        """Return the tenant's threshold as last read on this ledger (fresh or not), if ever."""
        row = self.threshold(key)
        return row[0] if row else None

    def metadata(self, cache_key: str) -> tuple[Any, float] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body, read_at FROM metadata WHERE cache_key = ?", (cache_key,)
            ).fetchone()
        return _decoded(row)

    def save_metadata(self, cache_key: str, body: Any, now: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO metadata (cache_key, body, read_at) VALUES (?, ?, ?) ON CONFLICT (cache_key) "
                "DO UPDATE SET body = excluded.body, read_at = excluded.read_at",
                (cache_key, json.dumps(body), now),
            )

    def forget_metadata(self, prefix: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM metadata WHERE substr(cache_key, 1, ?) = ?", (len(prefix), prefix))

    def save_many(self, items: dict[str, Any], now: float) -> None:
        """Save several cache entries (`save_metadata`) in one transaction."""
        if not items:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO metadata (cache_key, body, read_at) VALUES (?, ?, ?) ON CONFLICT (cache_key) "
                    "DO UPDATE SET body = excluded.body, read_at = excluded.read_at",
                    [(k, json.dumps(v), now) for k, v in items.items()],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def load_many(self, keys: list[str]) -> dict[str, tuple[Any, float]]:
        """Return the cache entries of `keys` that exist, as (body, read_at)."""
        out: dict[str, tuple[Any, float]] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            with self._lock:
                rows = self._db.execute(
                    f"SELECT cache_key, body, read_at FROM metadata WHERE cache_key IN ({','.join('?' * len(part))})",
                    part,
                ).fetchall()
            for key, body, read_at in rows:
                hit = _decoded((body, read_at))
                if hit is not None:
                    out[key] = hit
        return out

    def close(self) -> None:
        self._db.close()


def _decoded(row: Any) -> tuple[Any, float] | None:
    if not row:
        return None
    try:
        return json.loads(row[0]), float(row[1])
    except ValueError:
        return None


#: Table names of the shared database ledger (prefixed: it may share a database with other things).
_T = {
    name: f"erpsync_autotask_ledger_{name}" for name in ("calls", "totals", "thresholds", "zones", "metadata")
}


class SqlLedger:
    """The ledger in a PostgreSQL database (``ledger_url``), shared by the tasks on every host.

    Counting is an upsert (``ON CONFLICT DO UPDATE SET n = n + ...``), so simultaneous increments are
    never lost; `reserve` locks the budget key's total row (``SELECT ... FOR UPDATE``) so the check of
    the rolling hour and the count are one step for everybody. The tables are created when missing.
    """

    def __init__(self, url: str):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, SQLAlchemyError

        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConfigError(f"ledger_url {url!r} is not a database URL: {exc}", where="ledger_url") from exc
        if parsed.get_backend_name() != "postgresql":
            raise ConfigError(
                f"ledger_url must be a PostgreSQL URL (postgresql+psycopg://user@host/db), not "
                f"{parsed.get_backend_name()!r}; for the tasks of one host use 'ledger_path' (a SQLite file)",
                where="ledger_url",
            )
        self.url = parsed.render_as_string(hide_password=True)
        try:
            self._engine = create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=2)
            self._create_tables()
        except SQLAlchemyError as exc:
            raise ConfigError(
                f"cannot open the Autotask call ledger at {self.url}: {exc}", where="ledger_url"
            ) from exc

    def _create_tables(self) -> None:
        from sqlalchemy import text

        statements = [
            f"CREATE TABLE IF NOT EXISTS {_T['calls']} (budget_key TEXT NOT NULL, minute BIGINT NOT NULL, "
            "n BIGINT NOT NULL, PRIMARY KEY (budget_key, minute))",
            f"CREATE TABLE IF NOT EXISTS {_T['totals']} (budget_key TEXT PRIMARY KEY, n BIGINT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {_T['thresholds']} (budget_key TEXT PRIMARY KEY, "
            "threshold BIGINT NOT NULL, tenant_count BIGINT NOT NULL, read_at DOUBLE PRECISION NOT NULL, "
            "total_at_read BIGINT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {_T['zones']} (cache_key TEXT PRIMARY KEY, root TEXT NOT NULL, "
            "zone_name TEXT, found_at DOUBLE PRECISION NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {_T['metadata']} (cache_key TEXT PRIMARY KEY, body TEXT NOT NULL, "
            "read_at DOUBLE PRECISION NOT NULL)",
        ]
        with self._engine.begin() as conn:
            # Two tasks starting at once must not race on CREATE TABLE (PostgreSQL's catalog is not
            # protected by IF NOT EXISTS): a transaction-wide advisory lock serialises the creation.
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('erpsync_autotask_ledger'))"))
            for statement in statements:
                conn.execute(text(statement))

    def _run(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import text

        with self._engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return list(result.fetchall()) if result.returns_rows else []

    @staticmethod
    def _count(conn: Any, key: str, minute: int, n: int) -> None:
        from sqlalchemy import text

        # The key's total row first, always: it is the lock every writer of the key takes first
        # (`reserve` too), so two writers never hold each other's rows (deadlock).
        conn.execute(
            text(
                f"INSERT INTO {_T['totals']} AS t (budget_key, n) VALUES (:k, :n) "
                "ON CONFLICT (budget_key) DO UPDATE SET n = t.n + excluded.n"
            ),
            {"k": key, "n": n},
        )
        conn.execute(
            text(
                f"INSERT INTO {_T['calls']} AS c (budget_key, minute, n) VALUES (:k, :m, :n) "
                "ON CONFLICT (budget_key, minute) DO UPDATE SET n = c.n + excluded.n"
            ),
            {"k": key, "m": minute, "n": n},
        )
        if minute % 10 == 0:
            conn.execute(
                text(f"DELETE FROM {_T['calls']} WHERE budget_key = :k AND minute < :m"),
                {"k": key, "m": minute - 2 * _HOUR},
            )

    def record(self, key: str, now: float, n: int = 1) -> None:
        """Count `n` calls already sent (a call nobody reserved, e.g. the UI's Test button)."""
        with self._engine.begin() as conn:
            self._count(conn, key, int(now // 60), n)

    def reserve(self, key: str, now: float, cap: int) -> int | None:
        """Count one call if the rolling hour has room under `cap`; return the hour's calls with it, else None."""
        from sqlalchemy import text

        minute = int(now // 60)
        with self._engine.begin() as conn:
            conn.execute(
                text(f"INSERT INTO {_T['totals']} (budget_key, n) VALUES (:k, 0) ON CONFLICT DO NOTHING"),
                {"k": key},
            )
            # Everybody reserving for this key queues here until the one before has committed.
            conn.execute(text(f"SELECT n FROM {_T['totals']} WHERE budget_key = :k FOR UPDATE"), {"k": key})
            used = conn.execute(
                text(f"SELECT COALESCE(SUM(n), 0) FROM {_T['calls']} WHERE budget_key = :k AND minute > :m"),
                {"k": key, "m": minute - _HOUR},
            ).scalar_one()
            if used + 1 > cap:
                return None
            self._count(conn, key, minute, 1)
            return int(used) + 1

    def window(self, key: str, now: float) -> list[tuple[int, int]]:
        rows = self._run(
            f"SELECT minute, n FROM {_T['calls']} WHERE budget_key = :k AND minute > :m ORDER BY minute",
            k=key,
            m=int(now // 60) - _HOUR,
        )
        return [(int(m), int(n)) for m, n in rows]

    def total(self, key: str) -> int:
        rows = self._run(f"SELECT n FROM {_T['totals']} WHERE budget_key = :k", k=key)
        return int(rows[0][0]) if rows else 0

    def zone(self, cache_key: str) -> tuple[str, str | None, float] | None:
        rows = self._run(
            f"SELECT root, zone_name, found_at FROM {_T['zones']} WHERE cache_key = :k", k=cache_key
        )
        return (rows[0][0], rows[0][1], float(rows[0][2])) if rows else None

    def save_zone(self, cache_key: str, root: str, zone_name: str | None, now: float) -> None:
        self._run(
            f"INSERT INTO {_T['zones']} (cache_key, root, zone_name, found_at) VALUES (:k, :r, :z, :t) "
            "ON CONFLICT (cache_key) DO UPDATE SET root = excluded.root, zone_name = excluded.zone_name, "
            "found_at = excluded.found_at",
            k=cache_key,
            r=root,
            z=zone_name,
            t=now,
        )

    def forget_zone(self, cache_key: str) -> None:
        self._run(f"DELETE FROM {_T['zones']} WHERE cache_key = :k", k=cache_key)

    def threshold(self, key: str) -> tuple[int, int, float, int] | None:
        rows = self._run(
            f"SELECT threshold, tenant_count, read_at, total_at_read FROM {_T['thresholds']} "
            "WHERE budget_key = :k",
            k=key,
        )
        if not rows:
            return None
        r = rows[0]
        return int(r[0]), int(r[1]), float(r[2]), int(r[3])

    def save_threshold(self, key: str, threshold: int, tenant_count: int, read_at: float, total: int) -> None:
        self._run(
            f"INSERT INTO {_T['thresholds']} (budget_key, threshold, tenant_count, read_at, total_at_read) "
            "VALUES (:k, :th, :c, :r, :t) ON CONFLICT (budget_key) DO UPDATE SET threshold = excluded.threshold, "
            "tenant_count = excluded.tenant_count, read_at = excluded.read_at, "
            "total_at_read = excluded.total_at_read",
            k=key,
            th=threshold,
            c=tenant_count,
            r=read_at,
            t=total,
        )

    def forget_threshold(self, key: str) -> None:
        self._run(f"UPDATE {_T['thresholds']} SET read_at = 0 WHERE budget_key = :k", k=key)

    def last_threshold(self, key: str) -> int | None:
        row = self.threshold(key)
        return row[0] if row else None

    def metadata(self, cache_key: str) -> tuple[Any, float] | None:
        rows = self._run(f"SELECT body, read_at FROM {_T['metadata']} WHERE cache_key = :k", k=cache_key)
        return _decoded(rows[0] if rows else None)

    def save_metadata(self, cache_key: str, body: Any, now: float) -> None:
        self._run(
            f"INSERT INTO {_T['metadata']} (cache_key, body, read_at) VALUES (:k, :b, :r) "
            "ON CONFLICT (cache_key) DO UPDATE SET body = excluded.body, read_at = excluded.read_at",
            k=cache_key,
            b=json.dumps(body),
            r=now,
        )

    def forget_metadata(self, prefix: str) -> None:
        self._run(
            f"DELETE FROM {_T['metadata']} WHERE substr(cache_key, 1, :n) = :p", n=len(prefix), p=prefix
        )

    def save_many(self, items: dict[str, Any], now: float) -> None:
        """Save several cache entries (`save_metadata`) in one transaction."""
        from sqlalchemy import text

        if not items:
            return
        with self._engine.begin() as conn:
            conn.execute(
                text(
                    f"INSERT INTO {_T['metadata']} (cache_key, body, read_at) VALUES (:k, :b, :r) "
                    "ON CONFLICT (cache_key) DO UPDATE SET body = excluded.body, read_at = excluded.read_at"
                ),
                [{"k": k, "b": json.dumps(v), "r": now} for k, v in sorted(items.items())],
            )

    def load_many(self, keys: list[str]) -> dict[str, tuple[Any, float]]:
        """Return the cache entries of `keys` that exist, as (body, read_at)."""
        from sqlalchemy import bindparam, text

        out: dict[str, tuple[Any, float]] = {}
        query = text(
            f"SELECT cache_key, body, read_at FROM {_T['metadata']} WHERE cache_key IN :keys"
        ).bindparams(bindparam("keys", expanding=True))
        for start in range(0, len(keys), 500):
            with self._engine.begin() as conn:
                rows = conn.execute(query, {"keys": keys[start : start + 500]}).fetchall()
            for key, body, read_at in rows:
                hit = _decoded((body, read_at))
                if hit is not None:
                    out[key] = hit
        return out

    def close(self) -> None:
        self._engine.dispose()
