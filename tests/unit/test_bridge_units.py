"""Bridge pieces without sockets or databases: SOAP parsing/rendering, WSDL, .qwc, settings, hashing, probes."""

from __future__ import annotations

import json

import pytest
from lxml import etree

from erpsync.errors import (
    AuthError,
    ConfigError,
    FatalSourceError,
    RateLimitedError,
    RecordError,
    RetriableSourceError,
)
from erpsync.qbwc_bridge import _qbxml, soap
from erpsync.qbwc_bridge.config import load_settings
from erpsync.qbwc_bridge.conversation import Conversation
from erpsync.qbwc_bridge.metrics import Counter, render
from erpsync.qbwc_bridge.models import Company
from erpsync.qbwc_bridge.passwords import hash_password, verify_password
from erpsync.qbwc_bridge.qwc import check_app_url, render_qwc

FIX = "fixtures/qbwc"


def _fixture(shared_dir, name: str) -> str:
    return (shared_dir / FIX / name).read_text()


def test_parse_call_reads_every_captured_envelope_style(shared_dir):
    """doc/literal with default namespace, RPC-encoded with xsi:type, and ns1:-prefixed bodies."""
    method, args = soap.parse_call(
        _fixture(shared_dir, "consolibyte-emulated_soap_authenticate_request.xml").encode(), max_bytes=10**6
    )
    assert method == "authenticate" and args["strusername"] == "PLACEHOLDER_TICKET_OR_USERNAME"
    method, args = soap.parse_call(
        _fixture(shared_dir, "consolibyte-emulated_soap_sendRequestXML_request.xml").encode(), max_bytes=10**6
    )
    assert method == "sendRequestXML"
    assert args["qbxmlcountry"] == "US" and args["qbxmlmajorvers"] == "6" and args["strhcpresponse"] == ""
    method, args = soap.parse_call(
        _fixture(shared_dir, "consolibyte-emulated_soap_receiveResponseXML_request.xml").encode(),
        max_bytes=10**6,
    )
    assert method == "receiveResponseXML" and args["hresult"] == "" and args["message"] == ""


def test_parse_call_is_case_insensitive_on_parameter_names():
    body = (
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><sendRequestXML>'
        b"<ticket>t</ticket><strCompanyFilename>C:\\a.QBW</strCompanyFilename></sendRequestXML></e:Body></e:Envelope>"
    )
    method, args = soap.parse_call(body, max_bytes=10**6)
    assert method == "sendRequestXML" and args["strcompanyfilename"] == "C:\\a.QBW"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "malformed"),
        (b"<x", "malformed"),
        (b"<Envelope/>", "no Body"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><Envelope/>', "DTD"),
    ],
)
def test_parse_call_refuses_bad_bodies_with_a_clear_fault(body, message):
    with pytest.raises(soap.SoapFault, match=message):
        soap.parse_call(body, max_bytes=10**6)


def test_render_escapes_qbxml_and_builds_the_string_array():
    xml = soap.render("sendRequestXML", '<?qbxml version="13.0"?><QBXML>&</QBXML>')
    root = etree.fromstring(xml)
    result = root.find(".//{http://developer.intuit.com/}sendRequestXMLResult")
    assert result.text == '<?qbxml version="13.0"?><QBXML>&</QBXML>'
    array = etree.fromstring(soap.render("authenticate", ["t", "", "", "60"]))
    strings = [el.text or "" for el in array.iter("{http://developer.intuit.com/}string")]
    assert strings == ["t", "", "", "60"]


def test_generated_wsdl_lists_every_method_document_literal():
    doc = etree.fromstring(soap.wsdl("https://bridge.example.com/qbwc").encode())
    ns = {"w": "http://schemas.xmlsoap.org/wsdl/", "s": "http://schemas.xmlsoap.org/wsdl/soap/"}
    ops = {op.get("name") for op in doc.findall("w:portType/w:operation", ns)}
    assert ops == set(soap.METHODS)
    assert {b.get("style") for b in doc.findall(".//s:operation", ns)} == {"document"}
    assert doc.find(".//s:address", ns).get("location") == "https://bridge.example.com/qbwc"


