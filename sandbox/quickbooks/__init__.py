"""QuickBooks Desktop simulator: a company file answering qbXML, plus an HTTP admin API.

`service(ctx)` builds the admin app over the company file kept in ``<data_dir>/quickbooks/company.sqlite``
(seeded with demo data when `ctx.seed` and the file is new). The Web Connector client simulator runs in
the same process and drives the same object: ``company_for(ctx).process(qbxml)``.

Options (`SandboxContext.options["quickbooks"]`, the `CompanyFile` keywords): ``recovery_history``
(message sets remembered for oldMessageSetID; 1, the default, is what QuickBooks does),
``recovery_shape`` (``"full"`` or ``"error_recovery"``), ``supported_versions`` / ``max_version``
(the qbXML versions the installation speaks), ``company_name``. The admin API changes the first four
at run time (``PUT /api/settings``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from erpsync.sandbox.quickbooks.company import CompanyFile
from erpsync.sandbox.quickbooks.faults import Faults, RequestProcessorError, ResponseLostError
from erpsync.sandbox.runner import SandboxContext, ServiceSpec

__all__ = [
    "CompanyFile",
    "Faults",
    "RequestProcessorError",
    "ResponseLostError",
    "company_for",
    "service",
]

_companies: dict[Path, CompanyFile] = {}
_lock = threading.Lock()


def _path(ctx: SandboxContext) -> Path:
    return (ctx.data_dir / "quickbooks" / "company.sqlite").resolve()


def company_for(ctx: SandboxContext) -> CompanyFile:
    """Return the company file of `ctx`, opening it once per process (shared with the WC simulator)."""
    path = _path(ctx)
    with _lock:
        company = _companies.get(path)
        if company is None:
            options: dict[str, Any] = dict(ctx.options.get("quickbooks", {}))
            company = CompanyFile(path, **options)
            _companies[path] = company
        return company


def _close(ctx: SandboxContext) -> None:
    with _lock:
        company = _companies.pop(_path(ctx), None)
    if company is not None:
        company.close()


def service(ctx: SandboxContext) -> ServiceSpec:
    """Build the QuickBooks simulator's admin app for `ctx` (seeded when asked and empty)."""
    from erpsync.sandbox.quickbooks.admin import build_app
    from erpsync.sandbox.quickbooks.seed import seed_company

    company = company_for(ctx)
    if ctx.seed:
        seed_company(company)
    return ServiceSpec(
        name="quickbooks",
        app=build_app(company),
        info={
            "company_file": str(_path(ctx)),
            "qbxml_endpoint": "/qbxml",
            "company_name": company.company_name,
        },
        on_stop=lambda: _close(ctx),
    )
