"""The deferrable QbwcJobOperator in a real Airflow run: enqueue, defer, trigger, complete (or fail)."""

from __future__ import annotations

import json
import secrets
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_bridge_support import count_customers, customer_add, make_company_file

from erpsync.sandbox.runner import SandboxCA, SandboxContext
from erpsync.sandbox.webconnector import WebConnectorSimulator, start_bridge

TOKEN = secrets.token_urlsafe(32)  # a real-looking secret: weak static tokens are refused


def _register(dag):
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag


def _dag(dag_id: str, requests: list[str]):
    from datetime import datetime, timedelta

    from airflow.sdk import DAG

    from erpsync.operators.qbwc import QbwcJobOperator

    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["test"]) as dag:
        QbwcJobOperator(
            task_id="push_customers",
            requests=requests,
            poll_interval=0.2,
            long_poll=1.0,
            wait_timeout=timedelta(minutes=2),
        )
    return _register(dag)


@pytest.fixture
def live(tmp_path, monkeypatch):
    """A bridge, a company file and a Web Connector that polls every 0.3 s, like a short Auto-Run."""
    ctx = SandboxContext(data_dir=tmp_path, ca=SandboxCA(tmp_path / "ca"))
    bridge = start_bridge(ctx, companies={"acme": "pw"}, api_token=TOKEN)
    host, port = bridge.url.split("://")[1].rsplit(":", 1)
    monkeypatch.setenv(
        "AIRFLOW_CONN_QBWC_BRIDGE_DEFAULT",
        json.dumps(
            {
                "conn_type": "qbwc_bridge",
                "host": host,
                "port": int(port),
                "schema": "http",
                "password": TOKEN,
                "extra": {"company": "acme"},
            }
        ),
    )
    qb = make_company_file(tmp_path / "acme.qbw")
    stop = threading.Event()
    sim = WebConnectorSimulator(bridge.soap_url, "acme", "pw", qb, noop_wait=0.05)
    # The Web Connector first comes by after 1.5 s, so the task finds its job queued and must defer.
    thread = threading.Thread(target=lambda: stop.wait(1.5) or sim.run_every(0.005, stop), daemon=True)
    thread.start()
    yield bridge, qb
    stop.set()
    thread.join(10)
    bridge.stop()


def test_deferrable_operator_completes_once_the_web_connector_ran(airflow_db, live, capfd, caplog):
    _, qb = live
    dag = _dag("qbwc_operator_probe", [customer_add("Airflow Co 1"), customer_add("Airflow Co 2")])
    run = dag.test()
    ti = run.get_task_instance("push_customers")
    assert run.state == "success", ti.state
    manifest = ti.xcom_pull(task_ids="push_customers")
    assert manifest["state"] == "completed" and manifest["counts"]["done"] == 2
    assert set(manifest) == {"job_id", "company", "state", "counts"}  # a manifest, not the results
    assert count_customers(qb, "Airflow Co 1") == 1 and count_customers(qb, "Airflow Co 2") == 1
    # Airflow logs to stdout or through logging depending on what configured it first: read both.
    out = "".join(capfd.readouterr()) + caplog.text
    assert "DEFERRED" in out and "Trigger completed" in out  # it waited in the trigger


def test_failed_job_fails_the_task_with_the_per_request_errors(airflow_db, live, capfd, caplog):
    _, qb = live
    dag = _dag("qbwc_operator_probe_dup", [customer_add("Dup Co"), customer_add("Dup Co")])
    run = dag.test()
    ti = run.get_task_instance("push_customers")
    assert run.state == "failed" and ti.state == "failed"
    out = "".join(capfd.readouterr()) + caplog.text
    assert "request 1" in out and "3100" in out
    assert count_customers(qb, "Dup Co") == 1
