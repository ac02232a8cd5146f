"""The package runs distributed: CeleryExecutor, the machine's real Redis broker, real PostgreSQL
metadata database (a fresh one for the test), and a separate worker process, each a real Airflow
component."""

from __future__ import annotations

import os
import secrets
import uuid

import pytest

from erpsync.localstack import AirflowApi, LocalProcess, airflow_argv, free_port, wait_for_http
from tests.conftest import PROJECT


@pytest.fixture
def celery_stack(airflow_metadata_url, redis_url, tmp_path):
    from cryptography.fernet import Fernet

    api_port = free_port()
    queue = f"erpsync-test-{uuid.uuid4().hex[:8]}"  # keeps this run's tasks away from any other worker
    result_db = airflow_metadata_url.replace("postgresql+psycopg://", "db+postgresql+psycopg://", 1)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_metadata_url,
        "AIRFLOW__CELERY__BROKER_URL": redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_db,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # Only the DAG under test runs: the sync flows stay paused and nothing is scheduled on its own.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "ERPSYNC_STAGING_ROOT": str(tmp_path / "staging"),
    }
    import subprocess

    subprocess.run(airflow_argv("db", "migrate"), env=env, check=True, capture_output=True)
    logs = tmp_path / "logs"
    procs = [
        LocalProcess(
            "api-server", airflow_argv("api-server", "--port", str(api_port)), env, logs / "api.log"
        ),
        LocalProcess("scheduler", airflow_argv("scheduler"), env, logs / "scheduler.log"),
        LocalProcess("dag-processor", airflow_argv("dag-processor"), env, logs / "dag-processor.log"),
        LocalProcess(
            "worker",
            airflow_argv("celery", "worker", "--queues", queue, "--concurrency", "1"),
            env,
            logs / "worker.log",
        ),
    ]
    try:
        for proc in procs:
            proc.start()
        wait_for_http(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", process=procs[0], timeout=90)
        yield AirflowApi(f"http://127.0.0.1:{api_port}"), queue, procs
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_smoke_dag_runs_on_celery_worker(celery_stack):
    api, queue, procs = celery_stack
    api.wait_for_dag("erpsync_smoke", timeout=120)
    api.unpause("erpsync_smoke")
    run_id = api.trigger("erpsync_smoke")
    run = api.wait_for_run("erpsync_smoke", run_id, timeout=240)
    tis = api.task_instances("erpsync_smoke", run_id)
    worker_log = procs[-1].log_tail(200)
    assert run["state"] == "success", (tis, worker_log)
    assert {ti["task_id"]: ti["state"] for ti in tis} == {"stage_sample": "success", "count_rows": "success"}
    # Both tasks went through the Celery queue this test owns and were executed by its worker process.
    assert {ti["queue"] for ti in tis} == {queue}
    assert all(ti["executor"] in (None, "CeleryExecutor") for ti in tis)
    assert worker_log.count("final_state=success") + worker_log.count("succeeded") >= 2, worker_log
