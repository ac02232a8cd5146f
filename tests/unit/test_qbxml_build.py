"""Builders: schema order whatever the input order, lengths, alternatives, escaping, envelope."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from erpsync.errors import RecordError
from erpsync.qbwc_bridge import qbxml as q
from erpsync.qbwc_bridge.qbxml.safe_xml import parse_xml
from erpsync.qbwc_bridge.qbxml.validate import validate_document, validate_request

OWNER = "{3F2504E0-4F89-11D3-9A0C-0305E82C3301}"


def _tags(xml: str, path: str) -> list[str]:
    root = parse_xml(f"<x>{xml}</x>")
    return [child.tag for child in root.find(path)]


def test_customer_add_emits_schema_order_whatever_the_input_order():
    """Fields given back to front come out in CustomerAdd's xsd:sequence order."""
    fields = {
        "Notes": "n",
        "Email": "a@b.c",
        "Phone": "555",
        "BillAddress": {"PostalCode": "1234", "City": "Utrecht", "Addr1": "Main 1"},
        "LastName": "Doe",
        "FirstName": "Jane",
        "CompanyName": "Acme",
        "Name": "Acme BV",
    }
    rq = q.customer_add(fields, request_id="c1")
    assert _tags(rq.xml, "CustomerAddRq/CustomerAdd") == [
        "Name", "CompanyName", "FirstName", "LastName", "BillAddress", "Phone", "Email", "Notes",
    ]  # fmt: skip
    assert _tags(rq.xml, "CustomerAddRq/CustomerAdd/BillAddress") == ["Addr1", "City", "PostalCode"]
    assert rq.kind == "CustomerAdd" and rq.request_id == "c1"
    validate_request(rq.xml, use_schema=True)


def test_invoice_lines_keep_their_order_and_lines_are_ordered_inside():
    lines = [
        {"Rate": Decimal("10"), "Quantity": 3, "ItemRef": {"FullName": "WIDGET-01"}, "Desc": "first"},
        {"Amount": 5, "ItemRef": "SERVICE", "Desc": "second"},
    ]
    rq = q.invoice_add(
        {
            "InvoiceLineAdd": lines,
            "Memo": "m",
            "RefNumber": "SF-1",
            "TxnDate": dt.date(2024, 5, 2),
            "CustomerRef": {"ListID": "80000001-1"},
        },
        request_id="i1",
    )
    assert _tags(rq.xml, "InvoiceAddRq/InvoiceAdd") == [
        "CustomerRef", "TxnDate", "RefNumber", "Memo", "InvoiceLineAdd", "InvoiceLineAdd",
    ]  # fmt: skip
    root = parse_xml(rq.xml)
    first, second = root.findall("InvoiceAdd/InvoiceLineAdd")
    assert [c.tag for c in first] == ["ItemRef", "Desc", "Quantity", "Rate"]
    assert first.findtext("Rate") == "10" and second.findtext("Amount") == "5.00"
    assert second.findtext("ItemRef/FullName") == "SERVICE"  # a bare string for a Ref is its FullName
    validate_request(rq.xml, use_schema=True)


def test_too_long_field_names_the_path_value_and_rule():
    with pytest.raises(q.QbxmlValidationError) as caught:
        q.customer_add({"Name": "ok", "BillAddress": {"City": "C" * 32}}, request_id="c")
    error = caught.value
    assert isinstance(error, RecordError)
    assert error.field == "CustomerAddRq/CustomerAdd/BillAddress/City"
    assert "maxLength is 31" in str(error) and "32 characters" in str(error)
    assert error.value == "C" * 32


