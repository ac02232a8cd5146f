"""One exception hierarchy, grouped by what the caller should do about the error.

Hooks classify wire errors into these classes, operators decide (quarantine a row, fail, retry) and
the DAG sets the retry budget. Every class carries enough context to say what was wrong and where.

    SyncError
    ├── ConfigError            fix the configuration; fail now, never retry
    ├── FatalSourceError       refused for good (4xx but 429, permissions, feature off); fail, no retry
    │   └── AuthError          credentials or consent refused
    ├── RetriableSourceError   429, 5xx, timeouts, locked records, busy systems; retry later
    │   ├── RateLimitedError   the system asked us to wait (carries retry_after seconds)
    │   └── StaleRecordError   optimistic lock lost (QuickBooks EditSequence); re-read, then retry
    └── RecordError            this one record is bad; quarantine it, count it, carry on
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "ConfigError",
    "FatalSourceError",
    "RateLimitedError",
    "RecordError",
    "RetriableSourceError",
    "StaleRecordError",
    "SyncError",
]


class SyncError(Exception):
    """Base of every error this package raises on purpose.

    :param message: what went wrong, in words a user can act on.
    :param where: where it happened (file:line, endpoint, record id, requestID), if known.
    :param details: small JSON-able context (status code, error code, field) for logs and reports.
    """

    def __init__(self, message: str, *, where: str | None = None, details: dict[str, Any] | None = None):
        self.message = message
        self.where = where
        self.details = dict(details or {})
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(SyncError):
    """The configuration (mapping, connection, setting) is wrong; a retry cannot help."""


class FatalSourceError(SyncError):
    """The external system refused the request for good; fail without retrying."""


class AuthError(FatalSourceError):
    """Credentials, tokens or consent were refused."""


class RetriableSourceError(SyncError):
    """A transient failure (rate limit, 5xx, timeout, locked record); the same call may succeed later."""


class RateLimitedError(RetriableSourceError):
    """The system asked us to slow down; `retry_after` says for how many seconds, if it said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class StaleRecordError(RetriableSourceError):
    """The record changed since it was read (stale EditSequence); re-read it, then retry."""


class RecordError(SyncError):
    """One record is bad (mapping, quality rule, rejected by the target); quarantine it and go on."""
