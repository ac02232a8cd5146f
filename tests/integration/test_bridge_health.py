"""GET /api/v1/health (issue 15): per company file the last poll, the last successful session, the
queue depth and the requests in doubt; idle polls counted, not listed. Real HTTP to a served bridge,
the simulated Web Connector and QuickBooks company file."""

from __future__ import annotations

import httpx
from test_bridge_support import AUTH, customer_add, enqueue, wc

pytest_plugins = ["test_bridge_support"]


def _health(bridge) -> dict[str, dict]:
    resp = httpx.get(f"{bridge.url}/api/v1/health", headers=AUTH, timeout=30)
    resp.raise_for_status()
    return {c["company"]: c for c in resp.json()}


def test_health_per_company_before_and_after_work(bridge, qb):
    fresh = _health(bridge)
    assert set(fresh) == {"acme", "globex"}
    assert fresh["acme"]["last_poll"] is None and fresh["acme"]["last_successful_session"] is None

    wc(bridge, qb).run_once()  # nothing queued: an idle poll
    enqueue(bridge, [customer_add(f"Health Co {i}") for i in range(3)], key="k-health").raise_for_status()
    queued = _health(bridge)["acme"]
    assert queued["queue_depth"] == 3 and queued["idle_polls_since_work"] == 1
    assert queued["last_poll"] is not None and queued["last_successful_session"] is None

    wc(bridge, qb).run_once()  # the session that does the work
    done = _health(bridge)["acme"]
    assert done["queue_depth"] == 0 and done["unanswered"] == 0 and done["in_doubt"] == 0
    assert done["last_successful_session"] is not None and done["idle_polls_since_work"] == 0
    assert done["last_session_with_work"]["requests_ok"] == 3
    assert _health(bridge)["globex"]["last_poll"] is None  # another company file is untouched

    wc(bridge, qb).run_once()
    wc(bridge, qb).run_once()
    assert _health(bridge)["acme"]["idle_polls_since_work"] == 2


def test_health_needs_a_token(bridge):
    assert httpx.get(f"{bridge.url}/api/v1/health", timeout=30).status_code == 401
