"""Register erpsync's connection types with Airflow (the provider entry point in pyproject.toml).

Only a provider can add connection types and their forms; plugins cannot. The Salesforce hook keeps
the Salesforce provider's own `salesforce` type, so only Exact Online, the bridge and Autotask are declared here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AUTOTASK_CONNECTION", "EXACT_ONLINE_CONNECTION", "QBWC_BRIDGE_CONNECTION", "get_provider_info"]

EXACT_ONLINE_CONNECTION: dict[str, Any] = {
    "connection-type": "exact_online",
    "hook-class-name": "erpsync.hooks.exact_online.ExactOnlineHook",
    "hook-name": "Exact Online",
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port"],
        "relabeling": {"login": "Client ID", "password": "Client secret", "host": "Base URL"},
        "placeholders": {"host": "https://start.exactonline.nl", "login": "App Center client id (GUID)"},
    },
    "conn-fields": {
        "division": {"label": "Division code", "schema": {"type": ["integer", "null"]}},
        "division_name": {
            "label": "Division name",
            "description": "The administration's exact name (capitals, spaces and punctuation count); "
            "used when no division code is given",
            "schema": {"type": ["string", "null"]},
        },
        "refresh_token": {
            "label": "Initial refresh token",
            "description": "From the consent flow; seeds the token store, which keeps the rotating tokens after that",
            "schema": {"type": ["string", "null"], "format": "password"},
        },
        "redirect_uri": {"label": "Redirect URI", "schema": {"type": ["string", "null"]}},
        "token_store_url": {
            "label": "Token store URL",
            "description": "SQLAlchemy URL shared by all workers (PostgreSQL when workers run on several hosts)",
            "schema": {"type": ["string", "null"], "format": "password"},
        },
        "token_encryption_key": {
            "label": "Token encryption key",
            "description": "Fernet key for the tokens in the store (default: Airflow's fernet key)",
            "schema": {"type": ["string", "null"], "format": "password"},
        },
        "ca_bundle": {"label": "CA bundle path", "schema": {"type": ["string", "null"]}},
        "timeout": {"label": "HTTP timeout (s)", "schema": {"type": ["number", "null"], "default": 60}},
        "minutely_margin": {
            "label": "Calls kept in reserve per minute",
            "schema": {"type": ["integer", "null"]},
        },
        "daily_reserve": {"label": "Calls kept in reserve per day", "schema": {"type": ["integer", "null"]}},
    },
}


QBWC_BRIDGE_CONNECTION: dict[str, Any] = {
    "connection-type": "qbwc_bridge",
    "hook-class-name": "erpsync.hooks.qbwc_bridge.QbwcBridgeHook",
    "hook-name": "QuickBooks Web Connector bridge",
    "ui-field-behaviour": {
        "hidden-fields": ["login"],
        "relabeling": {"password": "Jobs API token", "schema": "Scheme (http or https)"},
        "placeholders": {"host": "qbwc-bridge.example.com", "port": "8443", "schema": "https"},
    },
    "conn-fields": {
        "company": {
            "label": "Company",
            "description": "The company file's name on the bridge (one Web Connector user each)",
            "schema": {"type": ["string", "null"]},
        },
        "ca_bundle": {"label": "CA bundle path", "schema": {"type": ["string", "null"]}},
        "timeout": {"label": "HTTP timeout (s)", "schema": {"type": ["number", "null"], "default": 30}},
    },
}


AUTOTASK_CONNECTION: dict[str, Any] = {
    "connection-type": "autotask",
    "hook-class-name": "erpsync.hooks.autotask.AutotaskHook",
    "hook-name": "Autotask PSA",
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port"],
        "relabeling": {"login": "API user name", "password": "Secret", "host": "Zone discovery URL"},
        "placeholders": {
            "host": "https://webservices.autotask.net (leave blank for the real service)",
            "login": "sync@tenant.example (an API-only user)",
        },
    },
    "conn-fields": {
        "integration_code": {
            "label": "Integration code",
            "description": "The API tracking identifier (ApiIntegrationCode header)",
            "schema": {"type": ["string", "null"], "format": "password"},
        },
        "zone_url": {
            "label": "Zone URL",
            "description": "The zone's REST root, e.g. https://webservices14.autotask.net/ATServicesRest/; "
            "skips zone discovery",
            "schema": {"type": ["string", "null"]},
        },
        "impersonation_resource_id": {
            "label": "Impersonation resource id",
            "description": "Writes are attributed to this resource (the API user's level must allow it)",
            "schema": {"type": ["integer", "null"]},
        },
        "ca_bundle": {"label": "CA bundle path", "schema": {"type": ["string", "null"]}},
        "budget_share": {
            "label": "Share of the tenant's hourly requests",
            "description": "0-1: this package never uses more of the tenant's 10,000 requests per rolling hour "
            "(every integration on the tenant shares them)",
            "schema": {"type": ["number", "null"], "default": 0.5},
        },
        "ledger_url": {
            "label": "Shared call ledger (SQLAlchemy URL)",
            "description": "e.g. postgresql+psycopg://.../erpsync: workers on several hosts count their Autotask "
            "calls in one ledger and keep one budget; blank = a SQLite file per host",
            "schema": {"type": ["string", "null"]},
        },
        "timeout": {"label": "HTTP timeout (s)", "schema": {"type": ["number", "null"], "default": 60}},
    },
}


def get_provider_info() -> dict[str, Any]:
    from erpsync import __version__

    return {
        "package-name": "erpsync",
        "name": "erpsync",
        "description": "Salesforce, Exact Online, QuickBooks Desktop and Autotask PSA sync: hooks and connection types.",
        "versions": [__version__],
        "connection-types": [EXACT_ONLINE_CONNECTION, QBWC_BRIDGE_CONNECTION, AUTOTASK_CONNECTION],
    }
