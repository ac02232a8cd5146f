"""`make demo`'s bridge: the summary names a /status address that really opens.

/status needs a token with read (issue 11, security 1). The demo starts the real `qbwc-bridge`
processes (migrate, company add, token revoke/create, serve), here in a temporary .demo folder, and
prints the page's address with the read-only token it created; a browser sends it as HTTP Basic.
"""

from __future__ import annotations

import contextlib
import io

import httpx
import pytest

from erpsync import demo


@pytest.fixture
def stack(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO", tmp_path / ".demo")
    s = demo.DemoStack()
    s.logs = tmp_path / ".demo" / "logs"
    s.logs.mkdir(parents=True)
    s.api_port = 8080  # the summary also names Airflow, which this test does not start
    monkeypatch.setattr(s, "admin_password", lambda: "unused")
    yield s
    s.stop()


def _status_line(stack) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        demo.print_summary({}, stack)
    return next(line for line in out.getvalue().splitlines() if line.startswith("Bridge status:"))


def test_the_summary_says_how_to_open_the_bridge_status_page(stack):
    """The printed address opens with the printed password (any user name); the token only reads.
    A second start (the demo run again on the same .demo) replaces the first run's token."""
    tokens: list[str] = []
    for run in range(2):
        if run:
            stack.stop()
        stack.start_bridge()
        line = _status_line(stack)
        url, token = line.split()[2], stack.status_token
        assert url == f"{stack.bridge_url}/status" and token and f"password {token} " in line, line
        page = httpx.get(url, auth=("anyone", token), timeout=30)
        assert page.status_code == 200 and demo.COMPANY in page.text
        assert httpx.get(url, timeout=30).status_code == 401
        enqueue = httpx.post(
            f"{stack.bridge_url}/api/v1/jobs",
            json={"company": demo.COMPANY, "requests": []},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert enqueue.status_code == 403, enqueue.text  # read-only
        tokens.append(token)
    assert tokens[0] != tokens[1]
    assert httpx.get(url, auth=("anyone", tokens[0]), timeout=30).status_code == 401  # revoked
