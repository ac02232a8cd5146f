"""The SQLite bridge store fsyncs every commit (synchronous=FULL), on its write and read connections."""

from __future__ import annotations

from sqlalchemy import text

from erpsync.qbwc_bridge.db import Store, migrate

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def test_sqlite_store_commits_with_synchronous_full(tmp_path):
    """In WAL mode NORMAL may lose the commit that recorded a document as sent on power loss."""
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    migrate(url)
    store = Store(url)
    try:
        with store.session() as s:
            assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert s.execute(text("PRAGMA synchronous")).scalar() == FULL
        with store.reading() as s:
            assert s.execute(text("PRAGMA synchronous")).scalar() == FULL
    finally:
        store.dispose()
