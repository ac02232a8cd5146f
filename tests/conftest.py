"""Session-wide harness: a throwaway Airflow home, real PostgreSQL and Redis fixtures, markers.

Airflow reads its configuration when it is first imported, so the environment is set here, at
import time of the conftest, before any test module can import airflow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="erpsync-airflow-home-"))
os.environ.update(
    AIRFLOW_HOME=str(_AIRFLOW_HOME),
    AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT / "dags"),
    AIRFLOW__CORE__PLUGINS_FOLDER=str(PROJECT / "plugins"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__UNIT_TEST_MODE="False",
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
    AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(_AIRFLOW_HOME / "logs"),
    ERPSYNC_STAGING_ROOT=str(_AIRFLOW_HOME / "staging"),
    GX_ANALYTICS_ENABLED="false",
    # scrypt at N=2^14 instead of the production 2^17: ~0.05 s per login instead of ~0.4 s, over
    # hundreds of logins. test_bridge_secrets.py checks the production default itself.
    QBWC_BRIDGE_SCRYPT_LOG_N="14",
)
# The qbXML schema is Intuit's and lives outside the repository; tests point the builders at it.
os.environ.setdefault("ERPSYNC_QBXML_SCHEMA_DIR", str(SHARED / "reference" / "qbxml"))

POSTGRES_ADMIN_URL = os.environ.get("ERPSYNC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ERPSYNC_TEST_REDIS", "redis://127.0.0.1:6379/0")

_MARK_BY_FOLDER = {"unit": "unit", "integration": "integration", "e2e": "e2e"}


def pytest_collection_modifyitems(config, items):
    """Mark each test by its folder so `-m unit` runs the fast suite alone."""
    for item in items:
        folder = Path(str(item.fspath)).relative_to(PROJECT / "tests").parts[0]
        if folder in _MARK_BY_FOLDER:
            item.add_marker(getattr(pytest.mark, _MARK_BY_FOLDER[folder]))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the session's SQLite metadata database once (about 4 s) and return the Airflow home."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    """Parse dags/ once, the way the dag-processor does."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT / "dags"))


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """Create a throwaway database on the local PostgreSQL for this session and drop it afterwards.

    Fails (never skips) when PostgreSQL is down: tests that need it must not pass silently.
    """
    import psycopg

    name = f"erpsync_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is required at {POSTGRES_ADMIN_URL} and is not reachable: {exc}", pytrace=False
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Return the local Redis URL after a real PING; fails (never skips) when Redis is down."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is required at {REDIS_URL} and is not reachable: {exc}", pytrace=False)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_namespace(redis_url):
    """A unique key prefix in the real Redis, with every key under it deleted after the test."""
    import redis

    prefix = f"erpsync-test:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(redis_url)
    yield client, prefix
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder beside the project (fixtures and Intuit's schema); fail if it is missing."""
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: clone the project beside shared/ as CI does", pytrace=False)
    return SHARED
