"""Shared pieces of the bridge tests: a served bridge, the QuickBooks company file, request builders.

The QuickBooks side is the company-file simulator (`erpsync.sandbox.quickbooks.CompanyFile`); until
it is importable the tests fall back to `MiniQuickBooks` below, a deliberately small stand-in that
follows the same wire rules the bridge depends on (unique names 3100, iterators, message-set
recovery). No test in this module: it only provides fixtures and helpers.
"""

from __future__ import annotations

import itertools
import re
import uuid
from pathlib import Path
from xml.sax.saxutils import escape

import httpx
import pytest

from erpsync.sandbox.runner import SandboxCA, SandboxContext
from erpsync.sandbox.webconnector import LocalBridge, WebConnectorSimulator, start_bridge

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class MiniQuickBooks:
    """Customers and invoices with QuickBooks' duplicate-name rule, iterators and message-set recovery."""

    def __init__(self):
        self.customers: dict[str, dict] = {}
        self.invoices: list[dict] = []
        self._ids = itertools.count(1)
        self._iterators: dict[str, list[str]] = {}
        self._last_set: tuple[str, str] | None = None

    def process(self, doc: str) -> str:
        from lxml import etree

        root = etree.fromstring(re.sub(r"<\?qbxml[^>]*\?>", "", doc).encode())
        msgs = root.find("QBXMLMsgsRq")
        out = []
        old, new = msgs.get("oldMessageSetID"), msgs.get("newMessageSetID")
        set_status = None
        if old is not None:
            if self._last_set and self._last_set[0] == old:
                out.append(self._last_set[1])
                set_status = "0"
            else:
                set_status = "9001"
        stop = msgs.get("onError") == "stopOnError"
        body = []
        for rq in msgs:
            rs = self._one(rq)
            body.append(rs)
            if stop and 'statusSeverity="Error"' in rs.split(">", 1)[0]:
                break
        out.extend(body)
        if new:
            self._last_set = (new, "".join(body))
            set_status = set_status or "0"
        attrs = f' messageSetStatusCode="{set_status}"' if set_status is not None else ""
        attrs += f' newMessageSetID="{new}"' if new else ""
        return f'<?xml version="1.0"?><QBXML><QBXMLMsgsRs{attrs}>{"".join(out)}</QBXMLMsgsRs></QBXML>'

    def _rs(self, rq, code=0, sev="Info", msg="Status OK", inner="", extra="") -> str:
        kind = rq.tag[:-2] + "Rs"
        rid = rq.get("requestID", "")
        return (
            f'<{kind} requestID="{escape(rid)}" statusCode="{code}" statusSeverity="{sev}" '
            f'statusMessage="{escape(msg, {chr(34): "&quot;"})}"{extra}>{inner}</{kind}>'
        )

    @staticmethod
    def _customer_ret(c: dict) -> str:
        return (
            f"<CustomerRet><ListID>{c['id']}</ListID><EditSequence>1</EditSequence>"
            f"<Name>{escape(c['name'])}</Name><FullName>{escape(c['name'])}</FullName></CustomerRet>"
        )

    def _one(self, rq) -> str:
        kind = rq.tag
        if kind == "CustomerAddRq":
            name = rq.findtext("CustomerAdd/Name")
            if name in self.customers:
                return self._rs(
                    rq, 3100, "Error", f'The name "{name}" of the list element is already in use.'
                )
            c = {"id": f"8000{next(self._ids):04d}-1", "name": name}
            self.customers[name] = c
            return self._rs(rq, inner=self._customer_ret(c))
        if kind == "CustomerQueryRq":
            return self._customer_query(rq)
        if kind == "InvoiceAddRq":
            cust = rq.findtext("InvoiceAdd/CustomerRef/FullName")
            if cust not in self.customers:
                return self._rs(
                    rq, 3140, "Error", f'There is an invalid reference to QuickBooks Customer "{cust}".'
                )
            inv = {
                "id": f"{next(self._ids):X}-1",
                "ref": rq.findtext("InvoiceAdd/RefNumber"),
                "customer": cust,
            }
            self.invoices.append(inv)
            return self._rs(rq, inner=self._invoice_ret(inv))
        if kind == "InvoiceQueryRq":
            ref = rq.findtext("RefNumber")
            found = [i for i in self.invoices if ref is None or i["ref"] == ref]
            if not found:
                return self._rs(rq, 1, "Info", "A query request did not find a matching object in QuickBooks")
            return self._rs(rq, inner="".join(self._invoice_ret(i) for i in found))
        return self._rs(rq)

    @staticmethod
    def _invoice_ret(i: dict) -> str:
        return (
            f"<InvoiceRet><TxnID>{i['id']}</TxnID><EditSequence>1</EditSequence>"
            f"<CustomerRef><FullName>{escape(i['customer'])}</FullName></CustomerRef>"
            f"<RefNumber>{escape(i['ref'] or '')}</RefNumber></InvoiceRet>"
        )

    def _customer_query(self, rq) -> str:
        names = [e.text for e in rq.findall("FullName")]
        if names:
            found = [self.customers[n] for n in names if n in self.customers]
            if not found:
                return self._rs(rq, 1, "Info", "A query request did not find a matching object in QuickBooks")
            return self._rs(rq, inner="".join(self._customer_ret(c) for c in found))
        iterator = rq.get("iterator")
        page = int(rq.findtext("MaxReturned") or 1_000_000)
        if iterator == "Continue":
            remaining = self._iterators.get(rq.get("iteratorID"))
            if remaining is None:
                return self._rs(rq, 3020, "Error", "iteratorID is not valid")
        else:
            remaining = sorted(self.customers)
        chunk, rest = remaining[:page], remaining[page:]
        inner = "".join(self._customer_ret(self.customers[n]) for n in chunk)
        if iterator in {"Start", "Continue"}:
            it = rq.get("iteratorID") or str(uuid.uuid4())
            self._iterators[it] = rest
            extra = f' iteratorRemainingCount="{len(rest)}" iteratorID="{it}"'
            return self._rs(rq, inner=inner, extra=extra)
        return self._rs(rq, inner=inner)


def make_company_file(path: Path):
    """The QuickBooks company-file simulator, or the stand-in while it is not importable."""
    try:
        from erpsync.sandbox.quickbooks import CompanyFile
    except ImportError:
        return MiniQuickBooks()
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