def test_passwords_are_salted_scrypt_hashes():
    one, two = hash_password("secret"), hash_password("secret")
    assert one != two and one.startswith("scrypt$") and "secret" not in one
    assert verify_password("secret", one) and not verify_password("Secret", one)
    assert not verify_password("secret", "md5$abc") and not verify_password("secret", "garbage")
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_app_url_rules():
    check_app_url("https://sync.example.com/qbwc")
    check_app_url("http://localhost:8443/qbwc")
    with pytest.raises(ConfigError, match="QBWC1010"):
        check_app_url("http://sync.example.com/qbwc")
    with pytest.raises(ConfigError, match="QBWC1001"):
        check_app_url("https://10.0.0.5/qbwc")


def test_qwc_has_every_required_field():
    company = Company(
        name="acme & co", username="acme", owner_id="{A}", file_id="{B}", run_every_minutes=5, description=""
    )
    text = render_qwc(company, public_url="https://sync.example.com", app_name="erpsync")
    root = etree.fromstring(text.encode())
    fields = {el.tag: el.text for el in root}
    assert fields["AppName"] == "erpsync (acme & co)" and fields["AppURL"] == "https://sync.example.com/qbwc"
    assert fields["AppSupport"] == "https://sync.example.com/support" and fields["UserName"] == "acme"
    assert fields["OwnerID"] == "{A}" and fields["FileID"] == "{B}" and fields["QBType"] == "QBFS"
    assert fields["IsReadOnly"] == "false" and root.findtext("Scheduler/RunEveryNMinutes") == "5"
    assert "AppID" in fields and "AppDescription" in fields


def test_settings_validate_at_startup(monkeypatch):
    monkeypatch.delenv("QBWC_BRIDGE_API_TOKEN", raising=False)
    assert load_settings(database_url="postgresql://u@h/db").database_url == "postgresql+psycopg://u@h/db"
    with pytest.raises(ConfigError, match="QBWC_BRIDGE_API_TOKEN is still a placeholder"):
        load_settings(api_token="change-me-bridge-token")
    assert load_settings(api_token="change-me", environment="development").api_token == "change-me"
    with pytest.raises(ConfigError, match="QBWC_BRIDGE_PUBLIC_URL"):
        load_settings(public_url="ftp://x")
    with pytest.raises(ConfigError, match="MAX_BATCH_REQUESTS"):
        load_settings(max_batch_requests=0)


def test_client_version_warns_below_2_1_0_30():
    c = Conversation.__new__(Conversation)
    assert c.client_version("2.1.0.30") == "" and c.client_version("2.3.0.36") == ""
    assert c.client_version("2.0.1.6").startswith("W:")


def test_parse_response_doc_reads_a_mixed_batch(shared_dir):
    status, answers = _qbxml.parse_response_doc(
        _fixture(shared_dir, "hotglue-qbwc-common_customer-batch-mixed.response.xml")
    )
    assert status is None
    assert [(a.request_id, a.status_code) for a in answers] == [
        ("ext-mix-1", 0),
        ("ext-mix-2", 3100),
        ("ext-mix-3", 3250),
        ("ext-mix-4", 3130),
        ("ext-mix-5", 0),
    ]
    assert answers[0].list_id == "8000274C-1785964190" and answers[0].edit_sequence == "1785964190"
    assert answers[1].list_id is None and "already in use" in answers[1].message


def test_parse_response_doc_without_request_id(shared_dir):
    _, answers = _qbxml.parse_response_doc(
        _fixture(shared_dir, "qbwc-qbwc_receive_response_customer_add.xml")
    )
    assert answers[0].request_id == "" and answers[0].list_id == "8000007B-1420967073"


def test_parse_response_doc_refuses_garbage():
    with pytest.raises(FatalSourceError, match="not usable XML"):
        _qbxml.parse_response_doc("<QBXML><QBXMLMsgsRs>")
    with pytest.raises(FatalSourceError, match="no QBXMLMsgsRs"):
        _qbxml.parse_response_doc("<QBXML/>")


