"""Start the Salesforce simulator for a test or a benchmark and build connections pointing at it.

    with running_salesforce(tmp_path) as sf:
        monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", sf.connection_json())
        ...
        sf.admin("POST", "faults", {"rules": [{"kind": "lock_row", "count": 3}]})

Everything goes over real HTTPS sockets; the admin calls are plain HTTP requests to ``/__admin``.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erpsync.sandbox.runner import RunningService, SandboxCA, SandboxContext, serve_in_thread

__all__ = ["SalesforceSandbox", "running_salesforce"]


@dataclass
class SalesforceSandbox:
    """A running simulator: its URL, CA bundle, seeded credentials and the in-process simulator object."""

    running: RunningService
    ctx: SandboxContext

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def info(self) -> dict[str, Any]:
        return self.running.spec.info

    @property
    def ca_bundle(self) -> str:
        return str(self.ctx.ca.ca_bundle)

    @property
    def simulator(self):
        return self.running.spec.simulator  # type: ignore[attr-defined]

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_bundle)

    def connection_json(self, flow: str = "password", **extra: Any) -> str:
        """Return an ``AIRFLOW_CONN_*`` JSON value for `flow` (password, client_credentials or jwt)."""
        from erpsync.sandbox.salesforce import airflow_connection

        return json.dumps(airflow_connection({"url": self.url, **self.info}, self.ca_bundle, flow, extra))

    def provider_domain(self) -> str:
        """Return a ``domain`` extra that makes simple-salesforce's own login reach this simulator.

        simple-salesforce logs in at ``https://{domain}.salesforce.com/services/Soap/u/{version}`` and offers
        no way to name another host; this value turns everything after the host into a query string. It
        exists only so tests can drive the provider's unmodified login; real connections use
        ``login_url`` instead.
        """
        return f"{self.url.removeprefix('https://')}/services/Soap/u/{self.info['api_version']}?_="

    def admin(self, method: str, what: str, body: dict | None = None) -> dict:
        import httpx

        resp = httpx.request(method, f"{self.url}/__admin/{what}", json=body, verify=self.ssl_context())
        resp.raise_for_status()
        return resp.json()

    def token(self) -> str:
        """Return a fresh access token (username-password flow)."""
        import httpx

        i = self.info
        resp = httpx.post(
            f"{self.url}/services/oauth2/token",
            verify=self.ssl_context(),
            data={
                "grant_type": "password",
                "client_id": i["client_id"],
                "client_secret": i["client_secret"],
                "username": i["username"],
                "password": i["password"] + i["security_token"],
            },
        )
        resp.raise_for_status()
        return resp.json()["access_token"]


@contextmanager
def running_salesforce(data_dir: Path, *, seed: bool = True, **options: Any) -> Iterator[SalesforceSandbox]:
    """Serve a simulator whose org lives in `data_dir` on a free port, and stop it afterwards."""
    from erpsync.sandbox.salesforce import service

    options.setdefault("bulk_processing_seconds", 0.05)
    ctx = SandboxContext(
        data_dir=Path(data_dir),
        ca=SandboxCA(Path(data_dir) / "ca"),
        seed=seed,
        options={"salesforce": options},
    )
    running = serve_in_thread(service(ctx), ctx, port=0)
    _disable_nagle(running)
    try:
        yield SalesforceSandbox(running, ctx)
    finally:
        running.stop()


def _disable_nagle(running: RunningService) -> None:
    """Set TCP_NODELAY on the listening socket; Linux copies it to every accepted connection.

    The runner binds ``socket(AF_INET, SOCK_STREAM)`` (proto 0), and asyncio only disables Nagle on
    sockets whose proto is IPPROTO_TCP, so each response (headers and body are two writes) waits for the
    client's delayed ACK: about 40 ms per call, which would swamp every timing measured here.
    """
    import socket

    for server in getattr(running._server, "servers", []):
        for sock in server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
