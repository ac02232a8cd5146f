"""Response parsing: the captured QuickBooks payloads, lenient order, damaged documents."""

from __future__ import annotations

import re

import pytest

from erpsync.qbwc_bridge import qbxml as q
from tests.conftest import SHARED

QBWC_FIXTURES = SHARED / "fixtures" / "qbwc"


def qbwc_fixture(name: str) -> bytes:
    """Return the bytes of fixture `name`; fail (never skip, never pass) if it is missing or empty."""
    path = QBWC_FIXTURES / name
    if not path.is_file():
        pytest.fail(f"QuickBooks fixture {path} is missing", pytrace=False)
    data = path.read_bytes()
    if not data.strip():
        pytest.fail(f"QuickBooks fixture {path} is empty: nothing to test against", pytrace=False)
    return data


def test_no_captured_fixture_is_empty():
    """Every captured payload has content; an empty one would let parser tests pass on nothing."""
    files = sorted(QBWC_FIXTURES.glob("*.xml"))
    assert len(files) >= 10, f"expected the captured QuickBooks payloads in {QBWC_FIXTURES}"
    empty = [f.name for f in files if not f.read_bytes().strip()]
    assert not empty, f"these QuickBooks fixtures are empty and test nothing: {empty}"


def test_mixed_batch_matches_results_by_request_id():
    rs = q.parse_response(qbwc_fixture("hotglue-qbwc-common_customer-batch-mixed.response.xml"))
    by_id = rs.by_request_id()
    assert [r.status_code for r in rs.responses] == [0, 3100, 3250, 3130, 0]
    first, dup, feature, parent, last = (by_id[f"ext-mix-{i}"] for i in range(1, 6))
    assert first.list_id == "8000274C-1785964190" and first.edit_sequence == "1785964190"
    assert first.records[0]["CompanyName"] == "Valid first"  # CompanyName before Sublevel: read anyway
    assert dup.severity == "Error" and 'HG-BATCH-MIX-1785964184-1"' in dup.message and dup.records == []
    assert isinstance(q.error_for(dup), q.status.QbRecordRejectedError)
    assert isinstance(q.error_for(feature), q.status.QbFatalStatusError)
    assert isinstance(q.error_for(parent), q.status.QbRecordRejectedError)
    assert q.error_for(first) is None and q.error_for(last) is None
    assert last.list_id == "8000274D-1785964190"


def test_full_customer_record_becomes_nested_dict():
    rs = q.parse_response(qbwc_fixture("qbwc-qbwc_customer_add_response.xml"))
    (response,) = rs.responses
    assert response.kind == "CustomerAdd" and response.request_id is None and response.status_code == 0
    record = response.records[0]
    assert record["BillAddress"] == {
        "Addr1": "123 Main St.",
        "City": "Mountain View",
        "State": "CA",
        "PostalCode": "94566",
    }
    assert record["CreditLimit"] == "2000.00" and response.list_id == "8000001B-1405768916"
    assert "<CustomerRet>" in response.xml


def test_warning_and_error_query_responses():
    warn = q.parse_response(qbwc_fixture("qbwc-qbwc_customer_query_response_warn_500.xml")).responses[0]
    assert (warn.status_code, warn.severity, warn.records) == (500, "Warn", [])
    assert q.status.outcome_for(warn.status_code) is q.Outcome.EMPTY and q.error_for(warn) is None
    error = q.parse_response(qbwc_fixture("qbwc-qbwc_customer_query_response_error_3120.xml")).responses[0]
    assert error.status_code == 3120 and "cannot be found" in error.message
    assert isinstance(q.error_for(error), q.status.QbRecordRejectedError)


def test_request_id_echoed_empty_is_none_and_other_list_types_parse():
    response = q.parse_response(qbwc_fixture("hotglue-qbwc-common_account-add.response.xml")).responses[0]
    assert response.request_id is None and response.kind == "AccountAdd"
    assert response.records[0]["CurrencyRef"] == {"ListID": "80000096-1709842673", "FullName": "US Dollar"}


def test_receive_response_capture_parses():
    response = q.parse_response(qbwc_fixture("qbwc-qbwc_receive_response_customer_add.xml")).responses[0]
    assert response.list_id == "8000007B-1420967073" and response.records[0]["AccountNumber"] == "8"


