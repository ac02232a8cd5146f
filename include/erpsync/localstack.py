"""Start and stop local Airflow (and other) processes for the demo and the end-to-end tests.

Each process runs in its own session (setsid) so stopping it stops its children too: Airflow's
standalone, scheduler and worker all fork. Logs go to files; nothing is left running after `stop`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AirflowApi", "LocalProcess", "free_port", "wait_for_http"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class LocalProcess:
    """One long-running command in its own process group, logging to `log_path`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path | None = None
    _popen: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> LocalProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def alive(self) -> bool:
        return bool(self._popen) and self._popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole group, then SIGKILL whatever is left after `timeout` seconds."""
        if not self._popen or self._popen.poll() is not None:
            return
        pgid = self._popen.pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            try:
                self._popen.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; give its children the same signal in case they outlived it.
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return


def wait_for_http(url: str, *, timeout: float = 60.0, process: LocalProcess | None = None, ok=None) -> dict:
    """Poll `url` until it answers 200 (and `ok(json)` holds, if given); raise with the log tail if not."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited before {url} was up:\n{process.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = json.loads(resp.read() or b"{}")
                if ok is None or ok(body):
                    return body
                last = json.dumps(body)[:500]
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as exc:
            last = repr(exc)
        time.sleep(0.5)
    tail = process.log_tail() if process else ""
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s (last: {last})\n{tail}")


def airflow_argv(*args: str) -> list[str]:
    """The airflow CLI of this interpreter's environment (no reliance on PATH)."""
    return [str(Path(sys.executable).with_name("airflow")), *args]


@dataclass
class AirflowApi:
    """A small client for Airflow's REST API v2, enough to unpause, trigger and watch runs."""

    base_url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    _token: str | None = field(default=None, repr=False)

    #: pauses before retrying an idempotent call the server failed (HTTP 5xx): on SQLite the
    #: standalone's api-server answers "Database error" while the scheduler holds the write lock
    retry_pauses: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)

    def _request(self, method: str, path: str, body: dict | None = None, *, auth: bool = True) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        idempotent = method in ("GET", "PUT", "PATCH", "DELETE")
        for attempt in range(len(self.retry_pauses) + 1):
            req = urllib.request.Request(self.base_url + path, data=data, method=method)
            req.add_header("Content-Type", "application/json")
            if auth:
                req.add_header("Authorization", f"Bearer {self.token()}")
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:1000]
                if idempotent and exc.code >= 500 and attempt < len(self.retry_pauses):
                    time.sleep(self.retry_pauses[attempt])
                    continue
                raise RuntimeError(f"{method} {path} -> HTTP {exc.code}: {detail}") from exc
        raise AssertionError("unreachable")

    def token(self) -> str:
        if self._token is None:
            if self.username:
                body = {"username": self.username, "password": self.password}
                self._token = self._request("POST", "/auth/token", body, auth=False)["access_token"]
            else:  # SIMPLE_AUTH_MANAGER_ALL_ADMINS=True
                self._token = self._request("GET", "/auth/token", auth=False)["access_token"]
        return self._token

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def ensure_pool(self, name: str, slots: int, description: str = "") -> None:
        """Create the pool, or set its slots if it exists (idempotent)."""
        body = {"name": name, "slots": slots, "description": description, "include_deferred": False}
        try:
            self._request("POST", "/api/v2/pools", body)
        except RuntimeError as exc:
            if "HTTP 409" not in str(exc):
                raise
            self._request("PATCH", f"/api/v2/pools/{name}", body)

    def trigger(self, dag_id: str, conf: dict | None = None, logical_date: str | None = None) -> str:
        body = {"logical_date": logical_date, "conf": conf or {}}
        return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        quoted = urllib.request.quote(run_id, safe="")
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances")["task_instances"]

    def wait_for_dag(self, dag_id: str, *, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._request("GET", f"/api/v2/dags/{dag_id}")
                return
            except RuntimeError:
                time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} was not parsed within {timeout:.0f}s")

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float = 300.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(dag_id, run_id)
            if run["state"] in {"success", "failed"}:
                return run
            time.sleep(1)
        raise TimeoutError(f"{dag_id} {run_id} still {run['state']} after {timeout:.0f}s")

    def dag_runs(self, dag_id: str, *, limit: int = 100) -> list[dict]:
        """The DAG's runs (every run type), oldest logical date first."""
        path = f"/api/v2/dags/{dag_id}/dagRuns?order_by=logical_date&limit={limit}"
        return self._request("GET", path)["dag_runs"]

    def backfills(self, dag_id: str) -> list[dict]:
        """The DAG's backfills (`airflow backfill create` or `POST /api/v2/backfills`), oldest first."""
        return self._request("GET", f"/api/v2/backfills?dag_id={urllib.request.quote(dag_id)}")["backfills"]

    def wait_for_runs(self, dag_id: str, count: int, *, timeout: float = 300.0) -> list[dict]:
        """Wait until the DAG has `count` runs and every one has finished; return them (oldest first).

        For backfills, rather than the backfill's `completed_at`: the scheduler sets that only on a
        fixed 30-second timer after the last run ends.
        """
        deadline = time.monotonic() + timeout
        runs: list[dict] = []
        while time.monotonic() < deadline:
            runs = self.dag_runs(dag_id)
            if len(runs) >= count and all(r["state"] in {"success", "failed"} for r in runs):
                return runs
            time.sleep(1)
        states = [(r["dag_run_id"], r["state"]) for r in runs]
        raise TimeoutError(f"{dag_id}: {count} finished runs expected after {timeout:.0f}s, have {states}")
