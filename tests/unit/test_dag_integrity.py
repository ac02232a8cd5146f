"""Every DAG file imports cleanly, follows the house policy and parses fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PROJECT

DAG_FILES = sorted(p for p in (PROJECT / "dags").glob("*.py") if not p.name.startswith("_"))
MAX_PARSE_SECONDS = 0.3


def test_dags_folder_has_dags():
    assert DAG_FILES, "dags/ holds no DAG file"


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_file_parses_fast(dagbag, path: Path, monkeypatch):
    """Each file's own top level costs under 0.3 s of CPU and opens no connection.

    Measured after the session's DagBag has imported what every file shares (Airflow's SDK, the
    erpsync engine), the way a dag-processor re-parses a file; CPU time, not wall time, so a busy
    machine does not fail it. Heavy imports are `test_heavy_modules_not_imported_at_parse_time`'s.
    """
    import socket
    import time

    from airflow.dag_processing.dagbag import DagBag

    assert path.name in {Path(s.file).name for s in dagbag.dagbag_stats}, f"{path.name} was not parsed"

    def no_network(self, address, *args, **kwargs):
        raise AssertionError(f"{path.name} opened a connection to {address} while parsing")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    started = time.process_time()
    bag = DagBag(dag_folder=str(path))
    cpu = time.process_time() - started
    assert not bag.import_errors, bag.import_errors
    assert bag.dags, f"{path.name} defines no DAG"
    assert cpu < MAX_PARSE_SECONDS, f"{path.name} took {cpu:.3f} s of CPU to parse"


def test_every_dag_follows_policy(dagbag):
    assert dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.owner and dag.owner != "airflow", f"{dag_id} has no owner"
        assert dag.max_active_runs == 1, f"{dag_id} may run concurrently with itself"
        assert dag.catchup is False, f"{dag_id} catches up by default"
        for t in dag.tasks:
            assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"


def test_heavy_modules_not_imported_at_parse_time(tmp_path):
    """Parsing every DAG file imports none of pandas, GX, simple-salesforce, lxml, pyarrow beyond
    what parsing an empty folder already imports (Airflow itself loads some of them)."""
    import json
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "heavy = {'pandas', 'great_expectations', 'simple_salesforce', 'lxml', 'pyarrow', 'numpy', 'httpx'}\n"
        "DagBag(dag_folder=sys.argv[1])\n"
        "before = heavy & set(sys.modules)\n"
        "bag = DagBag(dag_folder=sys.argv[2])\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "print(json.dumps(sorted((heavy & set(sys.modules)) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), str(PROJECT / "dags")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
