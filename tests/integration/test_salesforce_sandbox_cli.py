"""`sandbox up --only salesforce` serves the simulator, writes its state file, and keeps data across runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from erpsync.sandbox.salesforce import airflow_connection


def _up(tmp_path: Path) -> tuple[subprocess.Popen, dict]:
    state_file = tmp_path / "state.json"
    state_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erpsync.sandbox.cli",
            "up",
            "--only",
            "salesforce",
            "--random-ports",
            "--state-file",
            str(state_file),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not state_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"sandbox up did not write its state file: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)
    return proc, json.loads(state_file.read_text())


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sandbox_up_state_file_credentials_work_and_data_survives_a_restart(tmp_path, monkeypatch):
    from erpsync.hooks.salesforce import SalesforceHook

    proc, state = _up(tmp_path)
    try:
        system = state["systems"]["salesforce"]
        assert system["url"].startswith("https://localhost:")
        assert {
            "username",
            "password",
            "security_token",
            "client_id",
            "client_secret",
            "consumer_key",
            "jwt_private_key_file",
            "api_version",
        } <= set(system)
        assert Path(state["ca_bundle"]).is_file() and Path(system["jwt_private_key_file"]).is_file()
        monkeypatch.setenv(
            "AIRFLOW_CONN_SALESFORCE_DEMO", json.dumps(airflow_connection(system, state["ca_bundle"]))
        )
        hook = SalesforceHook("salesforce_demo")
        [result] = hook.upsert(
            "Account", "External_Id__c", [{"External_Id__c": "CLI-1", "Name": "Survivor BV"}]
        )
        assert result.success and result.created
        hook.close()  # an open keep-alive connection would hold the server's graceful shutdown for 10 s
    finally:
        _stop(proc)
    assert (tmp_path / "data" / "salesforce" / "org.json").is_file()

    proc, state = _up(tmp_path)
    try:
        system = state["systems"]["salesforce"]
        monkeypatch.setenv(
            "AIRFLOW_CONN_SALESFORCE_DEMO", json.dumps(airflow_connection(system, state["ca_bundle"], "jwt"))
        )
        hook = SalesforceHook("salesforce_demo")
        rows = [
            r
            for b in hook.query_batches("SELECT Id, Name FROM Account WHERE External_Id__c = 'CLI-1'")
            for r in b
        ]
        assert [r["Id"] for r in rows] == [result.id] and rows[0]["Name"] == "Survivor BV"
        assert sum(map(len, hook.query_batches("SELECT Id FROM Account"))) == 301  # seed + ours, seeded once
        hook.close()
    finally:
        _stop(proc)
    assert os.path.exists(tmp_path / "data" / "ca" / "ca.pem")
