"""Shared pieces of the bridge tests: a served bridge, the QuickBooks company file, request builders.

The QuickBooks side is the company-file simulator (`erpsync.sandbox.quickbooks.CompanyFile`): it
validates every request against the schema and applies QuickBooks' rules. No test in this module:
it only provides fixtures and helpers.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from xml.sax.saxutils import escape

import httpx
import pytest

from erpsync.sandbox.runner import SandboxCA, SandboxContext
from erpsync.sandbox.webconnector import LocalBridge, WebConnectorSimulator, start_bridge

TOKEN = secrets.token_urlsafe(32)  # a real-looking secret: weak static tokens are refused
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_company_file(path: Path):
    """A fresh QuickBooks company file (the simulator), kept in `path`."""
    from erpsync.sandbox.quickbooks import CompanyFile

    return CompanyFile(path)


def customer_add(name: str, rid: str | None = None) -> str:
    attr = f' requestID="{rid}"' if rid else ""
    return f"<CustomerAddRq{attr}><CustomerAdd><Name>{escape(name)}</Name></CustomerAdd></CustomerAddRq>"


def invoice_add(customer: str, ref: str, item: str = "Consulting") -> str:
    return (
        f"<InvoiceAddRq><InvoiceAdd><CustomerRef><FullName>{escape(customer)}</FullName></CustomerRef>"
        f"<RefNumber>{escape(ref)}</RefNumber><InvoiceLineAdd><ItemRef><FullName>{escape(item)}</FullName>"
        f"</ItemRef><Quantity>1</Quantity><Rate>10.00</Rate></InvoiceLineAdd></InvoiceAdd></InvoiceAddRq>"
    )


def count_customers(qb, name: str) -> int:
    rs = qb.process(
        '<?xml version="1.0"?><?qbxml version="13.0"?><QBXML><QBXMLMsgsRq onError="continueOnError">'
        f"<CustomerQueryRq><FullName>{escape(name)}</FullName></CustomerQueryRq></QBXMLMsgsRq></QBXML>"
    )
    return rs.count("<CustomerRet>")


def count_invoices(qb, ref: str) -> int:
    rs = qb.process(
        '<?xml version="1.0"?><?qbxml version="13.0"?><QBXML><QBXMLMsgsRq onError="continueOnError">'
        f"<InvoiceQueryRq><RefNumber>{escape(ref)}</RefNumber></InvoiceQueryRq></QBXMLMsgsRq></QBXML>"
    )
    return rs.count("<InvoiceRet>")


def enqueue(
    bridge: LocalBridge,
    requests: list[str],
    *,
    key: str | None = None,
    company: str = "acme",
    on_error="continue",
):
    headers = dict(AUTH)
    if key:
        headers["Idempotency-Key"] = key
    return httpx.post(
        f"{bridge.url}/api/v1/jobs",
        json={"company": company, "requests": requests, "on_error": on_error},
        headers=headers,
        timeout=60,
    )


def job(bridge: LocalBridge, job_id: str, wait: float = 0) -> dict:
    resp = httpx.get(
        f"{bridge.url}/api/v1/jobs/{job_id}", params={"wait": wait}, headers=AUTH, timeout=60 + wait
    )
    resp.raise_for_status()
    return resp.json()


def wc(bridge: LocalBridge, qb, user: str = "acme", password: str = "pw", **kwargs) -> WebConnectorSimulator:
    return WebConnectorSimulator(bridge.soap_url, user, password, qb, noop_wait=0.05, **kwargs)


@pytest.fixture
def sandbox_ctx(tmp_path) -> SandboxContext:
    return SandboxContext(data_dir=tmp_path, ca=SandboxCA(tmp_path / "ca"))


@pytest.fixture
def bridge_factory(sandbox_ctx):
    """Start bridges on demand (SQLite in tmp_path unless a database URL is given); stop them after."""
    started: list[LocalBridge] = []

    def start(database_url: str | None = None, **settings) -> LocalBridge:
        # The fault tests model "the Web Connector crashed, its next run comes later" by running again
        # at once: a quiet session may be superseded immediately. The busy rule has its own tests.
        settings.setdefault("session_stale_seconds", 0)
        b = start_bridge(
            sandbox_ctx,
            database_url=database_url,
            companies={"acme": "pw", "globex": "pw2"},
            api_token=TOKEN,
            **settings,
        )
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def bridge(bridge_factory) -> LocalBridge:
    return bridge_factory()


@pytest.fixture
def qb(tmp_path):
    return make_company_file(tmp_path / "acme.qbw")
