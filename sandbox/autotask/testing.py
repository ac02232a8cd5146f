"""Start the Autotask simulator for a test or a benchmark and build connections pointing at it.

    with running_autotask(tmp_path, threshold=100) as at:
        monkeypatch.setenv("AIRFLOW_CONN_AUTOTASK_DEFAULT", at.connection_json())
        at.simulator.clock.advance(3600)          # move the threshold's rolling hour, no sleeping
        at.admin("POST", "threshold", {"add": 40})  # other integrations' traffic on the tenant

Everything goes over real HTTPS sockets with the sandbox CA; admin calls are plain requests to
``/__admin``. ``api()`` returns an httpx client already on the zone's REST root with the three headers.
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

__all__ = ["AutotaskSandbox", "running_autotask"]


@dataclass
class AutotaskSandbox:
    """A running simulator: URLs, credentials, CA bundle and the in-process simulator object."""

    running: RunningService
    ctx: SandboxContext

    @property
    def url(self) -> str:
        """The zone-discovery base (the connection's host), e.g. ``https://localhost:40123``."""
        return self.running.url

    @property
    def info(self) -> dict[str, Any]:
        return self.running.spec.info

    @property
    def simulator(self):
        return self.running.spec.simulator  # type: ignore[attr-defined]

    @property
    def ca_bundle(self) -> str:
        return str(self.ctx.ca.ca_bundle)

    @property
    def username(self) -> str:
        return self.info["username"]

    @property
    def secret(self) -> str:
        return self.info["secret"]

    @property
    def integration_code(self) -> str:
        return self.info["integration_code"]

    @property
    def zone_url(self) -> str:
        """The REST root zoneInformation announces now (``.../zone14/ATServicesRest/``)."""
        from erpsync.sandbox.autotask import zone_url

        return zone_url(self.url, self.simulator.tenant.zone)

    def headers(self, *, other: bool = False, **extra: str) -> dict[str, str]:
        """The three auth headers of the sync's API user (or, with `other`, the second integration's)."""
        prefix = "other_" if other else ""
        return {
            "UserName": self.info[f"{prefix}username"],
            "Secret": self.info[f"{prefix}secret"],
            "ApiIntegrationcode": self.info[f"{prefix}integration_code"],
            **extra,
        }

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_bundle)

    def api(self, *, other: bool = False, **headers: str):
        """An httpx.Client on ``{zone_url}V1.0/`` with the auth headers (close it, or use ``with``)."""
        import httpx

        return httpx.Client(
            base_url=f"{self.zone_url}V1.0/",
            headers=self.headers(other=other, **headers),
            verify=self.ssl_context(),
        )

    def connection(self, **extra: Any) -> dict:
        from erpsync.sandbox.autotask import airflow_connection

        return airflow_connection({**self.info, "url": self.url}, self.ca_bundle, **extra)

    def connection_json(self, **extra: Any) -> str:
        """Return an ``AIRFLOW_CONN_*`` JSON value of type ``autotask`` (see the package docstring)."""
        return json.dumps(self.connection(**extra))

    def admin(self, method: str, what: str, body: dict | None = None) -> dict:
        import httpx

        resp = httpx.request(method, f"{self.url}/__admin/{what}", json=body, verify=self.ssl_context())
        resp.raise_for_status()
        return resp.json()


@contextmanager
def running_autotask(data_dir: Path, *, seed: bool = True, **options: Any) -> Iterator[AutotaskSandbox]:
    """Serve a simulator whose tenant lives in `data_dir` on a free port; stop it afterwards.

    `options` are simulator options (``threshold``, ``threshold_latency_scale``, ``latency_ms``...).
    """
    from erpsync.sandbox.autotask import service

    ctx = SandboxContext(
        data_dir=Path(data_dir), ca=SandboxCA(Path(data_dir) / "ca"), seed=seed, options={"autotask": options}
    )
    running = serve_in_thread(service(ctx), ctx, port=0)
    try:
        yield AutotaskSandbox(running, ctx)
    finally:
        running.stop()
