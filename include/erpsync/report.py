"""The run report: what a run created, updated, skipped and quarantined, and what it cost.

Built from the small manifests the tasks passed through XCom and the state store's quarantine,
never from the rows. One report is written per run as Markdown (task log, pull requests, chat) and
as HTML (opened from the staging area), and its summary is stored in the run history.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["COUNT_NAMES", "RunReport", "merge_calls"]

COUNT_NAMES = (
    "extracted",
    "created",
    "updated",
    "skipped",
    "failed",
    "quarantined",
    "conflicts",
    "unplaceable",
)


def merge_calls(summaries: dict[str, dict[str, Any] | None], slowest: int = 5) -> dict[str, Any]:
    """Merge per-task call summaries (`CallLog.summary()`) into one: totals per task and method, slowest."""
    by_task: dict[str, int] = {}
    by_method: dict[str, int] = {}
    calls: list[dict[str, Any]] = []
    for task, summary in summaries.items():
        if not summary:
            continue
        by_task[task] = int(summary.get("total", 0))
        for method, n in (summary.get("by_method") or {}).items():
            by_method[method] = by_method.get(method, 0) + int(n)
        calls.extend({**c, "task": task} for c in summary.get("slowest") or [])
    calls.sort(key=lambda c: c.get("seconds", 0), reverse=True)
    return {
        "total": sum(by_task.values()),
        "by_task": by_task,
        "by_method": by_method,
        "slowest": calls[:slowest],
    }


@dataclass
class RunReport:
    """Everything one run did, small enough for XCom and the run history.

    :param status: success, errors (every step finished, but the run's only news is rows it could
        not write: nothing created or updated, rows quarantined for the first time), failed (a step
        did not finish) or dry_run.
    :param counts: extracted/created/updated/skipped/failed/quarantined/conflicts/unplaceable.
    :param quarantine: open entries seen in this run, by stage, rule and column.
    :param new_quarantine: source keys quarantined for the first time in this run.
    :param calls: merged call summary (`merge_calls`).
    :param problems: one line per step that did not finish (the run failed).
    :param warnings: things a reader should know that did not fail the run.
    :param api_usage: the real HTTP calls per system (`merge_api_usage`) with their budget figures,
        for systems whose hooks count them (Autotask, Exact Online); these are the calls a run used.
    """

    flow: str
    run_id: str
    status: str
    counts: dict[str, int]
    interval: list[str | None] = field(default_factory=lambda: [None, None])
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    resolved: int = 0
    calls: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duration_seconds: float | None = None
    new_quarantine: int = 0
    api_usage: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def api_calls(self) -> int:
        """Calls the run used: the systems' counted HTTP calls where known, else the adapter operations."""
        if self.api_usage:
            return sum(int(u.get("calls") or 0) for u in self.api_usage.values())
        return int(self.calls.get("total", 0))

    @property
    def headline(self) -> str:
        c = self.counts
        return (
            f"{self.flow} {self.status}: {c.get('created', 0)} created, {c.get('updated', 0)} updated, "
            f"{c.get('skipped', 0)} skipped, {c.get('failed', 0)} failed, "
            f"{c.get('quarantined', 0)} quarantined of {c.get('extracted', 0)} extracted"
        )

    def _tables(self) -> list[tuple[str, list[str], list[list[Any]]]]:
        tables = [
            ("Counts", ["what", "rows"], [[n, self.counts.get(n, 0)] for n in COUNT_NAMES]),
            ("Steps", ["step", "result"], [[k, v] for k, v in self.steps.items()]),
            (
                "Quarantine by rule",
                ["stage", "rule", "column", "rows"],
                [[q["stage"], q["rule"], q["column"], q["rows"]] for q in self.quarantine],
            ),
            (
                "API budget",
                ["system", "calls", "of the hour", "share allowed", "last reading", "waited (s)", "429s"],
                [_budget_row(system, u) for system, u in sorted(self.api_usage.items())],
            ),
            (
                "API calls",
                ["method", "calls"],
                [[m, n] for m, n in sorted((self.calls.get("by_method") or {}).items())],
            ),
            (
                "Slowest calls",
                ["task", "method", "object", "rows", "seconds"],
                [
                    [
                        c.get("task"),
                        c.get("method"),
                        c.get("object"),
                        c.get("rows"),
                        f"{c.get('seconds', 0):.3f}",
                    ]
                    for c in self.calls.get("slowest") or []
                ],
            ),
        ]
        return [t for t in tables if t[2]]

    def to_markdown(self) -> str:
        lines = [f"# Run report: {self.flow}", "", f"**{self.headline}**", ""]
        lines += [
            f"- run: `{self.run_id}`",
            f"- interval: {self.interval[0] or '-'} to {self.interval[1] or '-'}",
            f"- API calls used: {self.api_calls}",
            f"- left quarantine this run: {self.resolved}",
            f"- newly quarantined this run: {self.new_quarantine}",
        ]
        if self.duration_seconds is not None:
            lines.append(f"- duration: {self.duration_seconds:.1f} s")
        for problem in self.problems:
            lines.append(f"- **problem**: {_md(problem)}")
        for warning in self.warnings:
            lines.append(f"- warning: {_md(warning)}")
        for title, head, rows in self._tables():
            lines += ["", f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(_md(v) for v in row) + " |" for row in rows]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        e = html.escape
        colour = {"success": "#1a7f37", "dry_run": "#9a6700"}.get(self.status, "#cf222e")
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>Run report: {e(self.flow)}</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>",
            f"<h1>Run report: {e(self.flow)}</h1>",
            f"<p style='color:{colour}'><strong>{e(self.headline)}</strong></p><ul>",
            f"<li>run: <code>{e(self.run_id)}</code></li>",
            f"<li>interval: {e(str(self.interval[0] or '-'))} to {e(str(self.interval[1] or '-'))}</li>",
            f"<li>API calls used: {self.api_calls}</li>",
            f"<li>left quarantine this run: {self.resolved}</li>",
        ]
        parts += [f"<li><strong>problem</strong>: {e(p)}</li>" for p in self.problems]
        parts += [f"<li>warning: {e(w)}</li>" for w in self.warnings]
        parts.append("</ul>")
        for title, head, rows in self._tables():
            parts.append(
                f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
            )
            parts += ["<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in rows]
            parts.append("</table>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"

    def write(self, directory: Path | str) -> dict[str, str]:
        """Write report.md and report.html into `directory` (a folder or object storage); return their paths."""
        from erpsync.staging import is_remote, write_bytes_atomic

        directory = directory if is_remote(directory) else Path(directory)
        md, page = directory / "report.md", directory / "report.html"
        write_bytes_atomic(md, self.to_markdown().encode("utf-8"))
        write_bytes_atomic(page, self.to_html().encode("utf-8"))
        return {"markdown": str(md), "html": str(page)}


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _budget_row(system: str, usage: dict[str, Any]) -> list[Any]:
    """One system's calls against its budget: the share of the tenant's hour (or the day's limit)."""
    calls = int(usage.get("calls") or 0)
    if usage.get("threshold"):
        of_hour = f"{calls / usage['threshold']:.2%} of {usage['threshold']:,}"
    elif usage.get("daily_limit"):
        of_hour = f"{usage.get('daily_used', calls):,} of {usage['daily_limit']:,} a day"
    else:
        of_hour = "-"
    share = f"{usage['budget_share']:.0%}" if usage.get("budget_share") else "-"
    reading = usage.get("reading") or {}
    last = (
        f"{reading.get('tenant_count')} / {reading.get('threshold')} at {reading.get('read_at')}"
        if reading.get("threshold")
        else "-"
    )
    return [system, calls, of_hour, share, last, usage.get("waited_seconds", 0), usage.get("rate_limited", 0)]
