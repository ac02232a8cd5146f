"""Clients of the bridge read an `in_doubt` request as not written and not to be re-sent (issue 11, item 1).

The result rows have the shape `jobs._result` gives them (see test_bridge_reconcile for the bridge side).
"""

from __future__ import annotations

import pytest

from erpsync.adapters.quickbooks import UpsertProgram
from erpsync.hooks.qbwc_bridge import job_errors

pytestmark = pytest.mark.unit


def _in_doubt(index: int, code: int | None) -> dict:
    return {
        "index": index,
        "request_id": f"job.{index}",
        "kind": "CustomerAddRq",
        "state": "in_doubt",
        "status_code": code,
        "status_severity": "Error",
        "status_message": "in doubt: sent to QuickBooks but never acknowledged, and 5 probes could not tell",
        "list_id": None,
        "txn_id": None,
        "edit_sequence": None,
        "record_count": 0,
        "response_xml": None,
        "probe_attempts": 5,
    }


@pytest.mark.parametrize("code", [1010, None])
def test_upsert_program_quarantines_an_in_doubt_add_and_never_retries_it(code):
    """A 1010 probe answer must not make the row look transient: a retry would send the Add again."""
    program = UpsertProgram(
        [{"_source_key": "S1", "Name": "Doubt Co"}], identity="dataext.SalesforceId", prefix="p"
    )
    gen = program.run()
    job = next(gen)
    assert [r.kind for r in job.requests] == ["CustomerAdd"]
    with pytest.raises(StopIteration):
        gen.send([_in_doubt(0, code)])
    row = program.results[0]
    assert row["action"] == "failed" and row["error_code"] == "in_doubt" and row["retriable"] is False, row
    assert "in doubt" in row["error"] and "Doubt Co" in row["error"]


def test_job_errors_names_in_doubt_requests():
    """The operator's failure message says which requests are in doubt, even with no status code."""
    job = {
        "results": [_in_doubt(0, None), _in_doubt(1, 1010), {"index": 2, "state": "done", "status_code": 0}]
    }
    lines = job_errors(job)
    assert len(lines) == 2 and all("IN DOUBT" in line and "check QuickBooks" in line for line in lines), lines
