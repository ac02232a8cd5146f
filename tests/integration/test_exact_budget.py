"""One budget for Exact's limits shared by every Exact task: two real processes, one ledger, the simulator
counting what actually arrives (SQLite on one host, PostgreSQL for several)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from erpsync.hooks._exact_budget import SqlBudget, SqliteBudget, Windows
from erpsync.sandbox.exact.testing import running_exact
from tests.conftest import PROJECT
from tests.pg import schema_url

DIV = 1001234

HOOK_SCRIPT = r"""
import json, sys, time
from pathlib import Path
ready, go, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
from erpsync.errors import RateLimitedError
from erpsync.hooks.exact_online import ExactOnlineHook

hook = ExactOnlineHook()
hook.division  # tokens and division first (Me is free; hrm/Divisions counts)
ready.write_text("ready")
deadline = time.monotonic() + 120
while not go.exists():
    if time.monotonic() > deadline:
        raise SystemExit("no go signal")
    time.sleep(0.002)
done, refused = 0, []
for _ in range(n):
    try:
        hook.get_records("vat/VATCodes")
        done += 1
    except RateLimitedError as exc:
        refused.append(str(exc))
print(json.dumps({"done": done, "refused": refused, "usage": hook.usage()}))
hook.close()
"""

RESERVE_SCRIPT = r"""
import json, sys, time
from pathlib import Path
ready, go, url, n = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
from erpsync.hooks._exact_budget import SqlBudget, Windows

budget = SqlBudget(url)
windows = Windows(minute=3600.0, day=86400.0)
budget.observe("k", time.time(), windows, {"daily_limit": 250, "minutely_limit": 100000})
ready.write_text("ready")
while not go.exists():
    time.sleep(0.002)
granted = sum(budget.reserve("k", time.time(), windows).granted for _ in range(n))
print(json.dumps({"granted": granted}))
budget.close()
"""


def _together(tmp_path: Path, script: str, args: list[str], env: dict[str, str], n: int = 2) -> list[dict]:
    """Start `n` processes of `script`, wait until each is ready, let them go at once; return their JSON."""
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
            env={**os.environ, **env},
        )
        procs.append((ready, proc))
    deadline = time.monotonic() + 240
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


def _env(exact, tmp_path: Path) -> dict[str, str]:
    return {
        "AIRFLOW_CONN_EXACT_ONLINE_DEFAULT": exact.connection_json(
            refresh_token=exact.new_consent(), token_store_url=f"sqlite:///{tmp_path / 'tokens.db'}"
        )
    }


def test_two_processes_share_the_daily_budget_and_never_send_past_it(tmp_path):
    with running_exact(tmp_path / "exact", daily_limit=20, minutely_limit=10_000, error_budget=0) as exact:
        results = _together(tmp_path, HOOK_SCRIPT, ["15"], _env(exact, tmp_path))
        arrived = exact.simulator.stats.division_calls[str(DIV)]
        # 2 division look-ups (hrm/Divisions) + the VAT reads that fit: exactly Exact's 20, and no
        # call was sent only to be refused: every refusal happened before sending.
        assert arrived == 20
        assert sum(r["done"] for r in results) == 18
        assert exact.simulator.limits.refused == {"minutely": 0, "daily": 0}
        refused = [m for r in results for m in r["refused"]]
        assert len(refused) == 30 - 18 and all("daily API" in m for m in refused), refused
        # Each process's report figures: its own calls, and the shared day's count and limit.
        assert sum(r["usage"]["calls"] for r in results) == 20
        assert {r["usage"]["daily_limit"] for r in results} == {20}
        assert {r["usage"]["daily_used"] for r in results} == {20}


def test_two_processes_share_the_minute_without_a_single_429(tmp_path):
    with running_exact(
        tmp_path / "exact", minutely_limit=4, minute_seconds=1.5, daily_limit=100_000, error_budget=0
    ) as exact:
        results = _together(tmp_path, HOOK_SCRIPT, ["6"], _env(exact, tmp_path))
        assert [r["done"] for r in results] == [6, 6]
        assert exact.simulator.stats.division_calls[str(DIV)] == 14
        assert exact.simulator.limits.refused == {"minutely": 0, "daily": 0}
        assert sum(r["usage"]["rate_limited"] for r in results) == 0
        # 14 calls at 4 per 1.5-second window: somebody waited for a window to open.
        assert sum(r["usage"]["waited_seconds"] for r in results) > 0


def test_sqlite_budget_rolls_its_windows_and_learns_exacts_limits(tmp_path):
    budget = SqliteBudget(str(tmp_path / "b.sqlite"))
    w = Windows(minute=10.0, day=100.0, minutely_margin=1)
    t = 1_000_000.0  # the start of a minute and of a day (both divide it)
    assert [budget.reserve("k", t, w).granted for _ in range(60)] == [True] * 59 + [False]
    spent = budget.reserve("k", t + 1, w)
    assert (spent.limit, spent.reset_at) == ("minutely", t + 10)
    assert budget.reserve("k", t + 10, w).granted  # a new minute
    # Exact says only 3 calls a minute and 62 a day, 2 used of the day elsewhere: the ledger follows.
    budget.observe(
        "k",
        t + 11,
        w,
        {"minutely_limit": 3, "daily_limit": 62, "daily_remaining": 0, "daily_reset": t + 100},
    )
    day = budget.reserve("k", t + 21, w)
    assert (day.granted, day.limit, day.reset_at) == (False, "daily", t + 100)
    # An answer about the previous window (its reset has passed) does not fill the new one.
    budget.observe("k", t + 101, w, {"minutely_limit": 3, "minutely_remaining": 0, "minutely_reset": t + 100})
    assert budget.reserve("k", t + 101, w).granted
    assert budget.used("k", t + 101, w) == {
        "minute_used": 1,
        "minute_limit": 3,
        "day_used": 1,
        "day_limit": 62,
    }
    budget.close()


def test_postgres_budget_grants_exactly_the_days_calls_to_two_hosts(tmp_path, postgres_url):
    url = schema_url(postgres_url, "exact_budget")
    results = _together(tmp_path, RESERVE_SCRIPT, [url, "200"], {})
    assert sum(r["granted"] for r in results) == 250
    budget = SqlBudget(url)
    assert budget.used("k", time.time(), Windows(minute=3600.0))["day_used"] == 250
    budget.close()


def test_a_bad_budget_location_is_a_config_error_naming_the_extra(tmp_path):
    from erpsync.errors import ConfigError

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="budget_path"):
        SqliteBudget(str(tmp_path / "file" / "b.sqlite"))
    with pytest.raises(ConfigError, match="budget database"):
        SqlBudget("postgresql+psycopg://nobody@127.0.0.1:1/none")
