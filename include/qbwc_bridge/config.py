"""Settings of the bridge: one pydantic-settings class, environment prefix QBWC_BRIDGE_.

Validated once at startup. Placeholder secrets (the compose file's `change-me-...` default) are refused
outside development, so a forgotten `.env` fails loudly instead of exposing the jobs API.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from erpsync.errors import ConfigError

__all__ = ["BridgeSettings", "load_settings"]

_PLACEHOLDERS = ("change-me", "changeme", "placeholder")


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
