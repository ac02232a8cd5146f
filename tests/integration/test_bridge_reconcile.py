"""Reconciling unacknowledged writes (issue 11, exactly-once items 1, 2, 4, 6 and 8).

Each test loses a Web Connector acknowledgement (or crashes before QuickBooks ran the document), then
lets the bridge reconcile against the company-file simulator, on SQLite and on the real PostgreSQL,
and counts in the company file how many times each write exists. QuickBooks' stored answers are
withheld (`oldMessageSetID` stripped) where the probes are what is tested.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

import pytest
from test_bridge_support import count_customers, count_invoices, customer_add, enqueue, invoice_add, job, wc

from erpsync.sandbox.quickbooks.faults import RequestProcessorError
from erpsync.sandbox.webconnector import Faults, WebConnectorSimulator
from tests.pg import schema_url

pytest_plugins = ["test_bridge_support"]

MAX_PROBE_ATTEMPTS = 5  # the bridge's bound (conversation.MAX_PROBE_ATTEMPTS), stated here on purpose
ITEM = (
    "<ItemServiceAddRq><ItemServiceAdd><Name>Consulting</Name><SalesOrPurchase><Price>10.00</Price>"
    "<AccountRef><FullName>Sales</FullName></AccountRef></SalesOrPurchase></ItemServiceAdd></ItemServiceAddRq>"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def rb(request, bridge_factory, tmp_path):
    """A served bridge on SQLite, or on its own schema of the real PostgreSQL."""
    if request.param == "sqlite":
        return bridge_factory()
    return bridge_factory(schema_url(request.getfixturevalue("postgres_url"), "reconcile"))


class Probing:
    """QuickBooks that kept no error-recovery record and answers the first `bad` probe documents badly:
    every probe with status `code` (no record), or the whole document with `hresult`."""

    def __init__(self, qb, *, bad: int, code: int = 1000, message: str = "", hresult: str | None = None):
        self.qb, self.bad, self.code, self.hresult = qb, bad, code, hresult
        self.message = message or f"QuickBooks answered {code} on purpose"
        self.probe_documents = 0

    def __call__(self, doc: str) -> str:
        doc = re.sub(r' oldMessageSetID="[^"]*"', "", doc)
        if 'requestID="probe.' not in doc:
            return self.qb.process(doc)
        self.probe_documents += 1
        if self.probe_documents > self.bad:
            return self.qb.process(doc)
        if self.hresult:
            raise RequestProcessorError(self.hresult, self.message)
        answer = self.qb.process(doc)
        attrs = f'statusCode="{self.code}" statusSeverity="Error" statusMessage="{escape(self.message)}"'
        return re.sub(
            r'<(\w+Rs) requestID="(probe\.\d+)"[^>]*?(?:/>|>.*?</\1>)',
            lambda m: f'<{m[1]} requestID="{m[2]}" {attrs} />',
            answer,
            flags=re.S,
        )


def _session(bridge, processor, **kwargs):
    return WebConnectorSimulator(
        bridge.soap_url, "acme", "pw", processor, noop_wait=0.01, **kwargs
    ).run_once()


def _setup(bridge, qb, *customers: str) -> dict[str, dict]:
    """Customers and the Consulting item, created in a clean run; their results by name."""
    jid = enqueue(bridge, [customer_add(n) for n in customers] + [ITEM]).json()["id"]
    assert wc(bridge, qb).run_once().status == "ok"
    result = job(bridge, jid)
    assert result["state"] == "completed", result
    return {n: r for n, r in zip(customers, result["results"], strict=False)}


def _invoice_by_list_id(list_id: str, ref: str) -> str:
    return (
        f"<InvoiceAddRq><InvoiceAdd><CustomerRef><ListID>{list_id}</ListID></CustomerRef>"
        f"<RefNumber>{ref}</RefNumber><InvoiceLineAdd><ItemRef><FullName>Consulting</FullName></ItemRef>"
        "<Quantity>1</Quantity><Rate>10.00</Rate></InvoiceLineAdd></InvoiceAdd></InvoiceAddRq>"
    )


def _customer(qb, name: str) -> dict:
    return next(r for r in qb.records("Customer") if r["Name"] == name)


# -- item 1: a probe that errors is not "absent" --------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "code"),
    [("invoice", 1000), ("customer", 3260), ("customer", 3175)],
)
def test_a_probe_answered_with_an_error_is_asked_again_never_resent(rb, qb, what, code):
    """The ack is lost, then the probe answers 1000/3260/3175 twice: no resend (no second invoice, no false
    3100 for a customer); a later clean probe finds the record and settles it."""
    _setup(rb, qb, "Probe Customer")
    request = invoice_add("Probe Customer", "PE-1") if what == "invoice" else customer_add("Probe Err Co")
    count = (
        (lambda: count_invoices(qb, "PE-1"))
        if what == "invoice"
        else (lambda: count_customers(qb, "Probe Err Co"))
    )
    jid = enqueue(rb, [request]).json()["id"]
    assert wc(rb, qb, faults=Faults(drop_ack_on={1})).run_once().status == "aborted"
    assert count() == 1
    quickbooks = Probing(qb, bad=2, code=code)
    for attempt in (1, 2):
        _session(rb, quickbooks)
        result = job(rb, jid)
        r = result["results"][0]
        assert count() == 1, f"resent after probe answer {code}: {r}"
        assert result["state"] == "in_progress" and r["state"] == "lost", r
        assert r["probe_attempts"] == attempt and str(code) in r["status_message"]
    assert _session(rb, quickbooks).status == "ok"
    result = job(rb, jid)
    r = result["results"][0]
    assert result["state"] == "completed", result
    assert r["state"] == "done" and "reconciled" in r["status_message"], r
    assert (r["txn_id"] if what == "invoice" else r["list_id"]) is not None
    assert count() == 1


@pytest.mark.parametrize("refusal", ["status", "hresult"])
def test_probes_that_never_answer_cleanly_end_in_doubt(rb, qb, refusal):
    """After MAX_PROBE_ATTEMPTS unclear probe rounds the request is `in_doubt` with the last answer, the job
    `failed` naming it, nothing resent; the company's queue goes on."""
    _setup(rb, qb, "Doubt Customer")
    jid = enqueue(rb, [invoice_add("Doubt Customer", "DB-1"), customer_add("Doubt Co")]).json()["id"]
    assert wc(rb, qb, faults=Faults(drop_ack_on={1})).run_once().status == "aborted"
    if refusal == "status":
        quickbooks = Probing(qb, bad=99, code=1010, message="QuickBooks is not available now")
    else:
        quickbooks = Probing(qb, bad=99, hresult="0x80040402", message="Unexpected error.")
    for _ in range(MAX_PROBE_ATTEMPTS):
        assert job(rb, jid)["state"] == "in_progress"
        _session(rb, quickbooks)
    result = job(rb, jid)
    assert result["state"] == "failed", result
    assert "2 of 2 requests in doubt" in result["error"]
    assert result["counts"]["in_doubt"] == 2 and result["counts"]["lost"] == 0
    for r in result["results"]:
        assert r["state"] == "in_doubt" and r["probe_attempts"] == MAX_PROBE_ATTEMPTS, r
        assert r["status_message"].startswith("in doubt:")
        if refusal == "status":
            assert r["status_code"] == 1010 and "QuickBooks is not available now" in r["status_message"]
        else:
            assert "0x80040402" in r["status_message"]
    assert count_invoices(qb, "DB-1") == 1 and count_customers(qb, "Doubt Co") == 1
    later = enqueue(rb, [customer_add("After Doubt Co")]).json()["id"]
    assert _session(rb, qb).status == "ok"
    assert job(rb, later)["state"] == "completed"
    assert job(rb, jid)["state"] == "failed" and count_invoices(qb, "DB-1") == 1