@pytest.mark.parametrize(
    ("build", "field", "rule"),
    [
        (
            lambda: q.customer_add({"Nmae": "typo"}, request_id="r"),
            "CustomerAdd/Nmae",
            "is not an element of CustomerAdd",
        ),
        (lambda: q.customer_add({"CompanyName": "x"}, request_id="r"), "CustomerAdd/Name", "is required"),
        (
            lambda: q.customer_query(request_id="r", list_ids=["1"], full_names=["a"]),
            "CustomerQueryRq/FullName",
            "only one of",
        ),
        (
            lambda: q.item_service_add({"Name": "S"}, request_id="r"),
            "ItemServiceAdd",
            "needs one of SalesOrPurchase",
        ),
        (
            lambda: q.customer_add({"Name": "x", "IsActive": "maybe"}, request_id="r"),
            "CustomerAdd/IsActive",
            "true or false",
        ),
        (
            lambda: q.customer_add({"Name": "x", "OpenBalance": "12.345"}, request_id="r"),
            "CustomerAdd/OpenBalance",
            "amount",
        ),
        (
            lambda: q.customer_add({"Name": "x", "JobStatus": "Busy"}, request_id="r"),
            "CustomerAdd/JobStatus",
            "must be one of",
        ),
        (lambda: q.customer_add({"Name": "x\x01"}, request_id="r"), "CustomerAdd/Name", "control character"),
        (
            lambda: q.customer_add({"Name": "x", "JobStartDate": "2024-02-30"}, request_id="r"),
            "CustomerAdd/JobStartDate",
            "calendar",
        ),
        (
            lambda: q.customer_add({"Name": "x", "BillAddress": "Main 1"}, request_id="r"),
            "CustomerAdd/BillAddress",
            "mapping",
        ),
        (lambda: q.customer_add({"Name": ["a", "b"]}, request_id="r"), "CustomerAdd/Name", "maxOccurs is 1"),
        (lambda: q.customer_add({"Name": "x"}, request_id="r" * 51), "requestID", "1060"),
        (
            lambda: q.build_request("CustomerFrobnicate", {}, request_id="r"),
            "CustomerFrobnicate",
            "not a request kind",
        ),
        (lambda: q.customer_query(request_id="r", iterator="Continue"), "iteratorID", "is required"),
        (lambda: q.data_ext_add(OWNER, "SalesforceId", "Planet", "1", "v"), "ListDataExtType", "object type"),
    ],
)
def test_schema_breaking_requests_raise_errors_naming_the_field(build, field, rule):
    with pytest.raises(q.QbxmlValidationError) as caught:
        build()
    assert field in caught.value.field
    assert rule in str(caught.value)


def test_text_is_escaped_and_round_trips():
    name = 'A&B <"Quotes"> \r\n'
    rq = q.customer_add({"Name": name}, request_id='id&"1')
    root = parse_xml(rq.xml)
    assert root.findtext("CustomerAdd/Name") == name
    assert root.get("requestID") == 'id&"1'


def test_values_are_formatted_for_their_simple_types():
    rq = q.customer_add(
        {
            "Name": "x",
            "IsActive": False,
            "OpenBalance": 12.5,
            "OpenBalanceDate": dt.date(2024, 1, 31),
            "CreditLimit": Decimal("1000"),
        },
        request_id="r",
    )
    root = parse_xml(rq.xml)
    assert root.findtext("CustomerAdd/IsActive") == "false"
    assert root.findtext("CustomerAdd/OpenBalance") == "12.50"
    assert root.findtext("CustomerAdd/OpenBalanceDate") == "2024-01-31"
    assert root.findtext("CustomerAdd/CreditLimit") == "1000.00"
    query = q.invoice_query(
        request_id="q",
        modified_from=dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
        include_line_items=True,
        owner_id="0",
    )
    root = parse_xml(query.xml)
    assert root.findtext("ModifiedDateRangeFilter/FromModifiedDate") == "2024-05-01T00:00:00+00:00"
    validate_request(query.xml, use_schema=True)


def test_envelope_has_the_qbxml_skeleton_and_message_set_ids():
    requests = [q.customer_add({"Name": f"C{i}"}, request_id=f"r{i}") for i in range(3)]
    doc = q.envelope(requests, on_error="stop", new_message_set_id="job-1:try-1")
    assert doc.startswith('<?xml version="1.0" encoding="utf-8"?>\n<?qbxml version="13.0"?>\n<QBXML>')
    root = parse_xml(doc)
    msgs = root.find("QBXMLMsgsRq")
    assert msgs.get("onError") == "stopOnError" and msgs.get("newMessageSetID") == "job-1:try-1"
    assert [rq.get("requestID") for rq in msgs] == ["r0", "r1", "r2"]
    validate_document(doc, use_schema=True)
    recovery = q.envelope([], old_message_set_id="job-1:try-1")
    validate_document(recovery, use_schema=True)
    assert parse_xml(recovery).find("QBXMLMsgsRq").get("oldMessageSetID") == "job-1:try-1"


