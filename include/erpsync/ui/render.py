"""HTML for the erpsync pages: plain server-rendered pages with inline CSS and SVG charts.

Everything shown is escaped here; the routes only pass rows from the state store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

__all__ = ["COUNT_COLOURS", "chart_svg", "flow_page", "index_page", "page"]

#: one colour per run count, used by the table and the chart alike
COUNT_COLOURS = {
    "created": "#2e7d32",
    "updated": "#1565c0",
    "skipped": "#9e9e9e",
    "quarantined": "#ef6c00",
    "failed": "#c62828",
}

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.2rem;color:#1b1b1b;font-size:14px}
h1{font-size:1.4rem;margin:0 0 .6rem} h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
table{border-collapse:collapse;margin:.3rem 0} th,td{border-bottom:1px solid #ddd;padding:.25rem .55rem;
text-align:left;vertical-align:top} th{background:#f3f5f8} td.n{text-align:right;font-variant-numeric:tabular-nums}
.status-success{color:#2e7d32}.status-errors{color:#ef6c00}.status-failed{color:#c62828}
.note{color:#555}.msg{background:#e8f5e9;border:1px solid #a5d6a7;padding:.4rem .7rem;margin:.5rem 0}
.err{background:#ffebee;border-color:#ef9a9a}.charts{display:flex;gap:1.2rem;flex-wrap:wrap}
button{padding:.3rem .8rem} code{background:#f3f3f3;padding:0 .2rem}
"""


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else escape(str(value))


def run_link(dag_id: str, run_id: str | None) -> str:
    """A link to the run's page in the Airflow UI (the top frame, since these pages live in an iframe)."""
    if not run_id:
        return ""
    href = f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f"<a href='{escape(href)}' target='_top' class='run-link'>{escape(run_id)}</a>"


def index_page(flows: Sequence[Mapping[str, Any]], bridge: Mapping[str, Any] | None = None) -> str:
    rows = "".join(
        f"<tr><td><a href='flows/{quote(f['flow'], safe='')}'>{escape(f['flow'])}</a></td>"
        f"<td>{_when(f.get('last_started'))}</td><td>{escape(str(f.get('last_status') or ''))}</td>"
        f"<td class='n'>{int(f.get('open_quarantine') or 0)}</td></tr>"
        for f in flows
    )
    body = (
        "<h1>ERP sync</h1><table id='flows'><tr><th>flow</th><th>last run</th><th>status</th>"
        f"<th>open quarantine</th></tr>{rows}</table>"
    )
    if not flows:
        body += "<p class='note'>No flow has run yet.</p>"
    if bridge is not None:
        body += bridge_section(bridge)
    return page("ERP sync", body)


def _epoch(ts: float | None) -> str:
    if not ts:
        return "never"
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def bridge_section(bridge: Mapping[str, Any]) -> str:
    """Web Connector health per company file, from the bridge's /api/v1/health."""
    out = ["<h2>QuickBooks Web Connector</h2>"]
    if bridge.get("error"):
        return out[0] + f"<p class='note' id='bridge-error'>{escape(str(bridge['error']))}</p>"
    rows = []
    for c in bridge.get("companies") or []:
        work = c.get("last_session_with_work") or {}
        last = (
            f"{_epoch(work.get('started'))}: {int(work.get('requests_ok') or 0)} ok, "
            f"{int(work.get('requests_failed') or 0)} failed {escape(str(work.get('last_error') or ''))}"
            if work
            else "none"
        )
        doubt = int(c.get("in_doubt") or 0) + int(c.get("unanswered") or 0)
        rows.append(
            f"<tr class='company' data-company='{escape(str(c['company']))}'><td>{escape(str(c['company']))}</td>"
            f"<td class='last-poll'>{_epoch(c.get('last_poll'))}</td>"
            f"<td class='last-ok'>{_epoch(c.get('last_successful_session'))}</td><td>{last}</td>"
            f"<td class='n idle'>{int(c.get('idle_polls_since_work') or 0)}</td>"
            f"<td class='n queue'>{int(c.get('queue_depth') or 0)}</td>"
            f"<td class='n doubt{' err' if doubt else ''}'>{doubt}</td></tr>"
        )
    out.append(
        f"<p class='note'>From {escape(str(bridge.get('url') or 'the bridge'))}/api/v1/health.</p>"
        "<table id='bridge-health'><tr><th>company file</th><th>last poll</th><th>last successful session</th>"
        "<th>last session with work</th><th>idle polls since</th><th>queued</th><th>in doubt</th></tr>"
        f"{''.join(rows)}</table>"
    )
    return "".join(out)


