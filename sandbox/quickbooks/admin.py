"""HTTP admin and inspection API of the QuickBooks simulator (Starlette, JSON).

Tests and the demo use it to look inside the company file and to inject faults; the Web Connector
client simulator uses the same `CompanyFile` object in-process (`erpsync.sandbox.quickbooks.company_for`).

    GET  /healthz                      {"status": "ok"}
    GET  /api/company                  name, counts per kind, processing stats, faults
    GET  /api/records/{kind}           stored records (Customer, Item, ItemService, Invoice, ...)
         ?name=..., ?ref_number=...    filter by FullName or RefNumber
    GET  /api/count/{kind}             {"kind": ..., "count": n}
    GET  /api/data-ext?owner_id=&name=&object_id=   one DataExt value
    POST /qbxml                        a qbXML request document in, the response document out
                                       (422 JSON {hresult, message} when QuickBooks refuses it;
                                       502 with no answer for the "lose_responses" fault)
    GET  /api/faults, PUT /api/faults  read / set faults (JSON, see faults.Faults)
    GET  /api/settings, PUT /api/settings   recovery_history, recovery_shape, supported_versions,
                                       max_version (see CompanyFile.configure); 400 on a bad value
    POST /api/user-edit                {"kind", "key" (ListID/TxnID, FullName or RefNumber), "fields"}:
                                       a QuickBooks user edits that record (CompanyFile.user_edit);
                                       404 unknown record, 400 bad field
    POST /api/reset?seed=true          empty the company file (and reseed)
    POST /api/applications             {"owner_id", "file_id"}: register a Web Connector app
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from erpsync.sandbox.quickbooks.company import CompanyFile

__all__ = ["RECORD_KINDS", "build_app"]

RECORD_KINDS = (
    "Customer",
    "Item",
    "ItemService",
    "ItemNonInventory",
    "ItemInventory",
    "Account",
    "SalesOrder",
    "Invoice",
    "SalesReceipt",
)


def build_app(company: CompanyFile):
    """Return the Starlette app serving `company`."""
    import anyio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from erpsync.sandbox.quickbooks.faults import RequestProcessorError, ResponseLostError

    def _kind(request: Request) -> str | JSONResponse:
        kind = request.path_params["kind"]
        if kind not in RECORD_KINDS:
            return JSONResponse(
                {"error": f"unknown kind {kind!r}; known: {', '.join(RECORD_KINDS)}"}, status_code=404
            )
        return kind

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def summary(request: Request) -> Response:
        counts = {kind: company.count(kind) for kind in RECORD_KINDS}
        return JSONResponse(
            {
                "company_name": company.company_name,
                "counts": counts,
                "stats": company.stats,
                "faults": company.faults.as_dict(),
            }
        )

    async def records(request: Request) -> Response:
        kind = _kind(request)
        if isinstance(kind, Response):
            return kind
        found: list[dict[str, Any]] = company.records(kind)
        name = request.query_params.get("name")
        if name is not None:
            found = [r for r in found if r.get("FullName", "").lower() == name.lower()]
        ref = request.query_params.get("ref_number")
        if ref is not None:
            found = [r for r in found if r.get("RefNumber") == ref]
        return JSONResponse({"kind": kind, "count": len(found), "records": found})

    async def count(request: Request) -> Response:
        kind = _kind(request)
        if isinstance(kind, Response):
            return kind
        return JSONResponse({"kind": kind, "count": company.count(kind)})

    async def data_ext(request: Request) -> Response:
        params = request.query_params
        missing = [p for p in ("owner_id", "name", "object_id") if not params.get(p)]
        if missing:
            return JSONResponse(
                {"error": f"missing query parameter(s): {', '.join(missing)}"}, status_code=400
            )
        value = company.data_ext(params["owner_id"], params["name"], params["object_id"])
        return JSONResponse({**dict(params), "value": value}, status_code=200 if value is not None else 404)

    async def qbxml(request: Request) -> Response:
        body = await request.body()
        try:
            answer = await anyio.to_thread.run_sync(company.process, body)
        except RequestProcessorError as exc:
            return JSONResponse(
                {"hresult": exc.hresult, "message": exc.message, "detail": exc.detail}, status_code=422
            )
        except ResponseLostError:
            return Response(status_code=502)
        return Response(answer, media_type="text/xml")

    def _get_put(apply: Callable[[dict[str, Any]], None], current: Callable[[], dict[str, Any]]):
        """A GET/PUT endpoint: PUT applies a JSON object (400 naming what is wrong); both answer current()."""

        async def endpoint(request: Request) -> Response:
            if request.method == "PUT":
                try:
                    values = await request.json()
                    if not isinstance(values, dict):
                        raise ValueError("the body must be a JSON object")
                    apply(values)
                except ValueError as exc:
                    return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse(current())

        return endpoint

    def _configure(values: dict[str, Any]) -> None:
        known = {"recovery_history", "recovery_shape", "supported_versions", "max_version"}
        unknown = set(values) - known
        if unknown:
            raise ValueError(
                f"unknown setting(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        company.configure(**values)

    faults = _get_put(lambda values: company.faults.update(values), lambda: company.faults.as_dict())
    settings = _get_put(_configure, company.settings)

    async def user_edit(request: Request) -> Response:
        try:
            body = await request.json()
            kind, key, fields = body["kind"], body["key"], body.get("fields", {})
            if not isinstance(fields, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {"error": 'body must be {"kind": "Customer", "key": "ListID or name", "fields": {...}}'},
                status_code=400,
            )
        try:
            record = await anyio.to_thread.run_sync(lambda: company.user_edit(kind, key, **fields))
        except KeyError as exc:
            return JSONResponse({"error": str(exc.args[0])}, status_code=404)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"kind": kind, "record": record})

    async def reset(request: Request) -> Response:
        seed = request.query_params.get("seed", "false").lower() in ("1", "true", "yes")
        await anyio.to_thread.run_sync(lambda: company.reset(seed=seed))
        return JSONResponse({"reset": True, "seeded": seed, "customers": company.count("Customer")})

    async def applications(request: Request) -> Response:
        try:
            body = await request.json()
            owner_id, file_id = body["owner_id"], body["file_id"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {"error": 'body must be {"owner_id": "{GUID}", "file_id": "{GUID}"}'}, status_code=400
            )
        company.register_application(owner_id, file_id)
        return JSONResponse({"owner_id": owner_id, "file_id": file_id})

    routes = [
        Route("/healthz", healthz),
        Route("/api/company", summary),
        Route("/api/records/{kind}", records),
        Route("/api/count/{kind}", count),
        Route("/api/data-ext", data_ext),
        Route("/qbxml", qbxml, methods=["POST"]),
        Route("/api/faults", faults, methods=["GET", "PUT"]),
        Route("/api/settings", settings, methods=["GET", "PUT"]),
        Route("/api/user-edit", user_edit, methods=["POST"]),
        Route("/api/reset", reset, methods=["POST"]),
        Route("/api/applications", applications, methods=["POST"]),
    ]
    return Starlette(routes=routes)
