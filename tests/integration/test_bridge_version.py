"""qbXML version: what the company file's QuickBooks reports caps every document, now and later.

The company file simulator speaks qbXML up to 11.0 (a QuickBooks 2012) and refuses a document above
that with HRESULT 0x80040423; the Web Connector's request processor says 13.0, as a newer SDK does.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from test_bridge_support import customer_add, enqueue, job

from erpsync.qbwc_bridge.models import Company
from erpsync.sandbox.quickbooks import CompanyFile
from erpsync.sandbox.webconnector import WebConnectorSimulator

pytest_plugins = ["test_bridge_support"]

JOB_TITLE_ADD = "<CustomerAddRq><CustomerAdd><Name>Titled Co</Name><JobTitle>Buyer</JobTitle></CustomerAdd></CustomerAddRq>"


class _Recording:
    """The company file, remembering the `<?qbxml version?>` of every document the bridge sent."""

    def __init__(self, qb):
        self.qb, self.versions = qb, []

    def process(self, doc: str, session: str = "default") -> str:
        if 'requestID="hcp1"' not in doc:  # the Web Connector's own Host/Company/Preferences queries
            self.versions.append(re.search(r'<\?qbxml version="([^"]+)"\?>', doc).group(1))
        return self.qb.process(doc, session=session)

    def end_session(self, session: str) -> None:
        self.qb.end_session(session)

    @property
    def supported_versions(self):  # the Web Connector runs its HCP queries at a version QuickBooks speaks
        return self.qb.supported_versions


def _customers(qb, name: str) -> int:
    rs = qb.process(
        '<?xml version="1.0"?><?qbxml version="11.0"?><QBXML><QBXMLMsgsRq onError="continueOnError">'
        f"<CustomerQueryRq><FullName>{name}</FullName></CustomerQueryRq></QBXMLMsgsRq></QBXML>"
    )
    return rs.count("<CustomerRet>")


def _company_version(bridge, name: str = "acme") -> str | None:
    with bridge.store.reading() as s:
        return s.scalar(select(Company.qbxml_version).where(Company.name == name))


def _session(bridge, qb, **kwargs) -> tuple[WebConnectorSimulator, _Recording]:
    recording = _Recording(qb)
    sim = WebConnectorSimulator(
        bridge.soap_url, "acme", "pw", recording, noop_wait=0.05, qbxml_version=(13, 0), **kwargs
    )
    return sim, recording


def test_every_document_of_this_and_later_sessions_uses_the_reported_version(bridge_factory, tmp_path):
    """The HCP answer's 11.0 caps the first document and every later one, in this session and the next."""
    qb = CompanyFile(tmp_path / "qb2012.qbw", max_version="11.0")
    b = bridge_factory(max_batch_requests=2)
    names = [f"Versioned {i}" for i in range(6)]
    jid = enqueue(b, [customer_add(n) for n in names]).json()["id"]
    sim, recording = _session(b, qb)
    report = sim.run_once()
    assert report.status == "ok", report
    assert report.exchanges == 3 and recording.versions == ["11.0"] * 3
    assert job(b, jid)["state"] == "completed"
    assert _company_version(b) == "11.0"
    # A later session that brings no HCP answer (only the request processor's 13.0): the company's
    # known version still applies.
    later = [f"Later {i}" for i in range(4)]
    jid2 = enqueue(b, [customer_add(n) for n in later]).json()["id"]
    sim2, recording2 = _session(b, qb, send_hcp=False)
    report2 = sim2.run_once()
    assert report2.status == "ok", report2.last_error
    assert report2.exchanges == 2 and recording2.versions == ["11.0"] * 2
    assert job(b, jid2)["state"] == "completed"
    assert [_customers(qb, n) for n in names + later] == [1] * 10


def test_enqueue_refuses_a_request_the_companys_version_cannot_take(bridge, tmp_path):
    """Once the company said 11.0, a request with a 12.0 element is refused with 422 naming the
    request, the element and both versions; the same request is accepted for a 13.0 company."""
    qb = CompanyFile(tmp_path / "qb2012.qbw", max_version="11.0")
    enqueue(bridge, [customer_add("First Contact")])
    sim, _ = _session(bridge, qb)
    assert sim.run_once().status == "ok"
    assert _company_version(bridge) == "11.0"
    refused = enqueue(bridge, [customer_add("Plain Co"), JOB_TITLE_ADD])
    assert refused.status_code == 422, refused.text
    errors = refused.json()["errors"]
    assert len(errors) == 1 and errors[0]["index"] == 1
    assert errors[0]["field"] == "CustomerAddRq/CustomerAdd/JobTitle"
    assert "12.0" in errors[0]["message"] and "11.0" in errors[0]["message"]
    assert enqueue(bridge, [customer_add("Plain Co")]).status_code == 201  # 1.0 elements only
    # globex's QuickBooks speaks 16.0 (the simulator's default): the same request is fine there.
    globex = CompanyFile(tmp_path / "globex.qbw")
    enqueue(bridge, [customer_add("Globex First")], company="globex")
    assert (
        WebConnectorSimulator(bridge.soap_url, "globex", "pw2", globex, noop_wait=0.05).run_once().status
        == "ok"
    )
    assert _company_version(bridge, "globex") == "16.0"  # what its QuickBooks reported
    assert enqueue(bridge, [JOB_TITLE_ADD], company="globex").status_code == 201