def test_envelope_refuses_duplicate_request_ids_and_bad_modes():
    rq = q.customer_add({"Name": "a"}, request_id="same")
    with pytest.raises(q.QbxmlValidationError, match="requestID is used twice"):
        q.envelope([rq, q.customer_add({"Name": "b"}, request_id="same")])
    with pytest.raises(q.QbxmlValidationError, match="onError"):
        q.envelope([rq], on_error="ignoreErrors")
    with pytest.raises(q.QbxmlValidationError, match="version"):
        q.envelope([rq], version="13")
    with pytest.raises(q.QbxmlValidationError, match="9004") as caught:
        q.envelope([rq], new_message_set_id="m" * 25)
    assert caught.value.field == "QBXMLMsgsRq@newMessageSetID"


def test_every_named_builder_validates_against_the_xsd():
    """One request of every builder family, all valid against Intuit's schema."""
    requests = [
        q.host_query(request_id="h"),
        q.company_query(request_id="co", owner_id=OWNER),
        q.customer_add(
            {
                "Name": "Child",
                "ParentRef": {"FullName": "Parent"},
                "ShipToAddress": [{"Name": "Dock", "Addr1": "1"}],
            },
            request_id="a1",
        ),
        q.customer_mod("80000001-1", "123", {"Phone": "1", "Name": "N"}, request_id="a2"),
        q.customer_query(
            request_id="a3",
            modified_from="2024-01-01T00:00:00",
            max_returned=100,
            iterator="Start",
            include_ret_elements=["ListID", "Name"],
            owner_id="0",
        ),
        q.customer_query(request_id="a4", iterator="Continue", iterator_id="{abc}", max_returned=100),
        q.item_service_add(
            {
                "Name": "Consulting",
                "SalesOrPurchase": {"Price": Decimal("95.5"), "Desc": "Hour", "AccountRef": "Sales"},
            },
            request_id="b1",
        ),
        q.item_service_mod("80000002-1", "1", {"SalesOrPurchaseMod": {"Price": 100}}, request_id="b2"),
        q.item_service_query(request_id="b3", full_names=["Consulting"]),
        q.item_non_inventory_add(
            {"Name": "Widget", "SalesOrPurchase": {"Price": 10, "AccountRef": {"FullName": "Sales"}}},
            request_id="c1",
        ),
        q.item_non_inventory_mod("80000003-1", "1", {"Name": "Widget2"}, request_id="c2"),
        q.item_non_inventory_query(request_id="c3", active_status="All"),
        q.item_inventory_add(
            {
                "Name": "Gadget",
                "IncomeAccountRef": "Sales",
                "COGSAccountRef": "COGS",
                "AssetAccountRef": "Inventory Asset",
                "QuantityOnHand": 5,
            },
            request_id="d1",
        ),
        q.item_inventory_mod("80000004-1", "1", {"SalesPrice": "12.00"}, request_id="d2"),
        q.item_inventory_query(request_id="d3", list_ids=["80000004-1"]),
        q.item_query(request_id="d4", full_names=["Gadget"]),
        q.sales_order_add(
            {"CustomerRef": "Acme", "SalesOrderLineAdd": [{"ItemRef": "Widget", "Quantity": 1, "Rate": 10}]},
            request_id="e1",
        ),
        q.sales_order_mod("1-1", "1", {"Memo": "x"}, request_id="e2"),
        q.sales_order_query(request_id="e3", ref_numbers=["SO-1"], include_line_items=True),
        q.invoice_add(
            {"CustomerRef": "Acme", "InvoiceLineAdd": [{"ItemRef": "Widget", "Amount": 10}]}, request_id="f1"
        ),
        q.invoice_mod("2-1", "1", {"Memo": "y"}, request_id="f2"),
        q.invoice_query(request_id="f3", customer_list_id="80000001-1", max_returned=5),
        q.sales_receipt_add(
            {
                "CustomerRef": "Acme",
                "PaymentMethodRef": "Cash",
                "SalesReceiptLineAdd": [{"ItemRef": "Widget", "Amount": 10}],
            },
            request_id="g1",
        ),
        q.sales_receipt_mod("3-1", "1", {"Memo": "z"}, request_id="g2"),
        q.sales_receipt_query(request_id="g3", txn_ids=["3-1"]),
        q.txn_del("Invoice", "2-1", request_id="x1"),
        q.list_del("Customer", "80000001-1", request_id="x2"),
        q.data_ext_def_add(OWNER, "SalesforceId", "STR255TYPE", ["Customer", "Invoice"], request_id="y1"),
        q.data_ext_def_query(owner_id=OWNER, request_id="y2"),
        q.data_ext_add(
            OWNER, "SalesforceId", "Customer", "80000001-1", "001XXXXXXXXXXXXXXX", request_id="y3"
        ),
        q.data_ext_mod(OWNER, "SalesforceId", "Invoice", "2-1", "006XXXXXXXXXXXXXXX", request_id="y4"),
        q.data_ext_del(OWNER, "SalesforceId", "Customer", {"FullName": "Acme"}, request_id="y5"),
    ]
    doc = q.envelope(requests)
    validate_document(doc, use_schema=True)
    validate_document(doc, use_schema=False)
    assert len({r.request_id for r in requests}) == len(requests)


