"""One engine per database URL, sessions, and `migrate()` (Alembic is the only schema path).

SQLite runs in WAL mode with a busy timeout so concurrent SOAP and API requests (uvicorn runs sync
handlers on a thread pool) wait for each other instead of failing with "database is locked". SQLite's
busy handler waits by sleeping (up to 100 ms a turn), so 50 writers of one process would mostly sleep:
they queue on an in-process lock instead and reach BEGIN IMMEDIATE one at a time. WAL checkpoints
run on a background thread instead of inside whichever commit crosses the WAL size limit.

Durability: SQLite runs `synchronous=FULL`: every commit (e.g. the one recording a document as `sent`
before it is returned) is fsynced to the WAL before the call answers, so a power loss cannot roll it
back. NORMAL, SQLite's usual WAL pairing, may lose the last commits on power loss (not on a crash of
the process): a document QuickBooks applied would then be sent again. Cost: bench/README.md.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from erpsync.secure import private_sqlite_file

__all__ = ["Store", "make_engine", "migrate"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class _FifoLock:
    """A re-entrant lock handed to waiters in arrival order, waking only the next one.

    With 50 Web Connectors writing at once, threading.Lock lets late arrivals overtake (a long tail),
    and a Condition.notify_all would wake every waiter on each release.
    """

    def __init__(self):
        self._guard = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._owner: object = None
        self._depth = 0

    def __enter__(self):
        me = threading.get_ident()
        with self._guard:
            if self._owner == me:
                self._depth += 1
                return self
            if self._owner is None:
                self._owner, self._depth = me, 1
                return self
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        gate.acquire()  # released by the previous owner when it hands the lock over
        with self._guard:
            self._owner, self._depth = me, 1
        return self

    def __exit__(self, *exc):
        with self._guard:
            self._depth -= 1
            if self._depth:
                return
            if self._waiters:
                gate = self._waiters.popleft()
                self._owner = gate  # held for the next waiter: a newcomer queues behind it
                gate.release()
            else:
                self._owner = None


_WRITE_LOCKS: dict[str, _FifoLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(url: str) -> _FifoLock:
    """One lock per SQLite database in this process, shared by every Store on it."""
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(url, _FifoLock())


#: PRAGMA synchronous of every SQLite connection (see the module docstring); read when an engine is
#: made. bench/bench_bridge.py sets NORMAL to measure what FULL costs.
SQLITE_SYNCHRONOUS = "FULL"


def make_engine(url: str, *, readonly: bool = False) -> Engine:
    """Create an engine with the pragmas / pool settings the bridge relies on.

    :param readonly: SQLite only: plain (deferred) BEGIN, so readers never queue behind the writer lock.
    """
    if url.startswith("sqlite"):
        private_sqlite_file(url)  # password hashes and customer data: 0600, and so are -wal/-shm
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        synchronous = SQLITE_SYNCHRONOUS

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no branch - runs once per connection
            cur = dbapi_conn.cursor()
            if ":memory:" not in url:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            # Checkpoints are the background thread's job; this is only the safety net (40 MB of WAL).
            cur.execute("PRAGMA wal_autocheckpoint=10000")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # Writers take the lock at BEGIN, so two writers never deadlock on a read->write upgrade;
            # readers (WAL) see a snapshot and never wait for the writer.
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class _Checkpointer:
    """Copies the SQLite WAL back into the database on a background thread, at most once a second.

    Left to itself SQLite checkpoints inside the commit that crosses 1000 WAL pages: ~8 ms of copying
    and fsync in one Web Connector call, with the write lock held and every other writer waiting.
    A PASSIVE checkpoint runs beside writers and readers without blocking them.
    """

    INTERVAL_SECONDS = 1.0

    def __init__(self, engine: Engine):
        self._engine = engine
        self._due = threading.Event()
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None

    def nudge(self) -> None:
        """A write committed: checkpoint within a second (started on first use)."""
        if self._thread is None:
            with self._guard:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(target=self._run, name="qbwc-wal-checkpoint", daemon=True)
                    self._thread.start()
        self._due.set()

    def _run(self) -> None:
        while True:
            self._due.wait()
            if self._stop.wait(self.INTERVAL_SECONDS):
                return
            self._due.clear()
            conn = self._engine.raw_connection()
            try:
                conn.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception as exc:  # the writers' automatic checkpoint still bounds the WAL
                log.warning("background WAL checkpoint failed: %s", exc)
            finally:
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` with Alembic (`alembic upgrade head`)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if url.startswith("sqlite"):
        # sqlite: the file's folder must exist before the first connect.
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        private_sqlite_file(url)
    command.upgrade(cfg, revision)


class Store:
    """The bridge's database: an engine and a session factory."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite: a second engine for reads, without the write lock; PostgreSQL needs no such split.
        self._read_engine = make_engine(url, readonly=True) if url.startswith("sqlite") else self.engine
        self._reads = sessionmaker(self._read_engine, expire_on_commit=False)
        self._writer = _write_lock(url) if url.startswith("sqlite") else nullcontext()
        file_backed = url.startswith("sqlite") and ":memory:" not in url
        self._checkpointer = _Checkpointer(self._read_engine) if file_backed else None

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any exception."""
        with self._writer, self._sessions() as session, session.begin():
            yield session
        if self._checkpointer is not None:
            self._checkpointer.nudge()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only (status, job reads, password checks): never holds the write lock."""
        with self._reads() as session, session.begin():
            yield session

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()
        if self._read_engine is not self.engine:
            self._read_engine.dispose()
