"""Refresh-token rotation under concurrency: many worker processes, one refresh per expiry, nothing lost.

Each worker is a real process (as Celery workers are) with its own ExactOnlineHook, talking over
sockets to the simulator, which refuses a reused refresh token and a refresh inside the minimum
token age exactly as Exact does. The token store is the real PostgreSQL (row lock) or SQLite
(BEGIN IMMEDIATE).
"""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from erpsync.errors import AuthError
from erpsync.hooks._exact_tokens import TokenStore
from erpsync.hooks.exact_online import ExactOnlineHook  # imported before fork: workers start warm
from erpsync.sandbox.exact.testing import running_exact

TTL, MIN_AGE, MARGIN = 4, 3, 0.5


def _worker(conn_json: str, barrier, rounds: int, pause: float, results) -> None:
    os.environ["AIRFLOW_CONN_EXACT_ONLINE_DEFAULT"] = conn_json
    try:
        counts = []
        for round_no in range(rounds):
            barrier.wait(timeout=20)
            hook = ExactOnlineHook()  # a new task: nothing cached in memory, only the store is shared
            counts.append(len(hook.get_records("vat/VATCodes", select="Code,Percentage")))
            hook.close()
            if round_no < rounds - 1:
                time.sleep(pause)
        results.put(("ok", os.getpid(), counts))
    except BaseException as exc:  # report everything to the parent, which asserts
        results.put(("error", os.getpid(), f"{type(exc).__name__}: {exc}"))


def _run_workers(conn_json: str, workers: int, rounds: int, pause: float) -> list[tuple]:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(conn_json, barrier, rounds, pause, results)) for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=90) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return outcomes


def _assert_one_refresh_per_expiry(exact, conn_json: str, store_url: str, workers: int) -> None:
    outcomes = _run_workers(conn_json, workers=workers, rounds=2, pause=TTL + 0.3)
    errors = [o for o in outcomes if o[0] != "ok"]
    assert not errors, errors
    assert all(o[2] == [7, 7] for o in outcomes), outcomes  # seven VAT codes each time, every worker
    stats = exact.simulator.oauth.stats
    # Round 1 starts with an empty store, round 2 after the access token expired: one refresh each.
    assert stats["refresh_ok"] == 2, stats
    assert stats["refresh_failed"] == 0, stats
    assert exact.simulator.stats.token_calls == 2  # nothing else reached the token endpoint
    # Nothing lost: the store holds the chain's one live refresh token.
    key = f"{exact.url}|{exact.info['client_id']}|exact_online_default"
    row = TokenStore(store_url).read(key)
    chains = [c for c in exact.simulator.oauth.chains.values() if not c.revoked]
    assert row["refresh_count"] == 2
    assert row["refresh_token"] in {c.refresh_token for c in chains}


def test_eight_processes_refresh_exactly_once_per_expiry_on_postgres(tmp_path, postgres_url):
    """Eight worker processes share one PostgreSQL token store: one refresh per expiry, no failure."""
    with running_exact(tmp_path, access_token_ttl=TTL, min_token_age=MIN_AGE, minutely_limit=1000) as exact:
        conn_json = exact.connection_json(token_store_url=postgres_url, refresh_margin=MARGIN)
        _assert_one_refresh_per_expiry(exact, conn_json, postgres_url, workers=8)


def test_four_processes_refresh_exactly_once_per_expiry_on_sqlite(tmp_path):
    """The default SQLite store serializes refreshes with BEGIN IMMEDIATE: same guarantee on one host."""
    store_url = f"sqlite:///{tmp_path / 'tokens.db'}"
    with running_exact(tmp_path, access_token_ttl=TTL, min_token_age=MIN_AGE, minutely_limit=1000) as exact:
        conn_json = exact.connection_json(token_store_url=store_url, refresh_margin=MARGIN)
        _assert_one_refresh_per_expiry(exact, conn_json, store_url, workers=4)


def test_without_a_shared_store_the_second_worker_loses(tmp_path):
    """Control: two stores seeded with the same refresh token (no lock) make Exact refuse the second."""
    with running_exact(tmp_path, access_token_ttl=TTL, min_token_age=MIN_AGE) as exact:
        first = exact.connection_json(token_store_url=f"sqlite:///{tmp_path / 'a.db'}")
        second = exact.connection_json(token_store_url=f"sqlite:///{tmp_path / 'b.db'}")
        mp = pytest.MonkeyPatch()
        try:
            mp.setenv("AIRFLOW_CONN_EXACT_ONLINE_DEFAULT", first)
            assert ExactOnlineHook().get_records("vat/VATCodes", select="Code")
            mp.setenv("AIRFLOW_CONN_EXACT_ONLINE_DEFAULT", second)
            with pytest.raises(AuthError, match="no longer valid"):
                ExactOnlineHook().get_records("vat/VATCodes", select="Code")
        finally:
            mp.undo()
        assert exact.simulator.oauth.stats["refresh_failed"] == 1
