"""Helpers for end-to-end tests: test-only DAGs that live outside dags/, and a PostgreSQL metadata
database for tests that start Airflow processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_ADMIN_URL

TEST_DAGS = Path(__file__).parent / "dags"


@pytest.fixture(scope="session")
def test_dag(airflow_db):
    """Return a function that parses tests/e2e/dags/<file> and registers its DAG so dag.test() works."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    cache = {}

    def load(dag_id: str, filename: str):
        if dag_id not in cache:
            bag = DagBag(dag_folder=str(TEST_DAGS / filename))
            assert not bag.import_errors, bag.import_errors
            sync_bag_to_db(bag, "dags-folder", None)
            cache[dag_id] = bag.get_dag(dag_id)
        return cache[dag_id]

    return load


@contextmanager
def fresh_database(prefix: str = "erpsync_af") -> Iterator[str]:
    """Create a PostgreSQL database of its own, yield its URL, drop it afterwards.

    Tests that start Airflow processes (scheduler, api-server, dag-processor, workers, triggerer, the
    `airflow` CLI) write the metadata at once; SQLite serializes writers on one file lock and fails a
    writer that waits past its busy timeout ("database is locked"), so only `dag.test()` tests and
    `make demo` use SQLite. Fails, never skips, when PostgreSQL is down.
    """
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is required at {POSTGRES_ADMIN_URL} for Airflow's metadata: {exc}", pytrace=False
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def airflow_metadata_url():
    """A fresh PostgreSQL database for the Airflow metadata of one test's processes (see
    `fresh_database`)."""
    with fresh_database() as url:
        yield url
