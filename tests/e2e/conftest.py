"""Helpers for end-to-end tests: register test-only DAGs that live outside dags/."""

from __future__ import annotations

from pathlib import Path

import pytest

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
