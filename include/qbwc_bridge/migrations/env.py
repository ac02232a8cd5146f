"""Alembic environment of the bridge store.

The URL comes from the Alembic config (set by `erpsync.qbwc_bridge.db.migrate`) or, for the bare
`alembic` command, from QBWC_BRIDGE_DATABASE_URL. The module is part of the package (so a
non-editable install ships it), which means tools that walk packages import it outside Alembic;
the guard at the bottom keeps that import side-effect free.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from erpsync.qbwc_bridge.models import Base


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from erpsync.qbwc_bridge.config import load_settings

    return load_settings().database_url


def run_migrations() -> None:
    if context.is_offline_mode():
        context.configure(url=_url(), target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url())
    try:
        with engine.connect() as conn:
            context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if getattr(context, "_proxy", None) is not None:  # only when Alembic runs this file
    run_migrations()
