"""Helpers for tests and benchmarks: start the Exact simulator on a free port, build a connection for it.

    with running_exact(tmp_path, access_token_ttl=3) as exact:
        monkeypatch.setenv("AIRFLOW_CONN_EXACT_ONLINE_DEFAULT", exact.connection_json(division_name="ERPSync Demo B.V."))
        hook = ExactOnlineHook()

Other areas' tests (flows that read items or write orders) can use this too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erpsync.sandbox.exact import connection_json, service
from erpsync.sandbox.exact.app import ExactSimulator
from erpsync.sandbox.runner import RunningService, SandboxCA, SandboxContext, serve_in_thread

if TYPE_CHECKING:
    import httpx

__all__ = ["RunningExact", "running_exact"]


@dataclass
class RunningExact:
    """A started simulator: its URL, seeded credentials and the simulator object (for counters)."""

    running: RunningService
    simulator: ExactSimulator
    info: dict[str, Any]
    data_dir: Path

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def ca_bundle(self) -> str:
        return self.info["ca_bundle"]

    @cached_property
    def http(self) -> httpx.Client:
        """An httpx client that trusts the sandbox CA, for admin calls and raw protocol checks."""
        import httpx

        return httpx.Client(verify=self.ca_bundle, timeout=30)

    def client(self, **kwargs: Any) -> httpx.Client:
        """A new httpx client (caller closes it) trusting the sandbox CA; `kwargs` go to httpx.Client."""
        import httpx

        return httpx.Client(verify=self.ca_bundle, **kwargs)

    def connection_json(self, **extra: Any) -> str:
        """An `AIRFLOW_CONN_*` value (JSON form) for this simulator; `extra` is merged into the extras.

        The token store and the call budget default to SQLite files in the data dir: the default ones
        under AIRFLOW_HOME would be shared by every test of the session.
        """
        extra.setdefault("token_store_url", f"sqlite:///{self.data_dir / 'tokens.db'}")
        # The call budget too (the default file under AIRFLOW_HOME would outlive this simulator), with
        # the simulator's window lengths, so the hook's ledger counts the windows Exact counts.
        extra.setdefault("budget_path", str(self.data_dir / "exact-budget.sqlite"))
        extra.setdefault("minute_seconds", self.simulator.options.minute_seconds)
        extra.setdefault("day_seconds", self.simulator.options.day_seconds)
        return connection_json({**self.info, "url": self.url}, **extra)

    def new_consent(self, divisions: list[int] | None = None) -> str:
        """A fresh refresh token, as if a user consented again (optionally to some divisions only)."""
        return self.simulator.seeded_consent(divisions)


@contextlib.contextmanager
def running_exact(data_dir: Path, *, seed: bool = True, **options: Any) -> Iterator[RunningExact]:
    """Start the simulator with `options` (see SimulatorOptions) on a free port; stop it afterwards.

    It serves https only, with a certificate from the sandbox CA (`info["ca_bundle"]`), as Exact does.
    """
    ctx = SandboxContext(
        data_dir=Path(data_dir), ca=SandboxCA(Path(data_dir) / "ca"), seed=seed, options={"exact": options}
    )
    spec = service(ctx)
    spec.info["ca_bundle"] = str(ctx.ca.ca_bundle)
    running = serve_in_thread(spec, ctx, port=0)
    exact = RunningExact(running, spec.simulator, dict(spec.info), Path(data_dir))
    try:
        yield exact
    finally:
        if "http" in exact.__dict__:
            exact.http.close()
        running.stop()
