"""`QbwcBridgeHook`: DAG tasks reach QuickBooks Desktop through the bridge's jobs API.

Connection (conn type `qbwc_bridge`, default id `qbwc_bridge_default`): host, port, schema = `http` or
`https` (the URL scheme; left blank it means http only for a bridge on this machine, and is refused
for any other host, where the token would travel in clear), password = the jobs-API token; extras `ca_bundle` (PEM file to trust),
`company` (default company name) and `timeout` (seconds per HTTP call).
Precedence: call argument > hook argument > connection extra > default.

The hook classifies every failure into `erpsync.errors`: 401/403 AuthError, unknown company
ConfigError, 409 and other 4xx FatalSourceError, 422 RecordError (with each invalid request's index
and field), 429 RateLimitedError (Retry-After), 5xx/timeouts/refused connections RetriableSourceError.
httpx is imported inside the methods, so DAG files may import this module for free.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from erpsync.errors import (
    AuthError,
    ConfigError,
    FatalSourceError,
    RateLimitedError,
    RecordError,
    RetriableSourceError,
    SyncError,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "TERMINAL_STATES",
    "BridgeConfig",
    "QbwcBridgeHook",
    "bridge_config",
    "classify_response",
    "job_errors",
]

TERMINAL_STATES = frozenset({"completed", "failed", "cancelled", "expired"})
API = "/api/v1/jobs"


@dataclass(frozen=True)
class BridgeConfig:
    """What a client needs to talk to the bridge, resolved from a connection."""

    base_url: str
    token: str = field(repr=False)
    verify: Any
    company: str | None
    timeout: float


def _is_local(host: str) -> bool:
    """localhost or a loopback address: the only hosts a blank schema may mean http for."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def bridge_config(conn: Any, *, company: str | None = None, timeout: float | None = None) -> BridgeConfig:
    """Resolve a `qbwc_bridge` connection (shared by the hook and the async trigger)."""
    extra = conn.extra_dejson or {}
    if not conn.host:
        raise ConfigError(f"connection {conn.conn_id} has no host", where="host")
    scheme = (conn.schema or "").strip().lower()
    if not scheme:
        if not _is_local(conn.host):
            raise ConfigError(
                f"connection {conn.conn_id}: schema is blank for host {conn.host!r}; set it to https "
                "(the bearer token must not cross the network in clear), or http on purpose",
                where="schema",
            )
        scheme = "http"
    if scheme not in {"http", "https"}:
        raise ConfigError(
            f"connection {conn.conn_id}: schema must be http or https, got {scheme!r}", where="schema"
        )
    port = f":{conn.port}" if conn.port else ""
    # The UI stores empty strings for unset extras; treat them as absent.
    ca_bundle = extra.get("ca_bundle") or None
    return BridgeConfig(
        base_url=f"{scheme}://{conn.host}{port}",
        token=conn.password or "",
        verify=ca_bundle if ca_bundle else True,
        company=company or extra.get("company") or None,
        timeout=float(timeout or extra.get("timeout") or 30.0),
    )


def classify_response(status: int, body: Any, where: str, retry_after: str | None = None) -> SyncError:
    """Turn a non-2xx answer of the jobs API into the error class that says what to do."""
    detail = body.get("detail") if isinstance(body, dict) else str(body)[:500]
    message = f"bridge answered {status}: {detail}"
    details = {"status": status}
    if isinstance(body, dict) and "errors" in body:
        details["errors"] = body["errors"]
    if status in (401, 403):
        return AuthError(message, where=where, details=details)
    if status == 404 and isinstance(body, dict) and body.get("where") == "company":
        return ConfigError(message, where=where, details=details)
    if status == 422:
        return RecordError(message, where=where, details=details)
    if status == 429:
        seconds = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
        return RateLimitedError(message, retry_after=seconds, where=where, details=details)
    if status >= 500:
        return RetriableSourceError(message, where=where, details=details)
    return FatalSourceError(message, where=where, details=details)