def test_a_session_with_only_unreconciled_requests_left_says_so(rb, qb):
    """When all that is left are lost requests this session has already probed, sendRequestXML has
    nothing to send: getLastError says they await reconciliation, not that everything was answered."""
    _setup(rb, qb, "Waiting Customer")
    jid = enqueue(rb, [invoice_add("Waiting Customer", "WT-1"), customer_add("Waiting Co")]).json()["id"]
    assert wc(rb, qb, faults=Faults(drop_ack_on={1})).run_once().status == "aborted"
    report = _session(rb, Probing(qb, bad=1, code=1000))
    assert report.status == "ok" and report.calls.count("sendRequestXML") == 2, report
    assert report.last_error == (
        "2 requests sent without an acknowledgement await reconciliation in a later session (this "
        "session already asked QuickBooks about them); nothing more to send now."
    ), report
    assert [r["state"] for r in job(rb, jid)["results"]] == ["lost", "lost"]
    assert _session(rb, qb).status == "ok"
    assert job(rb, jid)["state"] == "completed"
    assert count_invoices(qb, "WT-1") == 1 and count_customers(qb, "Waiting Co") == 1


# -- item 2: CustomerRef by ListID ------------------------------------------------------------------------


def test_invoice_by_customer_list_id_is_matched_on_that_customer_only(rb, qb):
    """Another customer's invoice with the same RefNumber is not ours: the unsent invoice is sent, the
    applied one is found by its customer's ListID."""
    ids = _setup(rb, qb, "ListID Owner", "Someone Else")
    owner = ids["ListID Owner"]["list_id"]
    other = enqueue(rb, [invoice_add("Someone Else", "LID-1"), invoice_add("Someone Else", "LID-2")]).json()[
        "id"
    ]
    assert wc(rb, qb).run_once().status == "ok" and job(rb, other)["state"] == "completed"
    never_ran = enqueue(rb, [_invoice_by_list_id(owner, "LID-1")]).json()["id"]
    assert wc(rb, qb, faults=Faults(crash_before_quickbooks_on={1})).run_once().status == "aborted"
    assert count_invoices(qb, "LID-1") == 1  # only Someone Else's
    assert _session(rb, Probing(qb, bad=0)).status == "ok"
    r = job(rb, never_ran)["results"][0]
    assert r["state"] == "done" and "reconciled" not in r["status_message"], r
    assert count_invoices(qb, "LID-1") == 2
    mine = [i for i in qb.records("Invoice") if i["RefNumber"] == "LID-1" and i["TxnID"] == r["txn_id"]]
    assert mine and mine[0]["CustomerRef"]["ListID"] == owner
    applied = enqueue(rb, [_invoice_by_list_id(owner, "LID-2")]).json()["id"]
    assert wc(rb, qb, faults=Faults(drop_ack_on={1})).run_once().status == "aborted"
    assert _session(rb, Probing(qb, bad=0)).status == "ok"
    r = job(rb, applied)["results"][0]
    assert r["state"] == "done" and "reconciled" in r["status_message"], r
    assert count_invoices(qb, "LID-2") == 2  # Someone Else's and ours, never a third