def test_envelope_and_retag():
    rq = _qbxml.retag(
        '<CustomerQueryRq requestID="mine" iterator="Start"><MaxReturned>5</MaxReturned></CustomerQueryRq>',
        request_id="j.1",
        iterator="Continue",
        iterator_id="{it}",
    )
    root = etree.fromstring(rq)
    assert root.attrib == {"requestID": "j.1", "iterator": "Continue", "iteratorID": "{it}"}
    doc = _qbxml.envelope([rq], new_message_set_id="abc", old_message_set_id="old")
    msgs = etree.fromstring(doc.split("?>", 2)[2]).find("QBXMLMsgsRq")
    assert msgs.get("onError") == "continueOnError" and msgs.get("newMessageSetID") == "abc"
    assert msgs.get("oldMessageSetID") == "old" and '<?qbxml version="13.0"?>' in doc


def test_prepare_request_names_what_is_wrong():
    assert _qbxml.prepare_request(
        '<CustomerAddRq requestID="x"><CustomerAdd><Name>A</Name></CustomerAdd></CustomerAddRq>',
        request_id="j.0",
    )[:2] == ("CustomerAddRq", "x")
    with pytest.raises(RecordError, match="expected one qbXML request element"):
        _qbxml.prepare_request("<QBXMLMsgsRq/>", request_id="j.1")
    with pytest.raises(RecordError, match="not well-formed"):
        _qbxml.prepare_request("<CustomerAddRq>", request_id="j.2")


def test_prepare_request_parses_once_validates_and_puts_our_request_id_on():
    """What the jobs API stores: the caller's request with the bridge's requestID, its kind and the
    caller's requestID; a request QuickBooks would refuse, or one with a requestID over 50 characters,
    never reaches the queue."""
    rq = '<?xml version="1.0"?><CustomerAddRq requestID="mine"><CustomerAdd><Name>A &amp; B</Name></CustomerAdd></CustomerAddRq>'
    kind, caller, stored = _qbxml.prepare_request(rq, request_id="job.7")
    assert (kind, caller) == ("CustomerAddRq", "mine")
    assert (
        stored
        == '<CustomerAddRq requestID="job.7"><CustomerAdd><Name>A &amp; B</Name></CustomerAdd></CustomerAddRq>'
    )
    assert stored == _qbxml.retag(rq, request_id="job.7")
    with pytest.raises(RecordError, match="Name"):
        _qbxml.prepare_request(
            f"<CustomerAddRq><CustomerAdd><Name>{'x' * 42}</Name></CustomerAdd></CustomerAddRq>",
            request_id="j.1",
        )
    with pytest.raises(RecordError, match="requestID is 51 characters"):
        _qbxml.prepare_request(
            f'<CustomerAddRq requestID="{"r" * 51}"><CustomerAdd><Name>A</Name></CustomerAdd></CustomerAddRq>',
            request_id="j.2",
        )


def test_probes_identify_what_an_add_would_have_created():
    cust = _qbxml.probe_for(
        "CustomerAddRq",
        "<CustomerAddRq><CustomerAdd><Name>Job 1</Name><ParentRef><FullName>Acme</FullName></ParentRef></CustomerAdd></CustomerAddRq>",
        "p1",
    )
    assert "<FullName>Acme:Job 1</FullName>" in cust.query_xml and cust.query_xml.startswith(
        "<CustomerQueryRq"
    )
    inv = _qbxml.probe_for(
        "InvoiceAddRq",
        "<InvoiceAddRq><InvoiceAdd><CustomerRef><FullName>Acme</FullName></CustomerRef><RefNumber>SF-1</RefNumber>"
        "</InvoiceAdd></InvoiceAddRq>",
        "p2",
    )
    assert "<RefNumber>SF-1</RefNumber>" in inv.query_xml and inv.customer == "Acme"
    no_ref = "<InvoiceAddRq><InvoiceAdd><CustomerRef><FullName>Acme</FullName></CustomerRef></InvoiceAdd></InvoiceAddRq>"
    assert _qbxml.probe_for("InvoiceAddRq", no_ref, "p3") is None
    assert _qbxml.probe_for("DataExtAddRq", "<DataExtAddRq/>", "p4") is None
    _, [other, same] = _qbxml.parse_response_doc(
        '<QBXML><QBXMLMsgsRs><InvoiceQueryRs requestID="p2" statusCode="0"><InvoiceRet><TxnID>1</TxnID>'
        "<CustomerRef><FullName>Other</FullName></CustomerRef></InvoiceRet></InvoiceQueryRs>"
        '<InvoiceQueryRs requestID="p2" statusCode="0"><InvoiceRet><TxnID>2</TxnID>'
        "<CustomerRef><FullName>Acme</FullName></CustomerRef></InvoiceRet></InvoiceQueryRs></QBXMLMsgsRs></QBXML>"
    )
    assert _qbxml.probe_match(inv, other) is None
    assert _qbxml.probe_match(inv, same).findtext("TxnID") == "2"


