"""`make demo`: run the main job on the embedded default and print what happened.

Foundation stage: runs the smoke DAG in a real Airflow (SQLite metadata DB in .demo/airflow) and
prints each task's state and the manifest the tasks exchanged. The full demo (simulators, bridge,
Airflow standalone and the three sync flows) replaces this once those pieces exist.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def _airflow_env(home: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "ERPSYNC_STAGING_ROOT": str(home.parent / "staging"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="accepted for `make demo KEEP=1`")
    parser.parse_args(argv)

    home = PROJECT / ".demo" / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(_airflow_env(home))
    started = time.monotonic()
    print(f"[demo] Airflow home {home}; migrating the metadata database ...", flush=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT / "dags"))
    if bag.import_errors:
        print(f"[demo] DAG import errors: {bag.import_errors}", file=sys.stderr)
        return 1
    print(f"[demo] parsed {len(bag.dag_ids)} DAG(s): {', '.join(sorted(bag.dag_ids))}", flush=True)
    run = bag.get_dag("erpsync_smoke").test()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    manifest = run.get_task_instance("stage_sample").xcom_pull(task_ids="stage_sample")
    summary = {
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "state": str(run.state),
        "tasks": states,
        "manifest": manifest,
        "seconds": round(time.monotonic() - started, 1),
    }
    print("[demo] " + json.dumps(summary, indent=2))
    return 0 if run.state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