def chart_svg(
    title: str, runs: Sequence[Mapping[str, Any]], series: Mapping[str, str], *, stacked: bool
) -> str:
    """Bars per run, oldest left: `series` maps a run field to its colour (stacked or side by side)."""
    width, height, pad = 360, 140, 24
    values = [[float(r.get(name) or 0) for name in series] for r in runs]
    top = max((sum(v) if stacked else max(v, default=0)) for v in values) if values else 0
    top = top or 1.0
    n = max(len(runs), 1)
    slot = (width - pad) / n
    bar = max(slot * 0.7, 2)
    parts = [
        f"<svg class='chart' role='img' aria-label='{escape(title)}' width='{width}' height='{height + 30}' "
        f"viewBox='0 0 {width} {height + 30}' xmlns='http://www.w3.org/2000/svg'>",
        f"<text x='0' y='12' font-size='12'>{escape(title)} (max {top:g})</text>",
        f"<line x1='{pad}' y1='{height}' x2='{width}' y2='{height}' stroke='#999'/>",
    ]
    for i, (run, vals) in enumerate(zip(runs, values, strict=True)):
        x = pad + i * slot
        base = float(height)
        for j, (name, colour) in enumerate(series.items()):
            h = (height - 20) * vals[j] / top
            if stacked:
                base -= h
                y, bx, bw = base, x, bar
            else:
                y, bw = height - h, bar / len(series)
                bx = x + j * bw
            tip = f"{run.get('run_id', '')}: {name} {vals[j]:g}"
            parts.append(
                f"<rect x='{bx:.1f}' y='{y:.1f}' width='{bw:.1f}' height='{h:.1f}' fill='{colour}'>"
                f"<title>{escape(tip)}</title></rect>"
            )
    legend = "".join(f"<tspan fill='{c}'>■ {escape(name)} </tspan>" for name, c in series.items())
    parts.append(f"<text x='{pad}' y='{height + 22}' font-size='11'>{legend}</text></svg>")
    return "".join(parts)


def _counts_cells(run: Mapping[str, Any]) -> str:
    return "".join(f"<td class='n {k}'>{int(run.get(k) or 0)}</td>" for k in COUNT_COLOURS)


