"""The Autotask call ledger shared by several hosts (connection extra ``ledger_url``) on the real PostgreSQL.

"Hosts" are separate Python processes, each with its own SQLite ``ledger_path`` (what a second machine
would have) and the same ``ledger_url``. They start their calls at the same moment (each waits for a
go-file the test creates once all are ready: a condition, not a sleep), so increments and budget
checks really meet in the database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from erpsync.errors import ConfigError
from tests.conftest import PROJECT
from tests.pg import schema_url

_PRELUDE = r"""
import json, os, sys, time
from pathlib import Path
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
"""

_WAIT_FOR_GO = r"""
ready.write_text("ready")
deadline = time.monotonic() + 120
while not go.exists():
    if time.monotonic() > deadline:
        raise SystemExit("no go signal")
    time.sleep(0.002)
"""

# Count calls straight into the ledger: 400 recorded and 300 reserved (with room for all) per process.
_COUNT = (
    _PRELUDE
    + r"""
from erpsync.hooks._autotask_ledger import SqlLedger
ledger = SqlLedger(sys.argv[3])
"""
    + _WAIT_FOR_GO
    + r"""
reserved = 0
for i in range(700):
    if i % 7 < 3:
        reserved += ledger.reserve("tenant-a", time.time(), 10**9) is not None
    else:
        ledger.record("tenant-a", time.time())
ledger.close()
print(json.dumps({"reserved": reserved}))
"""
)

# Reserve calls against a cap of 500 as fast as possible: 400 tries per process.
_RESERVE = (
    _PRELUDE
    + r"""
from erpsync.hooks._autotask_ledger import SqlLedger
ledger = SqlLedger(sys.argv[3])
"""
    + _WAIT_FOR_GO
    + r"""
granted = sum(ledger.reserve("tenant-c", time.time(), 500) is not None for _ in range(400))
ledger.close()
print(json.dumps({"granted": granted}))
"""
)

# A whole hook on its "host": query/count against the simulator until the package's share is used up.
_HOOK = (
    _PRELUDE
    + r"""
from erpsync.errors import RateLimitedError
from erpsync.hooks.autotask import AutotaskHook
hook = AutotaskHook(max_wait=0)
_ = hook.settings, hook.ledger  # connection and ledger opened before the start
"""
    + _WAIT_FOR_GO
    + r"""
refused = None
for _ in range(200):
    try:
        hook.count("Companies")
    except RateLimitedError as exc:
        refused = exc.message
        break
print(json.dumps({"calls": hook.api_calls, "by_kind": hook.calls, "refused": refused}))
hook.close()
"""
)


def _run_together(tmp_path: Path, script: str, args: list[str], env=None, n: int = 2) -> list[dict]:
    """Start `n` processes of `script`, let them go at once, return each one's JSON line.

    :param env: a function of the process number returning its extra environment variables.
    """
    import os

    go = tmp_path / "go"
    procs = []
    for i in range(n):
        ready = tmp_path / f"ready-{i}"
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(ready), str(go), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=PROJECT,
            env={**os.environ, **(env(i) if env else {})},
        )
        procs.append((ready, proc))
    deadline = time.monotonic() + 180
    while not all(r.exists() for r, _ in procs):
        dead = [p for _, p in procs if p.poll() is not None]
        if dead:
            _, err = dead[0].communicate()
            pytest.fail(f"a process ended before the start: {err[-3000:]}")
        assert time.monotonic() < deadline, "processes never got ready"
        time.sleep(0.01)
    go.write_text("go")
    results = []
    for _, p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.fixture
def ledger_url(postgres_url):
    return schema_url(postgres_url, "ledger")


def test_two_hosts_counting_at_the_same_moment_lose_no_increment(tmp_path, ledger_url):
    from erpsync.hooks._autotask_ledger import SqlLedger

    results = _run_together(tmp_path, _COUNT, [ledger_url])
    assert [r["reserved"] for r in results] == [300, 300]
    ledger = SqlLedger(ledger_url)
    try:
        assert ledger.total("tenant-a") == 1400
        assert sum(n for _, n in ledger.window("tenant-a", time.time())) == 1400
        assert ledger.total("tenant-b") == 0
    finally:
        ledger.close()


def test_two_hosts_reserving_at_once_never_pass_the_cap_together(tmp_path, ledger_url):
    """800 reservations race for 500 places: exactly 500 are granted (the check and the count are one
    locked step), and each host got some."""
    from erpsync.hooks._autotask_ledger import SqlLedger

    results = _run_together(tmp_path, _RESERVE, [ledger_url])
    assert sum(r["granted"] for r in results) == 500, results
    assert all(r["granted"] >= 100 for r in results), results
    ledger = SqlLedger(ledger_url)
    try:
        assert ledger.total("tenant-c") == 500
    finally:
        ledger.close()


def test_two_hosts_keep_one_budget_together(tmp_path, ledger_url):
    """Two hosts at once on one tenant (400 an hour, a 10 % share = 40): together they send exactly 40
    calls (threshold reads included) and are then refused; the tenant saw 40, nothing was refused by it."""
    from erpsync.hooks._autotask_ledger import SqlLedger
    from erpsync.sandbox.autotask.testing import running_autotask

    with running_autotask(tmp_path / "at", seed=False, threshold=400, threshold_latency_scale=0) as sim:

        def env(i: int) -> dict:
            conn = sim.connection(
                ledger_path=str(tmp_path / f"host-{i}.sqlite"), ledger_url=ledger_url, budget_share=0.1
            )
            return {"AIRFLOW_CONN_AUTOTASK_DEFAULT": json.dumps(conn)}

        results = _run_together(tmp_path, _HOOK, [], env=env)
        stats = sim.admin("GET", "stats")
    assert all(r["refused"] and "of its 40 requests per hour" in r["refused"] for r in results), results
    assert sum(r["calls"] for r in results) == 40, results
    assert stats["threshold_count"] == 40 and stats["refused"] == 0, stats
    assert all(r["calls"] > 0 for r in results), results  # both hosts got to work
    ledger = SqlLedger(ledger_url)
    try:
        assert ledger.total(sim.username.lower()) == 40
    finally:
        ledger.close()


def test_ledger_url_must_be_postgresql_and_reachable(tmp_path):
    from erpsync.hooks._autotask_ledger import SqlLedger

    with pytest.raises(ConfigError, match="must be a PostgreSQL URL") as e:
        SqlLedger(f"sqlite:///{tmp_path / 'x.db'}")
    assert "ledger_path" in e.value.message
    with pytest.raises(ConfigError, match="not a database URL"):
        SqlLedger("no url at all")
    with pytest.raises(ConfigError, match="cannot open the Autotask call ledger"):
        SqlLedger("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
