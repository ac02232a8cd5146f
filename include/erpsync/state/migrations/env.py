"""Alembic environment of the state store, driven programmatically by `erpsync.state.upgrade`.

The caller hands over an open connection in `config.attributes["connection"]`, so the URL (and any
password in it) never passes through Alembic's %-interpolated ini options.
"""

from __future__ import annotations

from alembic import context

from erpsync.state.models import Base

VERSION_TABLE = "erpsync_alembic_version"  # its own table: the bridge may share the database


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


# Alembic sets up its context proxy before running this file; a plain import (a package walk, an
# import check) has none and must stay harmless.
if getattr(context, "_proxy", None) is not None:
    run_migrations()
