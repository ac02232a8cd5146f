"""`erpsync prune` removes old runs and expired quarantine payloads from the state store."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from erpsync.cli import main
from erpsync.state import QuarantineRecord, StateStore


def test_prune_command(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url, retention_days=10)
    old = datetime.now(UTC) - timedelta(days=100)
    store.start_run(flow="f", run_id="old", started_at=old)
    store.start_run(flow="f", run_id="recent")
    store.quarantine(
        "f",
        [QuarantineRecord("k", "check_source", "regex", "Email", "a@b", payload={"x": 1})],
        run_id="old",
        now=old,
    )
    staging = tmp_path / "staging"
    old_run, new_run = staging / "dag" / "scheduled__old", staging / "dag" / "scheduled__new"
    for folder in (old_run, new_run):
        folder.mkdir(parents=True)
        (folder / "extract-00000.parquet").write_bytes(b"rows")
    ancient = (datetime.now(UTC) - timedelta(days=45)).timestamp()
    os.utime(old_run / "extract-00000.parquet", (ancient, ancient))
    os.utime(old_run, (ancient, ancient))
    assert main(["prune", "--state-url", url, "--older-than", "30", "--staging-root", str(staging)]) == 0
    out = capsys.readouterr().out
    assert "1 run(s) older than 30 days, 1 expired quarantine payload(s) cleared" in out
    assert "password" not in out
    assert "1 run folder(s) removed" in out
    assert not old_run.exists() and new_run.exists()
    assert [r["run_id"] for r in store.list_runs("f")] == ["recent"]
    assert store.quarantine_entries("f")[0]["payload"] is None


def test_prune_refuses_a_negative_age(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--state-url", f"sqlite:///{tmp_path / 's.db'}", "--older-than", "-3"])
    assert exc.value.code == 2
    assert "must not be negative" in capsys.readouterr().err
