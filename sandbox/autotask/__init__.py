"""Autotask PSA simulator: zone discovery, the REST API v1.0 of one tenant, its request threshold, over HTTPS.

`service(ctx)` builds it for `sandbox up` (port 8504) and tests. The tenant lives in
``<data_dir>/autotask/tenant.json`` (loaded when a previous run left one, else seeded, see ``_seed``),
saved every ``save_interval`` seconds after a write and when the service stops.
Wire behaviour: ``app`` (URLs, auth, errors, admin routes), ``_query`` (the filter language),
``_store`` (write rules, UDFs), ``_threshold`` (10,000 requests per rolling hour per tenant).

Options (`ctx.options["autotask"]`, or for `sandbox up` the JSON object in the environment variable
``ERPSYNC_SANDBOX_AUTOTASK``; the context wins): ``threshold`` (10000), ``threshold_window_seconds``
(3600), ``threshold_latency_scale`` (1.0: +0.5 s from 50 %, +1 s from 75 %), ``latency_ms`` (0; the
benchmark uses 150), ``drop_unknown_operators`` (false), ``save_interval`` (2.0).

The Airflow connection (conn type ``autotask``; ``airflow_connection`` builds it from the state file)::

    {"conn_type": "autotask",
     "host": "https://localhost:8504",          # zone-discovery base; real: https://webservices.autotask.net
     "login": "erpsync.api@erpsync.sandbox",    # the API-only user
     "password": "<secret>",
     "extra": {"integration_code": "<tracking identifier>",
               "zone_url": "https://localhost:8504/zone14/ATServicesRest/",  # optional: skips discovery
               "impersonation_resource_id": 29682802,                           # optional
               "ca_bundle": "/path/to/sandbox/ca.pem"}}                          # sandbox / private CA only

A client discovers its zone with ``GET {host}/atservicesrest/v1.0/zoneInformation?user={login}`` and
calls ``{url}V1.0/...`` with the headers ``UserName`` (login), ``Secret`` (password),
``ApiIntegrationcode`` (integration_code) and, when set, ``ImpersonationResourceId``.

The state file (``systems["autotask"]``) holds ``url`` (the discovery base), ``username``, ``secret``,
``integration_code``, ``ca_bundle``, ``default_account_manager_id`` (Angela Richer, the seed's default),
and the second API user's credentials (``other_username``...) for tests of the shared threshold.
"""

from __future__ import annotations

import json
import os
from typing import Any

from erpsync.errors import ConfigError
from erpsync.sandbox.runner import SandboxContext, ServiceSpec

__all__ = ["OPTIONS_ENV", "airflow_connection", "build", "service"]

OPTIONS_ENV = "ERPSYNC_SANDBOX_AUTOTASK"
PORT = 8504


def _options(ctx: SandboxContext):
    from .app import SimulatorOptions

    raw = os.environ.get(OPTIONS_ENV, "").strip()
    try:
        from_env = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ConfigError(f"{OPTIONS_ENV} is not valid JSON: {exc}", where=OPTIONS_ENV) from None
    if not isinstance(from_env, dict):
        raise ConfigError(f"{OPTIONS_ENV} must be a JSON object of simulator options", where=OPTIONS_ENV)
    try:
        return SimulatorOptions.from_mapping({**from_env, **ctx.options.get("autotask", {})})
    except ValueError as exc:
        raise ConfigError(str(exc), where=OPTIONS_ENV) from None


def build(ctx: SandboxContext):
    """Load or seed the tenant under ``ctx.data_dir/autotask`` and return (simulator, seed facts)."""
    from ._seed import seed_minimal, seed_tenant
    from ._store import Tenant
    from .app import AutotaskSimulator

    options = _options(ctx)
    path = ctx.data_dir / "autotask" / "tenant.json"
    if path.exists():
        tenant = Tenant.load(path)
    else:
        tenant = Tenant(path)
        seed_tenant(tenant) if ctx.seed else seed_minimal(tenant)
        tenant.save()
    return AutotaskSimulator(tenant, options)


def service(ctx: SandboxContext) -> ServiceSpec:
    """Return the ServiceSpec `sandbox up` serves over HTTPS; `spec.info` carries the credentials."""
    from ._seed import (
        DEFAULT_ACCOUNT_MANAGER,
        INTEGRATION_CODE,
        OTHER_INTEGRATION_CODE,
        OTHER_SECRET,
        OTHER_USERNAME,
        SECRET,
        USERNAME,
    )

    sim = build(ctx)
    resources = sim.tenant.records["resources"].values()
    default = next(
        (r["id"] for r in resources if (r["firstName"], r["lastName"]) == DEFAULT_ACCOUNT_MANAGER), None
    )
    info = {
        "username": USERNAME,
        "secret": SECRET,
        "integration_code": INTEGRATION_CODE,
        "other_username": OTHER_USERNAME,
        "other_secret": OTHER_SECRET,
        "other_integration_code": OTHER_INTEGRATION_CODE,
        "default_account_manager_id": default,
        "ca_bundle": str(ctx.ca.ca_bundle),
    }
    spec = ServiceSpec("autotask", sim.app, tls=True, port=PORT, info=info, on_stop=sim.tenant.save)
    spec.simulator = sim  # type: ignore[attr-defined]  # tests reach the tenant, clock and threshold
    return spec


def zone_url(url: str, zone: int) -> str:
    """The zone REST root the simulator at `url` announces for `zone` (what zoneInformation returns)."""
    return f"{url.rstrip('/')}/zone{zone}/ATServicesRest/"


def airflow_connection(system: dict, ca_bundle: str | None = None, **extra: Any) -> dict:
    """Return an Airflow connection dict (``AIRFLOW_CONN_*`` JSON) of type ``autotask`` for the simulator.

    :param system: the state file's ``systems["autotask"]`` entry (url + seeded credentials).
    :param ca_bundle: the CA bundle to trust (default: the one in `system`).
    :param extra: extras to add or override (``zone_url``, ``impersonation_resource_id``...); ``None``
        removes a key.
    """
    extras: dict[str, Any] = {
        "integration_code": system["integration_code"],
        "ca_bundle": ca_bundle or system.get("ca_bundle"),
    }
    extras.update(extra)
    return {
        "conn_type": "autotask",
        "host": system["url"],
        "login": system["username"],
        "password": system["secret"],
        "extra": {k: v for k, v in extras.items() if v is not None},
    }
