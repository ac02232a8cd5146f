"""Service fixtures fail loudly, never skip, when PostgreSQL or Redis is unreachable."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import PROJECT


def test_missing_services_fail_not_skip():
    env = {
        **os.environ,
        "ERPSYNC_TEST_POSTGRES": "postgresql://postgres@127.0.0.1:1/postgres",
        "ERPSYNC_TEST_REDIS": "redis://127.0.0.1:1/0",
    }
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "tests/integration/test_services.py"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1, out.stdout[-2000:]
    assert "2 errors" in out.stdout and "skipped" not in out.stdout, out.stdout[-2000:]
    assert "PostgreSQL is required at postgresql://postgres@127.0.0.1:1/postgres" in out.stdout
    assert "Redis is required at redis://127.0.0.1:1/0" in out.stdout
