"""`make demo` leaves nothing behind (issue 16): the whole demo as a user runs it, in a folder of its own.

1. `--keep` stopped with SIGTERM: every process it started is gone, the run the user left in flight is
   cancelled (not left half-done), the flows are paused.
2. A run an earlier demo left behind (what a killed Airflow leaves in its database: the run running,
   a task waiting out its retry back-off) is cancelled at start, so the new demo never waits behind it;
   the plain demo waits for the runs it caused, exits 0 and leaves no process and no unfinished run.
3. `--keep` stopped with SIGHUP (a closed terminal): the same as 1.

Real processes throughout (simulators, bridge, Web Connector, Airflow standalone); every wait is for a
condition, with a deadline for a busy 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from erpsync import demo
from erpsync.localstack import AirflowApi

# A whole demo per test: minutes on a busy 2-core machine (the suite's default is 600 s).
pytestmark = pytest.mark.timeout(2400)

FLOWS = demo.FLOWS
KEEP_LINE = "KEEP=1: everything stays up"


class Demo:
    """One `python -m erpsync.demo` process with its output in a file."""

    def __init__(self, folder: Path, *args: str):
        self.folder = folder
        self.out = folder.parent / f"demo-{time.monotonic_ns()}.out"
        env = {**os.environ, "ERPSYNC_DEMO_DIR": str(folder)}
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "erpsync.demo", *args],
                env=env,
                cwd=demo.PROJECT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a signal to the test's group must not reach it
            )

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 1200) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            assert self.proc.poll() is None, (
                f"the demo exited ({self.proc.returncode}):\n{self.text()[-4000:]}"
            )
            time.sleep(0.5)
        pytest.fail(f"{needle!r} not printed within {timeout:.0f}s:\n{self.text()[-4000:]}")

    def exit_code(self, timeout: float = 600) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo did not exit within {timeout:.0f}s:\n{self.text()[-4000:]}")

    def started(self) -> list[psutil.Process]:
        """Every process below the demo now (its ten-odd processes and their children)."""
        return psutil.Process(self.proc.pid).children(recursive=True)

    def api(self) -> AirflowApi:
        m = re.search(
            r"Airflow UI:\s+(http://127\.0\.0\.1:\d+)\s+\(user admin, password (\S+)\)", self.text()
        )
        assert m, self.text()[-2000:]
        return AirflowApi(m.group(1), "admin", m.group(2))


def survivors(procs: list[psutil.Process], sessions: set[int], timeout: float = 60) -> list[str]:
    """Processes of the demo still alive once `timeout` passed (none as soon as all are gone)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        for p in psutil.process_iter(["pid", "name"]):
            try:
                if os.getsid(p.pid) in sessions and p not in alive and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
                continue
        if not alive or time.monotonic() > deadline:
            return [f"{p.pid} {_cmd(p)}" for p in alive]
        time.sleep(0.2)


def _cmd(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:200]
    except psutil.Error:
        return "?"


def airflow_runs(folder: Path) -> list[tuple[str, str, str, str | None]]:
    """(dag_id, run_id, state, note) of every run in the demo's Airflow database."""
    with sqlite3.connect(folder / "airflow" / "airflow.db") as db:
        return db.execute(
            "SELECT r.dag_id, r.run_id, r.state, n.content FROM dag_run r"
            " LEFT JOIN dag_run_note n ON n.dag_run_id = r.id"
        ).fetchall()


def paused(folder: Path) -> dict[str, bool]:
    with sqlite3.connect(folder / "airflow" / "airflow.db") as db:
        return {d: bool(p) for d, p in db.execute("SELECT dag_id, is_paused FROM dag")}


def stop_with(run: Demo, sig: signal.Signals) -> None:
    procs = run.started()
    assert len(procs) >= 8, [_cmd(p) for p in procs]  # simulators, bridge, Web Connector, Airflow's parts
    sessions = {os.getsid(p.pid) for p in procs if p.is_running()} - {os.getsid(0)}
    os.kill(run.proc.pid, sig)
    assert run.exit_code() == 0, run.text()[-3000:]
    assert "stopping every process it started" in run.text()
    left = survivors(procs, sessions)
    assert not left, f"still running after {sig.name}: {left}"


def queue_a_run_in_flight(run: Demo) -> str:
    """A run of the products flow that cannot finish while the demo is up (its flow paused)."""
    api = run.api()
    dag = "exact_items_to_sf_products"
    api._request("PATCH", f"/api/v2/dags/{dag}", {"is_paused": True})
    run_id = api.trigger(dag, conf={"full_refresh": True})
    assert api.run(dag, run_id)["state"] == "queued"
    return run_id


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo") / "demo"


