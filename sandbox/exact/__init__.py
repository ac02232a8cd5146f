"""Exact Online simulator: OAuth with one-time refresh tokens, divisions, OData endpoints, API limits.

`service(ctx)` builds it for `sandbox up` and tests. HTTPS only, with a certificate from the sandbox CA
(the state file's `ca_bundle`), like the Salesforce simulator: Exact Online itself is https-only, and
the hook refuses a plain-http base URL.
Options come from `ctx.options["exact"]` (see `SimulatorOptions`; e.g. `{"access_token_ttl": 3}`) and,
for `sandbox up`, from the JSON in the environment variable `ERPSYNC_SANDBOX_EXACT`.
Data and consent chains persist in `<data_dir>/exact/exact-state.json` between runs.

The state file gets what a connection needs: client id and secret, redirect URI, a refresh token
from a seeded consent (backdated so it may be refreshed at once), and the divisions.
"""

from __future__ import annotations

import json
import os
from typing import Any

from erpsync.errors import ConfigError
from erpsync.sandbox.exact.app import ExactSimulator, SimulatorOptions
from erpsync.sandbox.runner import SandboxContext, ServiceSpec

__all__ = ["ExactSimulator", "SimulatorOptions", "build", "connection_json", "service"]


#: Environment variable with JSON options for `sandbox up` (which has no per-simulator flags), e.g.
#: `ERPSYNC_SANDBOX_EXACT='{"error_budget": 0, "latency": 0.15}'`. `ctx.options["exact"]` wins.
OPTIONS_ENV = "ERPSYNC_SANDBOX_EXACT"


def _env_options() -> dict[str, Any]:
    raw = os.environ.get(OPTIONS_ENV, "").strip()
    if not raw:
        return {}
    try:
        options = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{OPTIONS_ENV} is not valid JSON: {exc}", where=OPTIONS_ENV) from None
    if not isinstance(options, dict):
        raise ConfigError(f"{OPTIONS_ENV} must be a JSON object of simulator options", where=OPTIONS_ENV)
    unknown = sorted(set(options) - set(SimulatorOptions.__dataclass_fields__))
    if unknown:
        known = ", ".join(sorted(SimulatorOptions.__dataclass_fields__))
        raise ConfigError(
            f"{OPTIONS_ENV}: unknown option(s) {', '.join(unknown)}; known: {known}", where=OPTIONS_ENV
        )
    return options


def build(ctx: SandboxContext) -> ExactSimulator:
    """Build the simulator (loading persisted state or seeding) without wrapping it in a spec."""
    options = SimulatorOptions.from_mapping({**_env_options(), **ctx.options.get("exact", {})})
    return ExactSimulator(ctx.data_dir / "exact", options, seed=ctx.seed)


def service(ctx: SandboxContext) -> ServiceSpec:
    """Return the ServiceSpec `sandbox up` serves; `spec.info` carries the seeded credentials."""
    sim = build(ctx)
    refresh_token = sim.seeded_consent()
    divisions = {str(code): div.name for code, div in sorted(sim.store.divisions.items())}
    info = {
        "client_id": sim.options.client_id,
        "client_secret": sim.options.client_secret,
        "redirect_uri": sim.options.redirect_uri,
        "refresh_token": refresh_token,
        "divisions": divisions,
        "default_division": next(iter(divisions), None),
        "authorize_path": "/api/oauth2/auth",
        "token_path": "/api/oauth2/token",
    }
    spec = ServiceSpec(name="exact", app=sim.app, tls=True, port=8502, info=info, on_stop=sim.save)
    spec.simulator = sim  # tests reach counters directly; clients use the admin endpoints
    return spec


def connection_json(facts: dict[str, Any], **extra: Any) -> str:
    """Return an `AIRFLOW_CONN_EXACT_ONLINE_DEFAULT` value (JSON form) for the sandbox.

    :param facts: this system's entry in the state file (`state["systems"]["exact"]`), which holds
        the URL, the seeded client id/secret, refresh token and divisions.
    :param extra: connection extras to add or override (e.g. `division_name`, `token_store_url`).
        `None` removes a key.
    """
    extras: dict[str, Any] = {
        "division": int(facts["default_division"]),
        "refresh_token": facts["refresh_token"],
        "redirect_uri": facts["redirect_uri"],
    }
    if facts.get("ca_bundle"):
        extras["ca_bundle"] = facts["ca_bundle"]
    if "division_name" in extra and "division" not in extra:
        extras.pop("division")
    extras.update(extra)
    return json.dumps(
        {
            "conn_type": "exact_online",
            "host": facts["url"],
            "login": facts["client_id"],
            "password": facts["client_secret"],
            "extra": {k: v for k, v in extras.items() if v is not None},
        }
    )