def test_metrics_text_format():
    c = Counter("x_total", "help")
    c.inc(method='a"b')
    text = render([("g", "gauge help", {"company": "acme"}, 3)])
    assert "# TYPE qbwc_bridge_soap_calls_total counter" in text and 'g{company="acme"} 3' in text
    assert 'x_total{method="a\\"b"} 1.0' in "\n".join(c.lines())


def test_hook_config_and_error_classes():
    from airflow.sdk import Connection

    from erpsync.hooks.qbwc_bridge import bridge_config, classify_response, job_errors

    conn = Connection(
        conn_id="b",
        conn_type="qbwc_bridge",
        host="bridge",
        port=8443,
        schema="https",
        password="tok",
        extra=json.dumps({"ca_bundle": "/ca.pem", "company": "acme", "timeout": "12"}),
    )
    cfg = bridge_config(conn)
    assert (cfg.base_url, cfg.token, cfg.verify, cfg.company, cfg.timeout) == (
        "https://bridge:8443",
        "tok",
        "/ca.pem",
        "acme",
        12.0,
    )
    blank = Connection(
        conn_id="c", conn_type="qbwc_bridge", host="h", schema="https", extra=json.dumps({"ca_bundle": ""})
    )
    assert bridge_config(blank).verify is True and bridge_config(blank, company="x").company == "x"
    assert isinstance(classify_response(401, {"detail": "no"}, "w"), AuthError)
    assert isinstance(classify_response(404, {"detail": "x", "where": "company"}, "w"), ConfigError)
    assert isinstance(classify_response(404, {"detail": "x", "where": "job_id"}, "w"), FatalSourceError)
    invalid = classify_response(422, {"detail": "bad", "errors": [{"index": 3}]}, "w")
    assert isinstance(invalid, RecordError) and invalid.details["errors"] == [{"index": 3}]
    limited = classify_response(429, {"detail": "full"}, "w", retry_after="30")
    assert isinstance(limited, RateLimitedError) and limited.retry_after == 30.0
    assert isinstance(classify_response(503, "oops", "w"), RetriableSourceError)
    lines = job_errors(
        {
            "results": [
                {"index": 0, "state": "done", "status_code": 0},
                {
                    "index": 1,
                    "state": "failed",
                    "request_id": "r1",
                    "status_code": 3100,
                    "status_message": "dup",
                },
            ]
        }
    )
    assert lines == ["request 1 (r1): 3100 dup"]


def test_operator_validates_and_builds_its_idempotency_key():
    from types import SimpleNamespace

    from erpsync.operators.qbwc import QbwcJobOperator

    with pytest.raises(ValueError, match="on_error"):
        QbwcJobOperator(task_id="t", requests=[], on_error="later")
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=-1)
    assert QbwcJobOperator.idempotency_key({"ti": ti}) == "d/r/t"
    ti.map_index = 4
    assert QbwcJobOperator.idempotency_key({"ti": ti}) == "d/r/t/4"


def test_read_hcp_survives_the_damaged_real_capture(shared_dir):
    hcp = _qbxml.read_hcp(_fixture(shared_dir, "qbwc-qbwc_hcp_response_qbpro2014.xml"))
    assert hcp.max_version == (13, 0)
    assert hcp.file_ids == {"{512349B1-1111-2222-3333-000DE1813D20}": "{00000ee-1111-ffff-cccc-5ff123456047}"}
