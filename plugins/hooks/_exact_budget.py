"""One budget for Exact Online's API limits, shared by every Exact task: a call ledger per app and division.

Exact allows 60 calls a minute and 5,000 a day per app and division (reference/exact-online.md §4),
whatever the number of flows and tasks calling. Each hook reserves a call here before sending it: one
transaction that locks the key, rolls the fixed windows (epoch-aligned minutes and UTC days, as Exact
counts them), refuses when the minute or the day is spent and counts the call otherwise. So two
tasks calling at the same moment, in one process or many, never pass the limit together. After each
answer the hook raises the counts to what Exact's `X-RateLimit-*` headers say was used (calls made
elsewhere with the same app count too) and keeps the limits Exact announces.

Two stores, one interface (`open_budget`):

* `SqliteBudget` (default; connection extra `budget_path`): a SQLite file for the tasks of one host.
* `SqlBudget` (extra `budget_url`, PostgreSQL): one table for workers on several hosts; the key's
  row is locked with `SELECT ... FOR UPDATE`.

sqlite3 and SQLAlchemy load on first use, never at DAG parse time.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from erpsync.errors import ConfigError

__all__ = ["Reservation", "SqlBudget", "SqliteBudget", "Windows", "default_budget_path", "open_budget"]

#: Exact's published limits, used until its headers say otherwise.
MINUTELY, DAILY = 60, 5000


def default_budget_path() -> str:
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return str(Path(home) / "erpsync" / "exact-budget.sqlite")


def open_budget(*, path: str, url: str | None) -> SqliteBudget | SqlBudget:
    """Return the ledger the connection asks for: a database URL when given, else the SQLite file."""
    return SqlBudget(url) if url else SqliteBudget(path)


@dataclass(frozen=True)
class Windows:
    """Window lengths (Exact: a minute and a UTC day; tests shorten them) and the reserve kept back."""

    minute: float = 60.0
    day: float = 86_400.0
    minutely_margin: int = 0
    daily_reserve: int = 0


@dataclass(frozen=True)
class Reservation:
    """The outcome of `reserve`: granted, or which limit is spent and when its window resets (epoch s)."""

    granted: bool
    limit: str | None = None
    reset_at: float | None = None
    day_used: int = 0
    day_limit: int = DAILY
    minute_limit: int = MINUTELY


_COLUMNS = "minute_start, minute_used, day_start, day_used, minute_limit, day_limit"


def _decide(row: tuple | None, now: float, w: Windows) -> tuple[tuple, Reservation]:
    """Roll the windows of `row`, then grant (count) or refuse one call; return the new row and verdict."""
    m_start, d_start = now - now % w.minute, now - now % w.day
    if row is None:
        row = (m_start, 0, d_start, 0, MINUTELY, DAILY)
    old_m, m_used, old_d, d_used, m_limit, d_limit = row
    m_used = m_used if old_m == m_start else 0
    d_used = d_used if old_d == d_start else 0
    figures = {"day_limit": d_limit, "minute_limit": m_limit}
    if d_used >= d_limit - w.daily_reserve:
        verdict = Reservation(False, "daily", d_start + w.day, d_used, **figures)
    elif m_used >= max(m_limit - w.minutely_margin, 1):
        verdict = Reservation(False, "minutely", m_start + w.minute, d_used, **figures)
    else:
        m_used, d_used = m_used + 1, d_used + 1
        verdict = Reservation(True, None, None, d_used, **figures)
    return (m_start, m_used, d_start, d_used, m_limit, d_limit), verdict


def _observed(row: tuple | None, now: float, w: Windows, headers: dict[str, int]) -> tuple:
    """Raise the counts of the current windows to what Exact's headers say was used; keep its limits."""
    m_start, d_start = now - now % w.minute, now - now % w.day
    if row is None:
        row = (m_start, 0, d_start, 0, MINUTELY, DAILY)
    old_m, m_used, old_d, d_used, m_limit, d_limit = row
    m_used = m_used if old_m == m_start else 0
    d_used = d_used if old_d == d_start else 0
    # Counts only for the window the answer speaks of (its reset is this window's end): an answer
    # that arrives just after a window rolled must not fill the new one with the old one's calls.
    if "minutely_limit" in headers:
        m_limit = headers["minutely_limit"]
        if "minutely_remaining" in headers and _same_end(
            headers.get("minutely_reset"), m_start + w.minute, w.minute
        ):
            m_used = max(m_used, m_limit - headers["minutely_remaining"])
    if "daily_limit" in headers:
        d_limit = headers["daily_limit"]
        if "daily_remaining" in headers and _same_end(headers.get("daily_reset"), d_start + w.day, w.day):
            d_used = max(d_used, d_limit - headers["daily_remaining"])
    return (m_start, m_used, d_start, d_used, m_limit, d_limit)


