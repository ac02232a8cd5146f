"""The Autotask connection's settings and URLs (see `erpsync.hooks.autotask` for the extras)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from erpsync.errors import ConfigError

__all__ = ["DISCOVERY_BASE", "Settings", "blank_to_none", "discovery_url", "rest_root", "share"]

#: Where zone discovery lives for every tenant (§1).
DISCOVERY_BASE = "https://webservices.autotask.net"


def blank_to_none(value: Any) -> Any:
    # The connection form stores empty strings for untouched fields; treat them as "not set".
    return None if isinstance(value, str) and not value.strip() else value


@dataclass(frozen=True)
class Settings:
    """The connection as the hook uses it: credentials, URLs, the budget's knobs and the caches' TTLs
    (read and defaulted by `AutotaskHook.settings`)."""

    conn_id: str
    user: str
    secret: str = field(repr=False)
    integration_code: str = field(repr=False)
    discovery_url: str
    zone_url: str | None
    impersonation_resource_id: int | None
    verify: Any
    timeout: float
    budget_share: float
    tenant_slowdown_share: float
    tenant_stop_share: float
    slowdown_seconds: float
    threshold_every: int
    max_wait: float
    max_retries: int
    retry_backoff: float
    rate_limit_backoff: float
    zone_cache_ttl: float
    threshold_share_ttl: float
    metadata_ttl: float
    picklist_ttl: float
    reference_ttl: float
    identity_ttl: float
    ledger_path: str
    ledger_url: str | None
    budget_key: str


def discovery_url(host: str | None) -> str:
    base = (host or DISCOVERY_BASE).strip()
    if "://" not in base:
        base = f"https://{base}"
    base = base.rstrip("/")
    lowered = base.lower()
    if lowered.endswith("zoneinformation"):
        return base
    if lowered.endswith("/v1.0"):
        return f"{base}/zoneInformation"
    if lowered.endswith("/atservicesrest"):
        return f"{base}/v1.0/zoneInformation"
    return f"{base}/atservicesrest/v1.0/zoneInformation"


def rest_root(zone_url: str) -> str:
    """Return the `.../V1.0` root for a zone URL as discovery names it (`.../ATServicesRest/`)."""
    root = zone_url.strip().rstrip("/")
    if root.lower().endswith("/v1.0"):
        return root
    return f"{root}/V1.0"


def share(value: Any, name: str, default: float, conn_id: str) -> float:
    if value is None:
        return default
    try:
        share = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} {value!r} is not a number", where=conn_id) from None
    if share > 1:  # "50" in a form means 50 %
        share /= 100
    if not 0 < share <= 1:
        raise ConfigError(f"{name} must be between 0 and 1 (a share of the hourly threshold)", where=conn_id)
    return share