def job_errors(job: dict[str, Any], limit: int = 20) -> list[str]:
    """One line per failed or in-doubt request of a job: index, requestID, status code and the message.

    `in_doubt` (sent, never acknowledged, QuickBooks could not be asked whether it was applied) is
    named as such: it may or may not be in QuickBooks, so it must be checked there, never re-sent blindly.
    """
    lines = []
    for r in job.get("results") or []:
        where = f"request {r['index']} ({r.get('request_id')})"
        if r.get("state") == "in_doubt":
            lines.append(
                f"{where}: IN DOUBT, check QuickBooks before sending it again: {r.get('status_message')}"
            )
        elif r.get("state") == "failed" or (r.get("status_code") or 0) >= 1000:
            lines.append(f"{where}: {r.get('status_code')} {r.get('status_message')}")
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return lines


class QbwcBridgeHook(BaseHook):
    """Enqueue qbXML jobs on the bridge, read them back, wait for them, cancel them."""

    conn_name_attr = "qbwc_bridge_conn_id"
    default_conn_name = "qbwc_bridge_default"
    conn_type = "qbwc_bridge"
    hook_name = "QuickBooks Web Connector bridge"

    def __init__(
        self,
        qbwc_bridge_conn_id: str = default_conn_name,
        *,
        company: str | None = None,
        timeout: float | None = None,
    ):
        super().__init__()
        self.qbwc_bridge_conn_id, self._company, self._timeout = qbwc_bridge_conn_id, company, timeout

    @cached_property
    def config(self) -> BridgeConfig:
        return bridge_config(
            self.get_connection(self.qbwc_bridge_conn_id), company=self._company, timeout=self._timeout
        )

    @cached_property
    def client(self) -> httpx.Client:  # built on first use, never at parse time
        import httpx

        cfg = self.config
        return httpx.Client(
            base_url=cfg.base_url,
            verify=cfg.verify,
            timeout=cfg.timeout,
            headers={"Authorization": f"Bearer {cfg.token}"},
        )

    def get_conn(self) -> httpx.Client:
        return self.client

    def close(self) -> None:
        """Close the HTTP client (and its keep-alive connections) if it was built."""
        if "client" in self.__dict__:
            self.__dict__.pop("client").close()

    def _call(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> dict[str, Any]:
        import httpx

        where = f"{method} {path}"
        try:
            resp = self.client.request(method, path, timeout=timeout or self.config.timeout, **kwargs)
        except httpx.TimeoutException as exc:
            raise RetriableSourceError(f"bridge did not answer in time: {exc}", where=where) from exc
        except httpx.TransportError as exc:
            raise RetriableSourceError(
                f"bridge unreachable: {type(exc).__name__}: {exc}", where=where
            ) from exc
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = resp.text
            raise classify_response(resp.status_code, body, where, resp.headers.get("retry-after"))
        return resp.json()

    def enqueue(
        self,
        requests: list[str],
        *,
        idempotency_key: str,
        company: str | None = None,
        on_error: str = "continue",
    ) -> dict[str, Any]:
        """Queue `requests` (qbXML request elements) for `company`; the same key returns the same job."""
        company = company or self.config.company
        if not company:
            raise ConfigError("no company given and the connection has no `company` extra", where="company")
        body = {"company": company, "requests": list(requests), "on_error": on_error}
        return self._call("POST", API, json=body, headers={"Idempotency-Key": idempotency_key})

    def get_job(self, job_id: str, *, wait: float = 0, results: bool = True) -> dict[str, Any]:
        """Read a job; with `wait` the bridge holds the call until the job finishes or `wait` passes."""
        params = {"wait": wait, "results": str(results).lower()}
        return self._call("GET", f"{API}/{job_id}", params=params, timeout=self.config.timeout + wait)

    def wait(self, job_id: str, *, timeout: float = 3600.0, long_poll: float = 30.0) -> dict[str, Any]:
        """Block until the job is terminal (long-polling), or raise RetriableSourceError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            job = self.get_job(job_id, wait=max(0.0, min(long_poll, left)), results=False)
            if job["state"] in TERMINAL_STATES:
                return self.get_job(job_id)
            if left <= 0:
                raise RetriableSourceError(
                    f"job {job_id} still {job['state']} after {timeout:.0f} s (is the Web Connector running?)",
                    where=f"job {job_id}",
                )

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"{API}/{job_id}")

    def test_connection(self) -> tuple[bool, str]:
        try:
            health = self._call("GET", "/health")
            self._call("GET", API, params={"limit": 1})
        except SyncError as exc:
            return False, str(exc)
        return True, f"bridge healthy (database {health.get('database')}), token accepted"