def test_damaged_startup_response_keeps_the_intact_responses_and_flags_the_damaged_one():
    """The real HCP response has one garbled tag; host and preferences must still be usable."""
    data = qbwc_fixture("qbwc-qbwc_hcp_response_qbpro2014.xml")
    rs = q.parse_response(data)
    host, company, prefs = rs.responses
    assert [r.kind for r in rs.responses] == ["HostQuery", "CompanyQuery", "PreferencesQuery"]
    assert not host.damaged and not prefs.damaged
    assert host.records[0]["ProductName"] == "QuickBooks Pro 2014"
    assert host.records[0]["SupportedQBXMLVersion"][-1] == "13.0"
    assert len(host.records[0]["SupportedQBXMLVersion"]) == 16
    assert prefs.records[0]["PurchasesAndVendorsPreferences"]["IsUsingInventory"] == "false"
    assert company.damaged and company.status_code == 0 and company.request_id == "1"
    # The problem is located in the whole document, at the garbled "<yzer/DataExtType>" tag.
    position = data.index(b"<yzer/") + 1
    line, column, what = re.match(r"line (\d+), column (\d+): (.*)", company.problems[0]).groups()
    assert line == "1" and abs(int(column) - position) <= 6, (company.problems, position)
    assert what == "error parsing attribute name"
    assert any("CompanyQueryRs" in w and "damaged" in w for w in rs.warnings)
    assert company.records[0]["CompanyName"] == "myCompany"  # the part before the damage is intact


def test_responses_out_of_schema_order_and_unknown_elements_are_kept():
    xml = (
        '<?xml version="1.0" ?><QBXML><QBXMLMsgsRs newMessageSetID="m1" messageSetStatusCode="0">'
        '<CustomerQueryRs requestID="q" statusCode="0" statusSeverity="Info" statusMessage="Status OK" '
        'iteratorRemainingCount="7" iteratorID="{it-1}" retCount="2">'
        "<CustomerRet><Name>B</Name><ListID>2-1</ListID><FutureField>x</FutureField>"
        "<DataExtRet><OwnerID>0</OwnerID><DataExtName>SalesforceId</DataExtName><DataExtType>STR255TYPE</DataExtType>"
        "<DataExtValue>001A</DataExtValue></DataExtRet></CustomerRet>"
        "<CustomerRet><ListID>3-1</ListID><Name>C</Name></CustomerRet>"
        "</CustomerQueryRs></QBXMLMsgsRs></QBXML>"
    )
    rs = q.parse_response(xml)
    assert rs.message_set_id == "m1" and rs.message_set_status_code == 0
    response = rs.responses[0]
    assert (
        response.iterator_id == "{it-1}"
        and response.iterator_remaining_count == 7
        and response.ret_count == 2
    )
    assert [r["ListID"] for r in response.records] == ["2-1", "3-1"]
    assert response.records[0]["FutureField"] == "x"
    assert response.records[0]["DataExtRet"][0]["DataExtValue"] == "001A"  # always a list (maxOccurs>1)


def test_malformed_status_code_is_reported_without_losing_the_others():
    xml = (
        "<QBXML><QBXMLMsgsRs>"
        '<CustomerAddRs requestID="a" statusCode="zero" statusSeverity="Info" statusMessage="Status OK"/>'
        '<CustomerAddRs requestID="b" statusCode="0" statusSeverity="Info" statusMessage="Status OK">'
        "<CustomerRet><ListID>1-1</ListID><EditSequence>9</EditSequence></CustomerRet></CustomerAddRs>"
        "</QBXMLMsgsRs></QBXML>"
    )
    bad, good = q.parse_response(xml).responses
    assert bad.status_code == q.status.MALFORMED and "statusCode 'zero'" in bad.message
    assert isinstance(q.error_for(bad), q.status.QbFatalStatusError)
    assert good.list_id == "1-1" and good.edit_sequence == "9"


def test_del_and_error_recovery_responses_expose_ids():
    xml = (
        "<QBXML><QBXMLMsgsRs>"
        '<TxnDelRs requestID="d" statusCode="0" statusSeverity="Info" statusMessage="Status OK">'
        "<TxnDelType>Invoice</TxnDelType><TxnID>5-1</TxnID><TimeDeleted>2024-01-01T00:00:00</TimeDeleted></TxnDelRs>"
        '<CustomerAddRs requestID="r" statusCode="0" statusSeverity="Info">'
        "<ErrorRecovery><ListID>8-1</ListID><EditSequence>77</EditSequence></ErrorRecovery></CustomerAddRs>"
        "</QBXMLMsgsRs></QBXML>"
    )
    deleted, recovered = q.parse_response(xml).responses
    assert deleted.txn_id == "5-1" and deleted.records[0]["TxnDelType"] == "Invoice"
    assert recovered.list_id == "8-1" and recovered.edit_sequence == "77" and recovered.records == []


@pytest.mark.parametrize(
    ("payload", "error", "text"),
    [
        (b"", q.MalformedXmlError, "empty"),
        (b"not xml at all", q.MalformedXmlError, "line 1"),
        (b"<QBXML><Other/></QBXML>", q.QbxmlResponseError, "no QBXMLMsgsRs"),
        (b"<QBXML><QBXMLMsgsRs><CustomerAddRs statusCode='0'>", q.MalformedXmlError, "not well-formed"),
    ],
)
def test_unreadable_responses_raise_clear_errors(payload, error, text):
    with pytest.raises(error, match=text):
        q.parse_response(payload)
