"""The FastAPI app of the erpsync pages, mounted by the Airflow plugin at `/erpsync`.

Every route uses Airflow's own authentication (the UI's `_token` cookie or a bearer token) and
authorisation: reading a flow's page needs read access to the DAG's runs, retrying needs the right
to trigger it. A retry is a normal run started through Airflow's REST API with the caller's token,
so Airflow validates the `retry_keys` param exactly as for the trigger form and the CLI.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

__all__ = ["create_app", "flow_data"]

log = logging.getLogger(__name__)

RUNS_SHOWN = 30
ACTIVITY_SHOWN = 200


def _store():
    from erpsync.state import StateStore

    return StateStore()


def flow_data(store, flow: str) -> dict[str, Any]:
    """The rows the sync page of `flow` shows (also served as JSON for scripts and tests)."""
    from erpsync.state.activity import activity_retention_days, read_activity

    runs = []
    for r in store.list_runs(flow, limit=RUNS_SHOWN):
        report = r.get("report") or {}
        runs.append(
            {**{k: v for k, v in r.items() if k != "report"}, "api_calls": report.get("api_calls", 0)}
        )
    return {
        "flow": flow,
        "runs": runs,
        "quarantine": store.quarantine_entries(flow),
        "activity": read_activity(store, flow, limit=ACTIVITY_SHOWN),
        "activity_days": activity_retention_days(),
    }


def _flows(store) -> list[dict[str, Any]]:
    from sqlalchemy import func, select

    from erpsync.state.models import QuarantineEntry, Run

    with store.session() as s:
        last = dict(s.execute(select(Run.flow, func.max(Run.started_at)).group_by(Run.flow)).all())
        status = {}
        for flow, started in last.items():
            status[flow] = s.scalar(
                select(Run.status).where(Run.flow == flow, Run.started_at == started).limit(1)
            )
        open_q = dict(
            s.execute(
                select(QuarantineEntry.flow, func.count(func.distinct(QuarantineEntry.source_key)))
                .where(QuarantineEntry.resolved_at.is_(None))
                .group_by(QuarantineEntry.flow)
            ).all()
        )
    return [
        {
            "flow": f,
            "last_started": last.get(f),
            "last_status": status.get(f),
            "open_quarantine": open_q.get(f, 0),
        }
        for f in sorted(set(last) | set(open_q))
    ]


BRIDGE_CONN_ID = "qbwc_bridge_default"


def bridge_health(conn_id: str = BRIDGE_CONN_ID) -> dict[str, Any]:
    """The bridge's /api/v1/health through the flows' own `qbwc_bridge` connection.

    Returns {"companies": [...]} or {"error": "..."}; never raises, the page shows what went wrong.
    """
    import httpx

    from erpsync.errors import SyncError
    from erpsync.hooks.qbwc_bridge import bridge_config

    try:
        from airflow.models.connection import Connection

        conn = Connection.get_connection_from_secrets(conn_id)
    except Exception as exc:  # AirflowNotFoundException and backend errors alike: say which
        return {"error": f"no connection {conn_id}: {exc}"}
    try:
        cfg = bridge_config(conn)
        resp = httpx.get(
            f"{cfg.base_url}/api/v1/health",
            headers={"Authorization": f"Bearer {cfg.token}"},
            verify=cfg.verify,
            timeout=min(cfg.timeout, 10.0),
        )
    except (SyncError, httpx.HTTPError, OSError) as exc:
        return {"error": f"bridge of {conn_id} not reachable: {exc}"}
    if resp.status_code != 200:
        return {"error": f"bridge of {conn_id} answered {resp.status_code}: {resp.text[:200]}"}
    return {"companies": resp.json(), "url": cfg.base_url}


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:]
    return request.cookies.get("_token")


def trigger_retry(api_base: str, token: str, dag_id: str, keys: list[str]) -> dict[str, Any]:
    """Start a run of `dag_id` limited to `keys` through Airflow's REST API; return the run."""
    import httpx

    resp = httpx.post(
        f"{api_base}/api/v2/dags/{quote(dag_id, safe='')}/dagRuns",
        json={"logical_date": None, "conf": {"retry_keys": keys}, "note": f"retry of {len(keys)} record(s)"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    if resp.status_code >= 400:
        raise HTTPException(resp.status_code, f"Airflow refused the run: {resp.text[:500]}")
    return resp.json()


def create_app() -> FastAPI:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag

    from erpsync.ui import render

    app = FastAPI(title="erpsync", docs_url=None, redoc_url=None, openapi_url=None)
    read_runs = Depends(requires_access_dag("GET", DagAccessEntity.RUN))
    start_runs = Depends(requires_access_dag("POST", DagAccessEntity.RUN))

    @app.get("/", response_class=HTMLResponse, dependencies=[Depends(get_user)])
    def index() -> str:
        return render.index_page(_flows(_store()), bridge=bridge_health())

    @app.get("/flows/{dag_id}", response_class=HTMLResponse, dependencies=[read_runs])
    def flow_page(dag_id: str, message: str | None = None, error: str | None = None) -> str:
        data = flow_data(_store(), dag_id)
        return render.flow_page(dag_id=dag_id, message=message, error=error, **data)

    @app.get("/api/flows/{dag_id}", dependencies=[read_runs])
    def flow_json(dag_id: str) -> JSONResponse:
        data = flow_data(_store(), dag_id)
        return JSONResponse(_jsonable(data))

    @app.post("/flows/{dag_id}/retry", dependencies=[start_runs])
    def retry(request: Request, dag_id: str, keys: Annotated[list[str] | None, Form()] = None):
        keys = [k for k in dict.fromkeys(k.strip() for k in keys or ()) if k]
        back = f"{request.scope.get('root_path', '')}/flows/{quote(dag_id, safe='')}"
        if not keys:
            return RedirectResponse(f"{back}?{urlencode({'error': 'Select at least one record.'})}", 303)
        token = _token(request)
        if not token:
            raise HTTPException(401, "Not authenticated")
        base = os.environ.get("ERPSYNC_UI_API_BASE") or f"{request.url.scheme}://{request.url.netloc}"
        try:
            run = trigger_retry(base, token, dag_id, keys)
        except HTTPException as exc:
            return RedirectResponse(f"{back}?{urlencode({'error': str(exc.detail)})}", 303)
        text = f"Started run {run.get('dag_run_id')} retrying {len(keys)} record(s): {', '.join(keys)}"
        return RedirectResponse(f"{back}?{urlencode({'message': text})}", 303)

    return app


def _jsonable(value: Any) -> Any:
    from datetime import datetime

    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
