"""Settings of the bridge: one pydantic-settings class, environment prefix QBWC_BRIDGE_.

Validated once at startup. Placeholder secrets (the compose file's `change-me-...` default) are refused
outside development, so a forgotten `.env` fails loudly instead of exposing the jobs API.
"""

from __future__ import annotations

import math
from collections import Counter
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from erpsync.errors import ConfigError
from erpsync.secure import redact_url

__all__ = ["BridgeSettings", "load_settings"]

_PLACEHOLDERS = ("change-me", "changeme", "placeholder")
#: A static API token is a master key (every company, every right): at least this long ...
MIN_TOKEN_LENGTH = 32
#: ... and at least this many bits by a per-character Shannon estimate (`secrets.token_hex(16)`
#: scores 93 or more, `token_urlsafe(32)` 180; "abcd" * 10 scores 80).
MIN_TOKEN_BITS = 88


def token_weakness(token: str) -> str | None:
    """Why `token` is too weak to be a static API token, or None. A heuristic, not a proof of randomness."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"it has {len(token)} characters; at least {MIN_TOKEN_LENGTH} are required"
    counts = Counter(token)
    bits = -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values()) * len(token)
    if bits < MIN_TOKEN_BITS:
        return f"it looks like about {bits:.0f} bits of randomness; at least {MIN_TOKEN_BITS} are required"
    trigrams = [token[i : i + 3] for i in range(len(token) - 2)]
    if len(set(trigrams)) < 0.75 * len(trigrams):
        return "it repeats the same pieces (a pattern, not a random secret)"
    return None


class BridgeSettings(BaseSettings):
    """Every knob of the bridge; each one may come from `QBWC_BRIDGE_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="QBWC_BRIDGE_", extra="ignore")

    #: SQLite by default (a file beside the process); PostgreSQL (postgresql+psycopg://) in production.
    database_url: str = "sqlite:///qbwc_bridge.db"
    #: Bearer token of the jobs API. Empty means only tokens created with `qbwc-bridge token create`.
    api_token: str = ""
    #: The externally visible base URL (written into .qwc files as AppURL/AppSupport).
    public_url: str = "http://localhost:8443"
    environment: str = "production"
    app_name: str = "erpsync"
    ticket_ttl_seconds: int = Field(default=1800, ge=10)
    #: One live session per company file: while a session has called within this many seconds (and its
    #: ticket has not expired), another login for the company gets `busy`. A session quiet for longer
    #: (its Web Connector crashed or hung) is superseded and its unanswered document reconciled.
    #: 0 = a new login always supersedes (the behaviour before issue 11; still never posts twice).
    session_stale_seconds: int = Field(default=300, ge=0)
    #: Batching: at most this many requests and bytes in one sendRequestXML document.
    max_batch_requests: int = Field(default=100, ge=1, le=10_000)
    max_batch_bytes: int = Field(default=2_000_000, ge=1_000)
    #: Queue limits per company: more pending requests than this answers 429.
    max_queued_requests: int = Field(default=100_000, ge=1)
    max_requests_per_job: int = Field(default=10_000, ge=1)
    #: A job not finished after this many seconds is marked expired (no Web Connector came by).
    job_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=1)
    #: Longest long-poll a client may ask for with `?wait=`.
    max_wait_seconds: float = Field(default=60.0, ge=0)
    #: Lower bound QBWC should use for its auto-run interval (authenticate slot [3]); 0 = no hint.
    min_run_every_seconds: int = Field(default=0, ge=0)
    #: qbXML version spoken unless the Web Connector reports a lower one.
    qbxml_version: str = "13.0"
    #: Web Connector calls handled at once; the rest wait their turn in arrival order. A few threads
    #: contending for the interpreter lock answer 50 polling company files sooner than 40 do.
    soap_workers: int = Field(default=4, ge=1, le=64)
    #: Largest SOAP body accepted (QuickBooks responses can be big, but not unbounded).
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: Log whole qbXML documents (customer data!) only when this is on.
    debug_qbxml: bool = False
    #: Days the qbXML of a finished job (customer data) is kept; then pruned, at most hourly, by the
    #: serving bridge and by `qbwc-bridge prune` (retention.py). 0 = no automatic pruning.
    payload_retention_days: float = Field(default=30.0, ge=0)
    #: Web Connector login backoff (per user name and per client address, shared by replicas through
    #: the login_throttle table): this many failures are free, then each one blocks that user / address
    #: for LOGIN_BACKOFF_SECONDS doubling per further failure up to LOGIN_BACKOFF_MAX_SECONDS. Capped,
    #: so an attacker can slow a real user down but never lock them out for good.
    login_free_failures: int = Field(default=3, ge=0)
    login_backoff_seconds: float = Field(default=1.0, gt=0)
    login_backoff_max_seconds: float = Field(default=900.0, gt=0)
    #: Failures older than this are forgotten (a fresh start the next day).
    login_failure_memory_seconds: float = Field(default=24 * 3600.0, gt=0)

    def __repr_args__(self):
        """repr/str without secrets: the API token masked, the database URL without its password."""
        for name, value in super().__repr_args__():
            if name == "api_token" and value:
                value = "***"
            elif name == "database_url":
                value = redact_url(value)
            yield name, value

    @field_validator("database_url")
    @classmethod
    def _driver(cls, value: str) -> str:
        # Compose files and users write plain postgresql://; psycopg 3 is the installed driver.
        if value.startswith("postgres://"):
            value = "postgresql://" + value[len("postgres://") :]
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value[len("postgresql://") :]
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"public_url must be an http(s) URL with a host name, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _no_placeholder_secret(self) -> BridgeSettings:
        token = self.api_token.lower()
        if self.environment != "development" and any(p in token for p in _PLACEHOLDERS):
            raise ValueError(
                "QBWC_BRIDGE_API_TOKEN is still a placeholder; set a real token "
                "(or QBWC_BRIDGE_ENVIRONMENT=development on a laptop)"
            )
        weakness = token_weakness(self.api_token) if self.api_token else None
        if self.environment != "development" and weakness:
            raise ValueError(
                f"QBWC_BRIDGE_API_TOKEN is too weak for a key to every company ({weakness}); make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'` "
                "(or QBWC_BRIDGE_ENVIRONMENT=development on a laptop)"
            )
        return self


def load_settings(**overrides) -> BridgeSettings:
    """Build the settings from the environment plus `overrides`, turning validation errors into ConfigError."""
    from pydantic import ValidationError

    try:
        return BridgeSettings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"QBWC_BRIDGE_{'_'.join(str(p) for p in err['loc']).upper() or 'SETTINGS'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid bridge settings: {problems}", where="qbwc_bridge.config") from exc