class SqliteBudget:
    """The ledger in a SQLite file shared by the tasks on one host (WAL; BEGIN IMMEDIATE per reservation)."""

    def __init__(self, path: str):
        import sqlite3

        self.path = path
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS exact_budget (budget_key TEXT PRIMARY KEY, minute_start REAL, "
                "minute_used INTEGER, day_start REAL, day_used INTEGER, minute_limit INTEGER, day_limit INTEGER)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"cannot open the Exact call budget {path}: {exc}; set the connection extra 'budget_path' "
                "to a writable file (or 'budget_url' to a shared database)",
                where="budget_path",
            ) from exc
        self._lock = threading.Lock()

    def _change(self, key: str, update) -> tuple:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # the file's write lock: one change at a time
            try:
                row = self._db.execute(
                    f"SELECT {_COLUMNS} FROM exact_budget WHERE budget_key = ?", (key,)
                ).fetchone()
                new, result = update(row)
                self._db.execute(
                    f"INSERT OR REPLACE INTO exact_budget (budget_key, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, *new),
                )
                self._db.execute("COMMIT")
                return result
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def reserve(self, key: str, now: float, windows: Windows) -> Reservation:
        """Count one call if the minute and the day have room; else say which is spent and until when."""
        return self._change(key, lambda row: _decide(row, now, windows))

    def observe(self, key: str, now: float, windows: Windows, headers: dict[str, int]) -> None:
        self._change(key, lambda row: (_observed(row, now, windows, headers), None))

    def used(self, key: str, now: float, windows: Windows) -> dict[str, int]:
        """The current windows' counts and the limits (for run reports)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM exact_budget WHERE budget_key = ?", (key,)
            ).fetchone()
        return _figures(_observed(row, now, windows, {}))

    def close(self) -> None:
        self._db.close()


class SqlBudget:
    """The ledger in a PostgreSQL table shared by workers on several hosts (row lock per key)."""

    def __init__(self, url: str):
        import sqlalchemy as sa

        self.url = url
        try:
            self._engine = sa.create_engine(url, pool_pre_ping=True)
            with self._engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "CREATE TABLE IF NOT EXISTS erpsync_exact_budget (budget_key TEXT PRIMARY KEY, "
                        "minute_start DOUBLE PRECISION, minute_used INTEGER, day_start DOUBLE PRECISION, "
                        "day_used INTEGER, minute_limit INTEGER, day_limit INTEGER)"
                    )
                )
        except Exception as exc:  # bad URL, driver missing, database down: the connection must be fixed
            raise ConfigError(
                f"cannot open the Exact call budget database: {type(exc).__name__}: {exc}",
                where="budget_url",
            ) from exc

    def _change(self, key: str, update):
        import sqlalchemy as sa

        with self._engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO erpsync_exact_budget (budget_key) VALUES (:k) ON CONFLICT (budget_key) DO NOTHING"
                ),
                {"k": key},
            )
            row = conn.execute(
                sa.text(f"SELECT {_COLUMNS} FROM erpsync_exact_budget WHERE budget_key = :k FOR UPDATE"),
                {"k": key},
            ).fetchone()
            row = None if row is None or row[0] is None else tuple(row)
            new, result = update(row)
            conn.execute(
                sa.text(
                    "UPDATE erpsync_exact_budget SET minute_start = :a, minute_used = :b, day_start = :c, "
                    "day_used = :d, minute_limit = :e, day_limit = :f WHERE budget_key = :k"
                ),
                dict(zip("abcdef", new, strict=True), k=key),
            )
            return result

    def reserve(self, key: str, now: float, windows: Windows) -> Reservation:
        return self._change(key, lambda row: _decide(row, now, windows))

    def observe(self, key: str, now: float, windows: Windows, headers: dict[str, int]) -> None:
        self._change(key, lambda row: (_observed(row, now, windows, headers), None))

    def used(self, key: str, now: float, windows: Windows) -> dict[str, int]:
        import sqlalchemy as sa

        with self._engine.connect() as conn:
            row = conn.execute(
                sa.text(f"SELECT {_COLUMNS} FROM erpsync_exact_budget WHERE budget_key = :k"), {"k": key}
            ).fetchone()
        row = None if row is None or row[0] is None else tuple(row)
        return _figures(_observed(row, now, windows, {}))

    def close(self) -> None:
        self._engine.dispose()


def _same_end(reset: float | None, end: float, length: float) -> bool:
    return reset is not None and abs(reset - end) < min(1.0, length / 4)


def _figures(row: tuple) -> dict[str, int]:
    _, m_used, _, d_used, m_limit, d_limit = row
    return {"minute_used": m_used, "minute_limit": m_limit, "day_used": d_used, "day_limit": d_limit}
