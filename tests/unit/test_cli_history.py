"""`erpsync runs` and `erpsync quarantine` show the run history and what is held back, and why."""

from __future__ import annotations

from erpsync.cli import main
from erpsync.state import QuarantineRecord, StateStore


def test_runs_and_quarantine_listings(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    assert main(["runs", "--state-url", url]) == 0
    assert "no runs recorded" in capsys.readouterr().out
    store.start_run(flow="accounts", run_id="scheduled__1")
    store.finish_run(
        flow="accounts", run_id="scheduled__1", status="success", counts={"created": 7, "quarantined": 1}
    )
    store.quarantine(
        "accounts",
        [
            QuarantineRecord(
                "001X", "check_source", "regex:Email", "Email", "not-an-email", "failed regex:Email"
            )
        ],
        run_id="scheduled__1",
    )
    store.quarantine(
        "accounts", [QuarantineRecord("001Y", "map", "reject", "Phone", "1")], run_id="scheduled__1"
    )
    store.resolve_quarantine("accounts", stage="map", keys=["001Y"], run_id="scheduled__2")

    assert main(["runs", "--state-url", url, "--flow", "accounts"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["flow", "run", "status"]
    assert lines[1].split()[:3] == ["accounts", "scheduled__1", "success"] and " 7 " in f" {lines[1]} "

    assert main(["quarantine", "--state-url", url, "--flow", "accounts"]) == 0
    out = capsys.readouterr().out
    assert "001X" in out and "regex:Email" in out and "not-an-email" in out and "001Y" not in out
    assert main(["quarantine", "--state-url", url, "--flow", "accounts", "--all"]) == 0
    assert "001Y" in capsys.readouterr().out
    assert main(["quarantine", "--state-url", url, "--flow", "orders"]) == 0
    assert "nothing in quarantine for orders" in capsys.readouterr().out