def test_keep_stopped_with_sigterm_stops_everything_and_cancels_runs_in_flight(folder):
    run = Demo(folder, "--keep")
    try:
        run.wait_for(KEEP_LINE)
        summary = json.loads((folder / "demo-summary.json").read_text())
        assert {f: r["state"] for f, r in summary["flows"].items()} == dict.fromkeys(FLOWS, "success")
        in_flight = queue_a_run_in_flight(run)
        stop_with(run, signal.SIGTERM)
    finally:
        run.proc.kill()
    runs = {(d, r): (s, n) for d, r, s, n in airflow_runs(folder)}
    state, note = runs[("exact_items_to_sf_products", in_flight)]
    assert state == "failed" and "cancelled by make demo" in (note or ""), (state, note)
    assert not [k for k, (s, _) in runs.items() if s in ("queued", "running")], runs
    assert all(paused(folder)[f] for f in FLOWS)


def test_a_run_left_by_an_earlier_demo_is_cancelled_and_the_demo_settles_its_own(folder):
    # What a killed demo leaves: the products run still running, its extract waiting out a retry.
    with sqlite3.connect(folder / "airflow" / "airflow.db") as db:
        (run_id,) = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = 'exact_items_to_sf_products' AND state = 'success'"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone()
        db.execute("UPDATE dag_run SET state = 'running', end_date = NULL WHERE run_id = ?", (run_id,))
        db.execute(
            "UPDATE task_instance SET state = 'up_for_retry', end_date = datetime('now'), try_number = 1"
            " WHERE run_id = ? AND task_id = 'source.extract'",
            (run_id,),
        )
        db.execute(
            "UPDATE task_instance SET state = NULL, start_date = NULL, end_date = NULL"
            " WHERE run_id = ? AND task_id NOT IN ('validate', 'source.extract')",
            (run_id,),
        )
        db.execute("UPDATE dag SET is_paused = 0")  # and the flows unpaused, as the old demo left them
    run = Demo(folder)
    code = run.exit_code(timeout=1500)
    out = run.text()
    assert code == 0, out[-4000:]
    assert f"cancelled exact_items_to_sf_products {run_id}" in out, out[-4000:]
    assert "all flows succeeded" in out
    runs = {(d, r): (s, n) for d, r, s, n in airflow_runs(folder)}
    state, note = runs[("exact_items_to_sf_products", run_id)]
    assert state == "failed" and "earlier demo" in (note or ""), (state, note)
    assert not [k for k, (s, _) in runs.items() if s in ("queued", "running")], runs
    assert all(paused(folder)[f] for f in FLOWS)
    # An unchanged rerun wrote nothing, so it caused no asset-triggered run of the orders flow.
    summary = json.loads((folder / "demo-summary.json").read_text())
    assert sum(r["created"] + r["updated"] for r in summary["flows"].values()) == 0, summary
    ids = {f: r["run_id"] for f, r in summary["flows"].items()}
    with sqlite3.connect(folder / "airflow" / "airflow.db") as db:
        later = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = 'sf_orders_to_exact' AND run_type = 'asset_triggered'"
            " AND id > (SELECT id FROM dag_run WHERE run_id = ? AND dag_id = 'sf_orders_to_exact')",
            (ids["sf_orders_to_exact"],),
        ).fetchall()
    assert later == [], later
    assert not [ln for ln in psutil.process_iter(["environ"]) if _demo_env(ln, folder)]


def _demo_env(p: psutil.Process, folder: Path) -> bool:
    try:
        return (p.info.get("environ") or {}).get("ERPSYNC_DEMO_DIR") == str(folder)
    except psutil.Error:
        return False


def test_keep_stopped_with_sighup_stops_everything(folder):
    run = Demo(folder, "--keep")
    try:
        run.wait_for(KEEP_LINE)
        in_flight = queue_a_run_in_flight(run)
        stop_with(run, signal.SIGHUP)
    finally:
        run.proc.kill()
    runs = {(d, r): s for d, r, s, _ in airflow_runs(folder)}
    assert runs[("exact_items_to_sf_products", in_flight)] == "failed"
    assert not [k for k, s in runs.items() if s in ("queued", "running")], runs


def test_the_airflow_ui_is_gone_after_the_demo(folder):
    """Nothing answers on the last demo's Airflow port any more."""
    text = sorted(folder.parent.glob("demo-*.out"))[-1].read_text()
    url = re.search(r"Airflow UI:\s+(http://127\.0\.0\.1:\d+)", text).group(1)
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/api/v2/monitor/health", timeout=5)
