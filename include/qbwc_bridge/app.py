"""The bridge as one ASGI app: SOAP for the Web Connector, REST for DAG tasks, pages for people.

POST /qbwc                          SOAP 1.1 endpoint (every Web Connector method)
GET  /qbwc?wsdl                     a WSDL of that endpoint
GET  /qbwc/companies/{name}.qwc     the .qwc file (also /companies/{name}/qwc)        token: read on it
/api/v1/jobs..., /api/v1/tokens     jobs and tokens API (api.py), OpenAPI at /openapi.json, docs at /docs
GET  /status                        queue per company and last sessions (HTML)         token: read
GET  /metrics                       Prometheus text                                    token: read
GET  /support                       the .qwc AppSupport page: public, names nothing
GET  /health, /healthz              database reachable                                 public

/status and /metrics show only the companies the token may read: user names, company names and
Web Connector errors are not for the public (user names are half of a login).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy import text

from erpsync.errors import ConfigError
from erpsync.qbwc_bridge import api, metrics, soap, status
from erpsync.qbwc_bridge.config import BridgeSettings, load_settings
from erpsync.qbwc_bridge.conversation import Conversation
from erpsync.qbwc_bridge.crud import company_by_name
from erpsync.qbwc_bridge.db import Store
from erpsync.qbwc_bridge.qwc import render_qwc

__all__ = ["Bridge", "create_app"]

log = logging.getLogger(__name__)


@dataclass
class Bridge:
    settings: BridgeSettings
    store: Store
    conversation: Conversation


def create_app(settings: BridgeSettings | None = None, *, store: Store | None = None) -> FastAPI:
    """Build the app. The database must already be migrated (`qbwc-bridge migrate` / `serve --migrate`)."""
    settings = settings or load_settings()
    store = store or Store(settings.database_url)
    bridge = Bridge(settings, store, Conversation(store, settings))
    app = FastAPI(
        title="QuickBooks Web Connector bridge",
        version="0.1.0",
        description="Jobs API for DAG tasks; the Web Connector itself speaks SOAP at POST /qbwc.",
    )
    app.state.bridge = bridge
    # The Web Connector's calls get their own small pool (a FIFO limiter), apart from the jobs API's.
    soap_workers = anyio.CapacityLimiter(settings.soap_workers)
    app.include_router(api.router)

    @app.post("/qbwc", include_in_schema=False)
    async def soap_endpoint(request: Request) -> Response:
        try:
            raw = await api.read_body(request, bridge.settings.max_body_bytes)
        except HTTPException as exc:  # 413 (or 400 for a Content-Length that is no number), as a fault
            fault = soap.render_fault(soap.SoapFault(str(exc.detail)))
            return Response(fault, status_code=exc.status_code, media_type="text/xml; charset=utf-8")
        code, body = await anyio.to_thread.run_sync(
            soap.handle_soap,
            bridge.conversation,
            raw,
            request.headers.get("soapaction", ""),
            request.client.host if request.client else "",
            limiter=soap_workers,
        )
        return Response(body, status_code=code, media_type="text/xml; charset=utf-8")

    @app.get("/qbwc", include_in_schema=False)
    def wsdl_endpoint() -> Response:
        return Response(soap.wsdl(f"{bridge.settings.public_url}/qbwc"), media_type="text/xml; charset=utf-8")

    Reader = Depends(api.require("read"))

    def _qwc(name: str, principal: api.Principal) -> Response:
        if not principal.may("read", name):  # before the lookup: a scoped token cannot probe names
            return JSONResponse({"detail": f"token {principal.name!r} may not read company {name!r}"}, 403)
        with store.reading() as s:
            company = company_by_name(session=s, name=name)
            if company is None:
                return JSONResponse({"detail": f"no company named {name!r}"}, status_code=404)
            try:
                body = render_qwc(
                    company, public_url=bridge.settings.public_url, app_name=bridge.settings.app_name
                )
            except ConfigError as exc:
                return JSONResponse({"detail": exc.message, "where": exc.where}, status_code=409)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        return Response(
            body,
            media_type="application/x-qwc",
            headers={"Content-Disposition": f'attachment; filename="{safe}.qwc"'},
        )

    @app.get("/qbwc/companies/{name}.qwc", tags=["companies"])
    def qwc_file(name: str, principal: api.Principal = Reader) -> Response:
        return _qwc(name, principal)

    @app.get("/companies/{name}/qwc", tags=["companies"])
    def qwc_file_alias(name: str, principal: api.Principal = Reader) -> Response:
        return _qwc(name, principal)

    @app.get("/status", response_class=HTMLResponse, tags=["operations"])
    def status_page(principal: api.Principal = Reader) -> HTMLResponse:
        with store.reading() as s:
            return HTMLResponse(status.render_status(s, companies=principal.companies))

    @app.get("/api/v1/health", tags=["operations"])
    def company_health(principal: api.Principal = Reader) -> list[dict]:
        """Web Connector health per company file the token may read (the Airflow UI's sync pages)."""
        from erpsync.qbwc_bridge.health import company_health

        with store.reading() as s:
            return company_health(s, companies=principal.companies)

    @app.get("/support", response_class=HTMLResponse, tags=["operations"])
    def support_page() -> HTMLResponse:
        """The .qwc AppSupport URL: the Web Connector wants a 200 there, the public gets no names."""
        return HTMLResponse(status.SUPPORT_PAGE)

    def _health() -> JSONResponse:
        try:
            with store.reading() as s:
                s.execute(text("SELECT 1"))
        except Exception as exc:
            log.error("health check failed: %s", type(exc).__name__)
            return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": store.engine.dialect.name})

    @app.get("/health", tags=["operations"])
    def health() -> JSONResponse:
        return _health()

    @app.get("/healthz", tags=["operations"])
    def healthz() -> JSONResponse:
        return _health()

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    def metrics_endpoint(principal: api.Principal = Reader) -> PlainTextResponse:
        with store.reading() as s:
            body = metrics.render(
                status.gauges(s, companies=principal.companies), companies=principal.companies
            )
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4")

    return app
