"""One PostgreSQL schema per test: the session's database is shared, its schemas are not.

Two stores with their own Alembic history (the bridge, the state store) in one schema would read each
other's `alembic_version`; a fresh schema per test keeps them and their rows apart.
"""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text


def schema_url(base: str, prefix: str = "t") -> str:
    """Create a fresh schema in the database at `base`; return a URL whose search_path is that schema."""
    schema = f"{prefix}_{os.urandom(5).hex()}"
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"
