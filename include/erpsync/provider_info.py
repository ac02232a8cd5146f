"""Register erpsync's connection types with Airflow (the provider entry point in pyproject.toml).

Only a provider can add connection types and their forms; plugins cannot. The Salesforce hook keeps
the Salesforce provider's own `salesforce` type, so only Exact Online and the bridge are declared here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["QBWC_BRIDGE_CONNECTION", "get_provider_info"]

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


def get_provider_info() -> dict[str, Any]:
    from erpsync import __version__
    from erpsync.hooks.exact_online import CONNECTION_TYPE_INFO

    return {
        "package-name": "erpsync",
        "name": "erpsync",
        "description": "Salesforce, Exact Online and QuickBooks Desktop sync: hooks and connection types.",
        "versions": [__version__],
        "connection-types": [CONNECTION_TYPE_INFO, QBWC_BRIDGE_CONNECTION],
    }
