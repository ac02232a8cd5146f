"""`sandbox webconnector --once` plays one Web Connector update against a live bridge from the shell."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx

from erpsync.qbwc_bridge.qbxml import customer_add
from erpsync.sandbox.quickbooks import CompanyFile
from erpsync.sandbox.runner import SandboxCA, SandboxContext
from erpsync.sandbox.webconnector import start_bridge

TOKEN = secrets.token_urlsafe(32)  # a real-looking secret: weak static tokens are refused

SANDBOX = str(Path(sys.executable).with_name("sandbox"))


def test_one_update_from_the_command_line_applies_the_queued_job(tmp_path):
    ctx = SandboxContext(data_dir=tmp_path, ca=SandboxCA(tmp_path / "ca"))
    bridge = start_bridge(ctx, companies={"acme": "s3cret-pw"}, api_token=TOKEN)
    company_file = tmp_path / "acme.sqlite"
    try:
        job = httpx.post(
            f"{bridge.url}/api/v1/jobs",
            json={
                "company": "acme",
                "requests": [customer_add({"Name": "Shell Test BV"}, request_id="1").xml],
            },
            headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "cli-1"},
        ).json()
        env = {**os.environ, "WC_PASSWORD": "s3cret-pw"}
        argv = [
            SANDBOX,
            "webconnector",
            "--url",
            bridge.soap_url,
            "--user",
            "acme",
            "--password-env",
            "WC_PASSWORD",
            "--company-file",
            str(company_file),
            "--once",
        ]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 exchanges" in done.stdout
        state = httpx.get(
            f"{bridge.url}/api/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()
        assert state["state"] == "completed", state
        names = [c["Name"] for c in CompanyFile(company_file).records("Customer")]
        assert names.count("Shell Test BV") == 1

        wrong = subprocess.run(
            [*argv[:-1], "--once"],
            env={**env, "WC_PASSWORD": "wrong"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert wrong.returncode == 1 and "nvu" in wrong.stdout  # QBWC's "not a valid user" answer
    finally:
        bridge.stop()


def test_missing_password_variable_is_a_clear_error(tmp_path):
    argv = [
        SANDBOX,
        "webconnector",
        "--url",
        "http://127.0.0.1:9/qbwc",
        "--user",
        "acme",
        "--password-env",
        "NO_SUCH_VARIABLE_SET",
        "--company-file",
        str(tmp_path / "c.sqlite"),
        "--once",
    ]
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_VARIABLE_SET"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "NO_SUCH_VARIABLE_SET is empty" in done.stderr
