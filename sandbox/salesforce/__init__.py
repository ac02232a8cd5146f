"""Salesforce simulator: OAuth, versioned REST, sObject Collections, Bulk API 2.0 and limits over HTTPS.

`service(ctx)` builds the org (loaded from ``<data_dir>/salesforce/org.json`` when a previous run left
one, else seeded deterministically), the seeded connected app and integration user, and the ASGI app.
The state file gets the credentials a client needs::

    {"url": "https://localhost:8501", "username": ..., "password": ..., "security_token": ...,
     "client_id": ..., "client_secret": ..., "jwt_private_key_file": ..., "api_version": "62.0"}

Simulator options (`SandboxContext.options["salesforce"]`, or for `sandbox up` the JSON object in the
environment variable ``ERPSYNC_SANDBOX_SALESFORCE``; the context wins): ``latency_ms``, ``session_timeout``
(seconds idle), ``cursor_timeout``, ``daily_api_limit``, ``bulk_processing_seconds``, ``fault_seed``, ``save_interval``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from erpsync.errors import ConfigError
from erpsync.sandbox.runner import SandboxContext, ServiceSpec

__all__ = ["API_VERSION", "airflow_connection", "service"]

API_VERSION = "62.0"
OPTIONS_ENV = "ERPSYNC_SANDBOX_SALESFORCE"
OPTIONS = (
    "latency_ms",
    "session_timeout",
    "cursor_timeout",
    "daily_api_limit",
    "bulk_processing_seconds",
    "fault_seed",
    "save_interval",
)

#: Fixed sandbox secrets: the sandbox is local and throwaway, and fixed values let a user paste them.
USERNAME = "integration@erpsync.sandbox"
PASSWORD = "sandbox-Passw0rd"
SECURITY_TOKEN = "SbxT0kenErpsync2024"
CLIENT_ID = "3MVG9erpsyncSandboxConsumerKey.0000000000000000000000000000000000000000000"
CLIENT_SECRET = "ERPSYNC0SANDBOX0CONSUMER0SECRET0000000000000000000000000000000000"


def _jwt_keys(folder: Path) -> tuple[Path, bytes]:
    """Return the connected app's private key file and its public key, generating them once."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key_file = folder / "jwt_private_key.pem"
    if not key_file.exists():
        folder.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_file.chmod(0o600)
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key_file, public


def service(ctx: SandboxContext) -> ServiceSpec:
    """Build the Salesforce simulator for `ctx` (data persisted under `ctx.data_dir/salesforce`)."""
    from .app import Credentials, SalesforceSimulator
    from .org import Org
    from .seed import seed_org

    folder = ctx.data_dir / "salesforce"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "org.json"
    if path.exists():
        org = Org.load(path)
    else:
        org = Org(path)
        if ctx.seed:
            seed_org(org)
        else:
            seed_org_minimal(org)
        org.save()
    key_file, public = _jwt_keys(folder)
    creds = Credentials(USERNAME, PASSWORD, SECURITY_TOKEN, CLIENT_ID, CLIENT_SECRET, public)
    sim = SalesforceSimulator(org, creds, options=_options(ctx))
    info = {
        "username": USERNAME,
        "password": PASSWORD,
        "security_token": SECURITY_TOKEN,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "consumer_key": CLIENT_ID,
        "jwt_private_key_file": str(key_file),
        "api_version": API_VERSION,
        "standard_pricebook_id": org.standard_pricebook_id(),
    }
    spec = ServiceSpec("salesforce", sim.app, tls=True, port=8501, info=info, on_stop=org.save)
    spec.simulator = sim  # type: ignore[attr-defined]  # tests and benchmarks reach the org through it
    return spec


def _options(ctx: SandboxContext) -> dict[str, Any]:
    """Merge the environment's options with the context's, refusing unknown names and non-numbers."""
    raw = os.environ.get(OPTIONS_ENV, "").strip()
    try:
        from_env = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ConfigError(f"{OPTIONS_ENV} is not valid JSON: {exc}", where=OPTIONS_ENV) from None
    if not isinstance(from_env, dict):
        raise ConfigError(f"{OPTIONS_ENV} must be a JSON object of simulator options", where=OPTIONS_ENV)
    options = {**from_env, **ctx.options.get("salesforce", {})}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown Salesforce simulator option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}",
            where=OPTIONS_ENV,
        )
    for name, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"Salesforce simulator option {name} must be a number, got {value!r}", where=OPTIONS_ENV
            )
    return options


def seed_org_minimal(org) -> None:
    """An empty org still has its integration user and a standard price book, as every real org does."""
    from .schema import get_object
    from .seed import INTEGRATION_USERNAME

    rid, _ = org.create(
        get_object("User"),
        {
            "Username": INTEGRATION_USERNAME,
            "FirstName": "Integration",
            "LastName": "User",
            "Email": INTEGRATION_USERNAME,
        },
        bypass_rules=True,
    )
    org.integration_user_id = rid
    org.create(
        get_object("Pricebook2"),
        {"Name": "Standard Price Book", "IsActive": True, "IsStandard": True},
        bypass_rules=True,
    )


def airflow_connection(
    system: dict, ca_bundle: str, flow: str = "password", extra: dict | None = None
) -> dict:
    """Return an Airflow connection dict (``AIRFLOW_CONN_*`` JSON) for the simulator in a state file.

    :param system: the state file's ``systems["salesforce"]`` entry (url + seeded credentials).
    :param ca_bundle: the state file's ``ca_bundle``.
    :param flow: ``password`` (username-password + security token), ``client_credentials`` or ``jwt``.
    :param extra: connection extras to add or override (``ca_bundle``, ``bulk_threshold``...).
    """
    extras: dict = {
        "login_url": system["url"],
        "ca_bundle": ca_bundle,
        "version": system.get("api_version", API_VERSION),
    }
    conn: dict = {"conn_type": "salesforce"}
    if flow == "password":
        conn.update(login=system["username"], password=system["password"])
        extras.update(
            security_token=system["security_token"],
            consumer_key=system["client_id"],
            consumer_secret=system["client_secret"],
        )
    elif flow == "client_credentials":
        extras.update(consumer_key=system["client_id"], consumer_secret=system["client_secret"])
    elif flow == "jwt":
        conn.update(login=system["username"])
        extras.update(consumer_key=system["client_id"], private_key_file_path=system["jwt_private_key_file"])
    else:
        raise ValueError(f"unknown flow {flow!r}: use password, client_credentials or jwt")
    extras.update(extra or {})
    conn["extra"] = extras
    return conn