# -- item 4: a lost Mod and a QuickBooks user editing the record -------------------------------------------


def _customer_mod(list_id: str, seq: str, **fields: str) -> str:
    body = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items())
    return (
        f"<CustomerModRq><CustomerMod><ListID>{list_id}</ListID><EditSequence>{seq}</EditSequence>{body}"
        "</CustomerMod></CustomerModRq>"
    )


def _user_edits(qb, name: str, **fields: str) -> None:
    """A QuickBooks user changes the record in the company file (its EditSequence changes)."""
    rec = _customer(qb, name)
    answer = qb.process(
        '<?xml version="1.0"?><?qbxml version="13.0"?><QBXML><QBXMLMsgsRq onError="stopOnError">'
        f"{_customer_mod(rec['ListID'], rec['EditSequence'], **fields)}</QBXMLMsgsRq></QBXML>"
    )
    assert 'statusCode="0"' in answer, answer


def test_lost_mod_with_a_user_edit_meanwhile_is_resent_not_counted_done(rb, qb):
    """Our Mod never ran and a user edited another field: the EditSequence differs, but the record lacks our
    CompanyName, so the Mod is resent over the fresh EditSequence (both changes stay). A Mod that did run
    and was followed by a user edit elsewhere is recognised by its fields."""
    ids = _setup(rb, qb, "Edited Co", "Applied Co")
    target = ids["Edited Co"]
    jid = enqueue(
        rb, [_customer_mod(target["list_id"], target["edit_sequence"], CompanyName="Ours Ltd")]
    ).json()["id"]
    assert wc(rb, qb, faults=Faults(crash_before_quickbooks_on={1})).run_once().status == "aborted"
    _user_edits(qb, "Edited Co", Phone="555-0100")
    assert _session(rb, Probing(qb, bad=0)).status == "ok"
    result = job(rb, jid)
    r = result["results"][0]
    assert result["state"] == "completed" and r["state"] == "done" and r["status_code"] == 0, r
    assert "reconciled" not in r["status_message"]
    rec = _customer(qb, "Edited Co")
    assert rec.get("CompanyName") == "Ours Ltd" and rec.get("Phone") == "555-0100", rec

    applied = ids["Applied Co"]
    jid = enqueue(
        rb, [_customer_mod(applied["list_id"], applied["edit_sequence"], CompanyName="Applied Ltd")]
    ).json()["id"]
    assert wc(rb, qb, faults=Faults(drop_ack_on={1})).run_once().status == "aborted"
    _user_edits(qb, "Applied Co", Phone="555-0199")
    seq_after_user = _customer(qb, "Applied Co")["EditSequence"]
    assert _session(rb, Probing(qb, bad=0)).status == "ok"
    r = job(rb, jid)["results"][0]
    assert (
        r["state"] == "done" and "reconciled" in r["status_message"] and "EditSequence" in r["status_message"]
    )
    rec = _customer(qb, "Applied Co")
    assert rec["EditSequence"] == seq_after_user  # not resent
    assert rec.get("CompanyName") == "Applied Ltd" and rec.get("Phone") == "555-0199"


# -- item 8: a lost DataExtAdd is replayed --------------------------------------------------------------