def test_validate_request_accepts_a_standalone_request_with_declaration():
    rq = q.customer_add({"Name": "A"}, request_id="r")
    validate_request('<?xml version="1.0" encoding="utf-8"?>\n' + rq.xml, use_schema=True)
    validate_request('<?xml version="1.0"?>' + rq.xml, use_schema=False)
    with pytest.raises(q.QbxmlValidationError, match="exactly one request"):
        validate_request(rq.xml + rq.xml)


def test_rendering_stored_records_unchecked_keeps_schema_order_and_refuses_unknown_elements():
    """The simulator renders records it already checked on the way in without checking their text
    again: the order is still the schema's, text is escaped, and an unknown element still fails."""
    from erpsync.qbwc_bridge.qbxml.build import render_element
    from erpsync.qbwc_bridge.qbxml.errors import QbxmlValidationError

    record = {"Name": "A & B", "ListID": "1-1", "IsActive": True, "BillAddress": {"City": "X", "Addr1": "Y"}}
    unchecked = render_element("CustomerRet", record, checked=False)
    assert unchecked == render_element("CustomerRet", record)
    assert unchecked.index("<ListID>") < unchecked.index("<Name>A &amp; B</Name>")
    assert unchecked.index("<Addr1>") < unchecked.index("<City>")
    long_name = {"ListID": "1-1", "Name": "x" * 60}
    with pytest.raises(QbxmlValidationError, match="Name"):
        render_element("CustomerRet", long_name)
    assert "x" * 60 in render_element("CustomerRet", long_name, checked=False)
    with pytest.raises(QbxmlValidationError, match="Nickname"):
        render_element("CustomerRet", {"ListID": "1-1", "Nickname": "n"}, checked=False)


@pytest.mark.parametrize("use_schema", [False, True])
@pytest.mark.parametrize(
    "xml",
    [
        "<CustomerAddRq><CustomerAdd><Name>Ok</Name></CustomerAdd></CustomerAddRq>",
        "<CustomerAddRq><CustomerAdd><Name>" + "x" * 42 + "</Name></CustomerAdd></CustomerAddRq>",
        "<CustomerAddRq><CustomerAdd><Phone>1</Phone><Name>Order</Name></CustomerAdd></CustomerAddRq>",
        "<CustomerAddRq><CustomerAdd><Nickname>n</Nickname></CustomerAdd></CustomerAddRq>",
        '<CustomerQueryRq iterator="Sideways"><MaxReturned>5</MaxReturned></CustomerQueryRq>',
    ],
)
def test_a_parsed_request_gets_the_same_verdict_as_its_text(xml, use_schema):
    """`validate_request_element` (the bridge's enqueue and the simulator hold parsed elements) and
    `validate_request` (text) accept and refuse the same requests, naming the same field."""
    from erpsync.qbwc_bridge.qbxml.errors import QbxmlValidationError

    def verdict(check, arg):
        try:
            check(arg, use_schema=use_schema)
        except QbxmlValidationError as exc:
            return exc.field
        return "ok"

    element = parse_xml(xml)
    assert verdict(q.validate_request_element, element) == verdict(validate_request, xml)
