"""The smoke DAG runs in a real Airflow (metadata DB, DagBag, task runner) and passes a manifest."""

from __future__ import annotations

import json
from pathlib import Path


def test_smoke_dag_runs_end_to_end(dagbag):
    dag = dagbag.get_dag("erpsync_smoke")
    run = dag.test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states == {"stage_sample": "success", "count_rows": "success"}

    manifest = run.get_task_instance("stage_sample").xcom_pull(task_ids="stage_sample")
    assert manifest["rows"] == 3
    staged = Path(manifest["uri"])
    assert staged.is_file() and run.run_id.replace(":", "_").replace("+", "+") in str(staged.parent)
    assert [json.loads(line)["id"] for line in staged.read_text().splitlines()] == [1, 2, 3]