def flow_page(
    *,
    flow: str,
    dag_id: str,
    runs: Sequence[Mapping[str, Any]],
    quarantine: Sequence[Mapping[str, Any]],
    activity: Sequence[Mapping[str, Any]],
    activity_days: float,
    message: str | None = None,
    error: str | None = None,
) -> str:
    """The sync page of one flow: last runs, charts, quarantine with retry, record activity log."""
    out = [f"<h1>Sync: <span id='flow'>{escape(flow)}</span></h1>"]
    if message:
        out.append(f"<div class='msg' id='message'>{escape(message)}</div>")
    if error:
        out.append(f"<div class='msg err' id='error'>{escape(error)}</div>")
    out.append(
        f"<p><a href='/dags/{quote(dag_id, safe='')}' target='_top'>DAG in Airflow</a> (its Trigger "
        "button opens the trigger form with every param) · <a href='../'>all flows</a></p>"
    )
    # ---- runs
    out.append("<h2>Last runs</h2>")
    head = "".join(f"<th>{k}</th>" for k in COUNT_COLOURS)
    rows = []
    for r in runs:
        status = str(r.get("status") or "")
        duration = r.get("duration_seconds")
        rows.append(
            f"<tr class='run' data-run-id='{escape(str(r['run_id']))}'><td>{run_link(dag_id, r['run_id'])}</td>"
            f"<td>{_when(r.get('started_at'))}</td><td class='status-{escape(status)}'>{escape(status)}</td>"
            f"{_counts_cells(r)}<td class='n api-calls'>{int(r.get('api_calls') or 0)}</td>"
            f"<td class='n'>{'' if duration is None else f'{float(duration):.1f} s'}</td></tr>"
        )
    out.append(
        f"<table id='runs'><tr><th>run</th><th>started</th><th>status</th>{head}<th>API calls</th>"
        f"<th>duration</th></tr>{''.join(rows)}</table>"
    )
    if not runs:
        out.append("<p class='note'>No run of this flow yet.</p>")
    else:
        oldest_first = list(reversed(runs))
        out.append("<div class='charts'>")
        out.append(chart_svg("Records per run", oldest_first, COUNT_COLOURS, stacked=True))
        out.append(chart_svg("Duration (s)", oldest_first, {"duration_seconds": "#6a1b9a"}, stacked=False))
        out.append(chart_svg("API calls", oldest_first, {"api_calls": "#00838f"}, stacked=False))
        out.append("</div>")
    # ---- quarantine
    out.append(f"<h2>Quarantine ({len(quarantine)} open)</h2>")
    if quarantine:
        qrows = "".join(
            f"<tr class='q' data-key='{escape(str(e['source_key']))}'>"
            f"<td><input type='checkbox' name='keys' value='{escape(str(e['source_key']))}'></td>"
            f"<td>{escape(str(e['source_key']))}</td><td>{escape(str(e['stage']))}</td>"
            f"<td>{escape(str(e['rule']))}</td><td>{escape(str(e.get('column') or ''))}</td>"
            f"<td>{escape(str(e['value'])) if e.get('value') is not None else ''}</td>"
            f"<td>{escape(str(e.get('message') or ''))}</td><td class='n'>{int(e.get('attempts') or 0)}</td>"
            f"<td>{run_link(dag_id, e.get('last_run_id'))}</td></tr>"
            for e in quarantine
        )
        out.append(
            f"<form method='post' action='{quote(flow, safe='')}/retry' id='retry-form'>"
            "<table id='quarantine'><tr><th></th><th>key</th><th>stage</th><th>rule</th><th>column</th>"
            f"<th>value</th><th>message</th><th>attempts</th><th>last run</th></tr>{qrows}</table>"
            "<button type='submit' id='retry'>Retry selected</button> "
            "<span class='note'>starts a run of the flow limited to these keys (param "
            "<code>retry_keys</code>)</span></form>"
        )
    else:
        out.append("<p class='note' id='no-quarantine'>Nothing in quarantine.</p>")
    # ---- activity
    out.append(
        f"<h2>Record activity</h2><p class='note'>What came from the source and what was sent, per "
        f"record; kept {activity_days:g} days.</p>"
    )
    arows = "".join(
        f"<tr class='activity' data-key='{escape(str(a['source_key']))}'><td>{_when(a.get('at'))}</td>"
        f"<td>{escape(str(a['source_key']))}</td><td>{escape(str(a['action']))}</td>"
        f"<td>{escape(str(a.get('target_id') or ''))}</td><td>{_fields(a.get('source_fields'))}</td>"
        f"<td>{_fields(a.get('sent_fields'))}</td><td>{run_link(dag_id, a.get('run_id'))}</td></tr>"
        for a in activity
    )
    out.append(
        "<table id='activity'><tr><th>when</th><th>key</th><th>action</th><th>target id</th>"
        f"<th>from the source</th><th>sent</th><th>run</th></tr>{arows}</table>"
    )
    return page(f"Sync {flow}", "".join(out))


def _fields(values: Mapping[str, Any] | None) -> str:
    if not values:
        return ""
    return "<br>".join(f"<code>{escape(str(k))}</code> = {escape(_short(v))}" for k, v in _items(values))


def _items(values: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    return sorted(values.items())


def _short(value: Any, limit: int = 120) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