@pytest.mark.parametrize("fault", ["drop_ack", "crash_before"])
def test_lost_data_ext_add_is_replayed_not_failed(rb, qb, fault):
    """Applied (the replay is refused as a duplicate: done) or not (the replay writes it): done either way."""
    ids = _setup(rb, qb, "Ext Co")
    list_id = ids["Ext Co"]["list_id"]
    define = (
        "<DataExtDefAddRq><DataExtDefAdd><OwnerID>0</OwnerID><DataExtName>SalesforceId</DataExtName>"
        "<DataExtType>STR255TYPE</DataExtType><AssignToObject>Customer</AssignToObject></DataExtDefAdd>"
        "</DataExtDefAddRq>"
    )
    assert job(rb, enqueue(rb, [define]).json()["id"])["state"] == "queued"
    assert wc(rb, qb).run_once().status == "ok"
    add = (
        "<DataExtAddRq><DataExtAdd><OwnerID>0</OwnerID><DataExtName>SalesforceId</DataExtName>"
        f"<ListDataExtType>Customer</ListDataExtType><ListObjRef><ListID>{list_id}</ListID></ListObjRef>"
        "<DataExtValue>001A000000ext01</DataExtValue></DataExtAdd></DataExtAddRq>"
    )
    jid = enqueue(rb, [add]).json()["id"]
    faults = Faults(drop_ack_on={1}) if fault == "drop_ack" else Faults(crash_before_quickbooks_on={1})
    assert wc(rb, qb, faults=faults).run_once().status == "aborted"
    assert _session(rb, Probing(qb, bad=0)).status == "ok"
    result = job(rb, jid)
    r = result["results"][0]
    assert result["state"] == "completed", r
    assert r["state"] == "done" and r["status_code"] == 0, r
    assert ("duplicate" in r["status_message"]) == (fault == "drop_ack")
    assert qb.data_ext("0", "SalesforceId", list_id) == "001A000000ext01"


# -- item 6: recovery answers carrying only ErrorRecovery ----------------------------------------------------


def _error_recovery_only(qb):
    """QuickBooks answering oldMessageSetID with each stored Add/Mod *Rs reduced to its ErrorRecovery ids."""
    from lxml import etree

    def process(doc: str) -> str:
        answer = qb.process(doc)
        if "oldMessageSetID" not in doc:
            return answer
        root = etree.fromstring(answer.encode())
        for rs in root.find("QBXMLMsgsRs"):
            if rs.get("requestID", "").startswith("probe.") or "Query" in rs.tag:
                continue
            ret = next((c for c in rs if c.tag.endswith("Ret")), None)
            if ret is None:
                continue
            rec = etree.SubElement(rs, "ErrorRecovery")
            for name in ("ListID", "TxnID", "EditSequence"):
                value = ret.findtext(name)
                if value is not None:
                    etree.SubElement(rec, name).text = value
            rs.remove(ret)
        return etree.tostring(root, encoding="unicode")

    return process


@pytest.mark.parametrize("served_by", ["hand-made", "simulator"])
def test_recovery_answers_with_only_error_recovery_settle_the_requests(rb, tmp_path, served_by):
    """The stored answers come back as ErrorRecovery aggregates (rewritten here from full ones, or by the
    simulator's `recovery_shape="error_recovery"`): ids and EditSequence are taken from them."""
    from erpsync.sandbox.quickbooks import CompanyFile

    if served_by == "simulator":
        qb = CompanyFile(tmp_path / "er.qbw", recovery_shape="error_recovery")
        shaped = qb.process
    else:
        qb = CompanyFile(tmp_path / "er.qbw")
        shaped = _error_recovery_only(qb)
    _setup(rb, qb, "Recovery Customer")
    jid = enqueue(rb, [customer_add("Shape Co"), invoice_add("Recovery Customer", "ER-1")]).json()["id"]
    assert wc(rb, qb, faults=Faults(drop_ack_on={1})).run_once().status == "aborted"
    seen: list[str] = []

    def recording(doc: str) -> str:
        answer = shaped(doc)
        seen.append(answer)
        return answer

    assert _session(rb, recording).status == "ok"
    assert any("<ErrorRecovery>" in a for a in seen)  # the shape under test was really served
    result = job(rb, jid)
    customer, invoice = result["results"]
    assert result["state"] == "completed", result
    assert customer["list_id"] == _customer(qb, "Shape Co")["ListID"]
    assert customer["edit_sequence"] == _customer(qb, "Shape Co")["EditSequence"]
    stored = [i for i in qb.records("Invoice") if i["RefNumber"] == "ER-1"]
    assert invoice["txn_id"] == stored[0]["TxnID"] and invoice["edit_sequence"] == stored[0]["EditSequence"]
    assert count_customers(qb, "Shape Co") == 1 and count_invoices(qb, "ER-1") == 1
