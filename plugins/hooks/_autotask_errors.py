"""How the Autotask hook reads a refused call (§9, §12 #8): the error group that says what to do.

Autotask answers validation and permission failures with HTTP 500 and ``{"errors": [...]}``, so the
status alone does not tell; the message does.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from erpsync.errors import (
    AuthError,
    ConfigError,
    FatalSourceError,
    RateLimitedError,
    RecordError,
    RetriableSourceError,
    SyncError,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "STALE_METADATA",
    "classify",
    "errors_of",
    "json_or_none",
    "origin",
    "raise_if_tls_config",
    "retry_after",
]

_PERMISSION = re.compile(r"permission|not authori[sz]ed|access denied|security level|not allowed to", re.I)
#: A write refused for a value the cached metadata may no longer describe (a picklist value, a UDF).
STALE_METADATA = re.compile(r"picklist|user-defined field|userdefinedfield|udf", re.I)
_TRANSIENT = re.compile(r"time[d ]?out|deadlock|temporar|try again|service unavailable|too many|busy", re.I)


def json_or_none(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def errors_of(resp: httpx.Response) -> list[str]:
    """Return Autotask's `{"errors": [...]}` messages (strings; objects with `message` tolerated)."""
    body = json_or_none(resp)
    if not isinstance(body, dict):
        return []
    errors = body.get("errors")
    if isinstance(errors, str):
        return [errors]
    if not isinstance(errors, list):
        return []
    out = []
    for e in errors:
        if isinstance(e, dict):
            e = e.get("message") or json.dumps(e)
        out.append(str(e))
    return out


def classify(resp: httpx.Response, *, entity: str, action: str, where: str, write: bool) -> SyncError:
    """Turn a refused call into the error group that says what to do (§9, §12 #8)."""
    status = resp.status_code
    errors = errors_of(resp)
    message = "; ".join(errors) if errors else (resp.text[:300].strip() or resp.reason_phrase)
    what = f"Autotask {action} {entity}"
    details = {"status": status, "entity": entity, "errors": errors or [message]}
    if status == 401:
        return AuthError(
            f"{what} refused the credentials (HTTP 401): {message}", where=where, details=details
        )
    if status == 429:
        return RateLimitedError(f"{what} was throttled (HTTP 429): {message}", where=where, details=details)
    if status == 403 or (errors and _PERMISSION.search(message)):
        return FatalSourceError(
            f"{what} is not allowed for this API user (HTTP {status}): {message}. Check the user's "
            "security level (API-only copies can hide modules)",
            where=where,
            details=details,
        )
    # 500 also carries validation and permission failures (§9); 502-504 are the platform's own troubles.
    if status > 500 or (status == 500 and (not errors or _TRANSIENT.search(message))):
        return RetriableSourceError(
            f"{what} failed on the server (HTTP {status}): {message}", where=where, details=details
        )
    if status == 405:
        return FatalSourceError(
            f"{what}: Autotask does not allow this verb here (HTTP 405): {message}",
            where=where,
            details=details,
        )
    if write and status in (400, 404, 409, 422, 500):
        return RecordError(
            f"{what} rejected the record (HTTP {status}): {message}", where=where, details=details
        )
    return FatalSourceError(
        f"{what} refused the request (HTTP {status}): {message}", where=where, details=details
    )


def raise_if_tls_config(exc: Exception, url: str) -> None:
    """A certificate the client cannot verify is a configuration problem: retrying cannot fix it."""
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        raise ConfigError(
            f"TLS verification of {origin(url)[1]} failed ({exc}); if it uses a private CA (the sandbox "
            "does), point the connection extra 'ca_bundle' at its PEM file. Verification is never turned off.",
            where=url,
        ) from exc


def origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(parsedate_to_datetime(raw).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None
