"""Alembic migrations of the state store; run them with `erpsync.state.upgrade(url)`."""
