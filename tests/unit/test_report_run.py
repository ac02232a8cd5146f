"""The run report: headline, tables, Markdown and HTML output, call summaries merged across tasks."""

from __future__ import annotations

from erpsync.adapters import CallLog
from erpsync.report import RunReport, merge_calls


def _calls(*entries):
    log = CallLog()
    for method, seconds in entries:
        with log.timed(method, "Customer", rows=2) as e:
            pass
        e["seconds"] = seconds
    return log.summary()


def test_merge_calls_totals_and_slowest():
    merged = merge_calls(
        {"extract": _calls(("read", 0.5), ("read", 0.1)), "upsert": _calls(("upsert", 2.0)), "verify": None}
    )
    assert merged["total"] == 3 and merged["by_task"] == {"extract": 2, "upsert": 1}
    assert merged["by_method"] == {"read": 2, "upsert": 1}
    assert [(c["task"], c["seconds"]) for c in merged["slowest"]] == [
        ("upsert", 2.0),
        ("extract", 0.5),
        ("extract", 0.1),
    ]


def test_markdown_and_html_say_what_happened(tmp_path):
    report = RunReport(
        flow="sf_accounts_to_qb_customers",
        run_id="scheduled__2026-05-01",
        status="success",
        counts={"extracted": 10, "created": 3, "updated": 1, "skipped": 5, "quarantined": 1},
        interval=["2026-05-01T00:00:00+00:00", "2026-05-02T00:00:00+00:00"],
        quarantine=[{"stage": "check_source", "rule": "regex:Email", "column": "Email", "rows": 1}],
        resolved=2,
        calls=merge_calls({"upsert": _calls(("upsert", 1.25))}),
        steps={"extract": "done", "upsert": "done"},
    )
    md = report.to_markdown()
    assert (
        "**sf_accounts_to_qb_customers success: 3 created, 1 updated, 5 skipped, 0 failed, 1 quarantined of 10 extracted**"
        in md
    )
    assert "| check_source | regex:Email | Email | 1 |" in md
    assert "| upsert | upsert | Customer | 2 | 1.250 |" in md
    assert "- API calls used: 1" in md and "- left quarantine this run: 2" in md
    files = report.write(tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert files["html"].endswith("report.html") and "<td>regex:Email</td>" in page and "#1a7f37" in page


def test_failed_run_lists_problems_and_escapes_html():
    report = RunReport(
        flow="f<x>",
        run_id="r",
        status="failed",
        counts={},
        steps={"extract": "did not finish"},
        problems=["step extract did not finish (see its log) | <b>"],
    )
    assert "**problem**: step extract did not finish (see its log) \\| <b>" in report.to_markdown()
    page = report.to_html()
    assert "f&lt;x&gt;" in page and "&lt;b&gt;" in page and "#cf222e" in page
    assert report.to_dict()["status"] == "failed"


def test_the_budget_table_counts_every_call_the_systems_saw():
    """With counted HTTP calls (writes included) the report says those, not the adapter operations."""
    report = RunReport(
        flow="sf_accounts_to_autotask",
        run_id="r",
        status="success",
        counts={"updated": 100},
        calls=merge_calls({"upsert": _calls(("upsert", 0.5))}),
        api_usage={
            "autotask": {
                "calls": 112,
                "threshold": 10_000,
                "budget_share": 0.5,
                "waited_seconds": 1.5,
                "rate_limited": 0,
                "reading": {"tenant_count": 2_400, "threshold": 10_000, "read_at": "2026-12-07T22:00:00Z"},
            },
            "exact_online": {"calls": 40, "daily_limit": 5_000, "daily_used": 1_234},
        },
    )
    md = report.to_markdown()
    assert "- API calls used: 152" in md and report.api_calls == 152
    assert "| autotask | 112 | 1.12% of 10,000 | 50% | 2400 / 10000 at 2026-12-07T22:00:00Z | 1.5 | 0 |" in md
    assert "| exact_online | 40 | 1,234 of 5,000 a day | - | - | 0 | 0 |" in md
    assert "<td>1.12% of 10,000</td>" in report.to_html()
    assert RunReport(flow="f", run_id="r", status="success", counts={}, calls={"total": 7}).api_calls == 7
