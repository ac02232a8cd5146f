"""The state store: run history, record identities and content hashes, cursors and quarantine.

SQLAlchemy 2 models with Alembic migrations kept in this package (`erpsync.state.migrations`).
Import it inside tasks only: it loads SQLAlchemy.
"""

from erpsync.state.store import (
    DEFAULT_RETENTION_DAYS,
    Identity,
    PruneResult,
    QuarantineRecord,
    StateStore,
    default_state_url,
    upgrade,
)

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "Identity",
    "PruneResult",
    "QuarantineRecord",
    "StateStore",
    "default_state_url",
    "upgrade",
]
