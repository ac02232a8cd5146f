"""Defaults every sync DAG shares: owner, retry budget with exponential backoff, timeouts.

Kept free of heavy imports because DAG files import it at parse time.
"""

from __future__ import annotations

from datetime import timedelta

__all__ = ["DEFAULT_ARGS", "default_args"]

DEFAULT_ARGS = {
    "owner": "data-platform",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=15),
    "execution_timeout": timedelta(hours=1),
}


def default_args(**overrides) -> dict:
    """Return a copy of DEFAULT_ARGS with `overrides` applied, so DAGs never mutate the shared dict."""
    return {**DEFAULT_ARGS, **overrides}
