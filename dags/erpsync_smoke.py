"""
### erpsync_smoke

Proves the deployment works end to end before any external system is involved: the installed
`erpsync` package imports on the worker, the run-scoped staging area is writable, and tasks hand
each other a manifest through XCom rather than the rows themselves.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from erpsync.dag_defaults import default_args


@dag(
    dag_id="erpsync_smoke",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retries=1),
    tags=["erpsync", "smoke"],
    doc_md=__doc__,
)
def erpsync_smoke():
    @task
    def stage_sample(dag_run=None) -> dict:
        """Write three rows to the run's staging folder and return their manifest."""
        import json

        from erpsync.staging import run_staging_dir

        path = run_staging_dir(dag_run.dag_id, dag_run.run_id) / "sample.jsonl"
        rows = [{"id": i, "name": f"Account {i}"} for i in range(1, 4)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return {"uri": str(path), "rows": len(rows)}

    @task
    def count_rows(manifest: dict) -> dict:
        """Read the staged file back and check it holds what the manifest says."""
        from erpsync.staging import staging_path

        lines = staging_path(manifest["uri"]).read_text().splitlines()
        if len(lines) != manifest["rows"]:
            raise ValueError(
                f"{manifest['uri']}: manifest says {manifest['rows']} rows, file has {len(lines)}"
            )
        return {"rows": len(lines)}

    count_rows(stage_sample())


erpsync_smoke()
