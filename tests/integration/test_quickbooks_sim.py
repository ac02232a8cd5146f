"""Contract of the QuickBooks company-file simulator through `process()`: what QuickBooks answers."""

from __future__ import annotations

import pytest

from erpsync.errors import RecordError, RetriableSourceError, StaleRecordError
from erpsync.qbwc_bridge import qbxml as q
from erpsync.qbwc_bridge.qbxml.validate import load_schema
from erpsync.sandbox.quickbooks import CompanyFile, RequestProcessorError, ResponseLostError

OWNER = "{3F2504E0-4F89-11D3-9A0C-0305E82C3301}"


class Clock:
    """A settable clock so TimeModified / EditSequence / date filters are deterministic."""

    def __init__(self, now: float = 1_717_200_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def company(clock) -> CompanyFile:
    company = CompanyFile(None, clock=clock)
    yield company
    company.close()


def run(company: CompanyFile, *requests, **envelope_args) -> q.QbResponseSet:
    """Send one message set and return the parsed answer, checking it against the real XSD."""
    from lxml import etree

    answer = company.process(q.envelope(list(requests), **envelope_args))
    schema = load_schema()
    assert schema.validate(etree.fromstring(answer.encode())), schema.error_log
    return q.parse_response(answer)


def add_customer(company, name, **fields) -> q.QbResponse:
    return run(company, q.customer_add({"Name": name, **fields}, request_id=f"add-{name}")).responses[0]


def test_add_returns_the_full_record_and_query_finds_it(company):
    added = add_customer(
        company, "Acme BV", CompanyName="Acme", BillAddress={"City": "Utrecht", "Addr1": "Main 1"}
    )
    assert added.status_code == 0 and added.request_id == "add-Acme BV"
    record = added.records[0]
    assert record["FullName"] == "Acme BV" and record["Sublevel"] == "0" and record["IsActive"] == "true"
    assert record["TimeCreated"] == record["TimeModified"] == "2024-05-31T19:00:00-05:00"
    assert added.list_id and added.edit_sequence == "1717200000"
    found = run(company, q.customer_query(request_id="q", list_ids=[added.list_id])).responses[0]
    assert found.records[0]["BillAddress"] == {"Addr1": "Main 1", "City": "Utrecht"}


def test_mod_changes_edit_sequence_and_a_stale_one_is_refused(company, clock):
    added = add_customer(company, "Acme")
    first = run(
        company, q.customer_mod(added.list_id, added.edit_sequence, {"Phone": "555-1"}, request_id="m1")
    )
    modded = first.responses[0]
    assert (
        modded.status_code == 0 and modded.edit_sequence != added.edit_sequence
    )  # same second: still changes
    assert modded.records[0]["Phone"] == "555-1"
    stale = run(
        company, q.customer_mod(added.list_id, added.edit_sequence, {"Phone": "555-2"}, request_id="m2")
    )
    response = stale.responses[0]
    assert response.status_code == 3200 and f'"{added.edit_sequence}" is out-of-date' in response.message
    assert isinstance(q.error_for(response), StaleRecordError)
    clock.now += 60
    again = run(
        company, q.customer_mod(added.list_id, modded.edit_sequence, {"Name": "Acme Corp"}, request_id="m3")
    )
    assert again.responses[0].records[0]["FullName"] == "Acme Corp"
    assert again.responses[0].records[0]["TimeModified"] == "2024-05-31T19:01:00-05:00"


def test_duplicate_names_are_refused_case_insensitively_but_jobs_may_reuse_a_leaf_name(company):
    add_customer(company, "Acme")
    duplicate = add_customer(company, "ACME")
    assert (
        duplicate.status_code == 3100
        and duplicate.message == 'The name "ACME" of the list element is already in use.'
    )
    assert isinstance(q.error_for(duplicate), RecordError)
    add_customer(company, "Beta")
    job_a = add_customer(company, "Install", ParentRef={"FullName": "Acme"})
    job_b = run(company, q.customer_add({"Name": "Install", "ParentRef": "Beta"}, request_id="j2")).responses[
        0
    ]
    assert job_a.records[0]["FullName"] == "Acme:Install" and job_a.records[0]["Sublevel"] == "1"
    assert job_b.status_code == 0 and job_b.records[0]["FullName"] == "Beta:Install"
    item_clash = run(
        company,
        q.item_service_add(
            {"Name": "Acme", "SalesOrPurchase": {"Price": 1, "AccountRef": "Sales"}}, request_id="i"
        ),
    )
    assert item_clash.responses[0].status_code == 0  # items have their own name space


def test_unknown_references_answer_3130_and_3140(company):
    parent = add_customer(company, "Child", ParentRef={"FullName": "No Such Parent"})
    assert parent.status_code == 3130 and '"No Such Parent" in the Customers list' in parent.message
    add_customer(company, "Acme")
    rs = run(
        company,
        q.invoice_add(
            {"CustomerRef": "Ghost", "InvoiceLineAdd": [{"ItemRef": "Widget", "Amount": 1}]}, request_id="v1"
        ),
        q.invoice_add(
            {"CustomerRef": "Acme", "InvoiceLineAdd": [{"ItemRef": "Widget", "Amount": 1}]}, request_id="v2"
        ),
        q.item_service_add(
            {"Name": "Svc", "SalesOrPurchase": {"Price": 1, "AccountRef": "No Account"}}, request_id="i1"
        ),
    )
    ghost, widget, account = rs.responses
    assert ghost.status_code == 3140 and 'QuickBooks Customer "Ghost" in the Invoice' in ghost.message
    assert widget.status_code == 3140 and 'QuickBooks Item "Widget"' in widget.message
    assert account.status_code == 3140 and 'QuickBooks Account "No Account"' in account.message
    assert company.count("Invoice") == 0 and company.count("Item") == 0


def test_not_found_is_500_for_named_objects_1_for_empty_filters_and_3120_for_mods(company):
    add_customer(company, "Acme")
    rs = run(
        company,
        q.customer_query(request_id="a", list_ids=["80000999-1"]),
        q.customer_query(request_id="b", full_names=["Acme", "Nobody"]),
        q.customer_query(request_id="c", modified_from="2030-01-01T00:00:00"),
        q.customer_mod("80000999-1", "1", {"Phone": "1"}, request_id="d"),
        q.invoice_query(request_id="e", txn_ids=["999-1"]),
    )
    by_id = rs.by_request_id()
    assert (by_id["a"].status_code, by_id["a"].severity) == (500, "Warn") and '("80000999-1")' in by_id[
        "a"
    ].message
    assert by_id["b"].status_code == 500 and by_id["b"].records == []  # no partial answer, as QuickBooks does
    assert (by_id["c"].status_code, by_id["c"].severity) == (1, "Info")
    assert (
        by_id["d"].status_code == 3120
        and 'Object "80000999-1" specified in the request cannot be found' in by_id["d"].message
    )
    assert by_id["e"].status_code == 500


def test_too_long_field_fails_that_request_with_3070_and_the_batch_goes_on(company):
    good = q.customer_add({"Name": "Fine"}, request_id="ok").xml
    too_long = (
        f'<CustomerAddRq requestID="long"><CustomerAdd><Name>{"N" * 42}</Name></CustomerAdd></CustomerAddRq>'
    )
    doc = (
        '<?xml version="1.0"?><?qbxml version="13.0"?><QBXML><QBXMLMsgsRq onError="continueOnError">'
        f"{too_long}{good}</QBXMLMsgsRq></QBXML>"
    )
    rs = q.parse_response(company.process(doc))
    long_rs, ok_rs = rs.responses
    assert (
        long_rs.status_code == 3070
        and f'The string "{"N" * 42}" in the field "Name" is too long.' == long_rs.message
    )
    assert ok_rs.status_code == 0 and company.count("Customer") == 1


def test_on_error_modes(company):
    add_customer(company, "Taken")
    batch = [
        q.customer_add({"Name": "One"}, request_id="1"),
        q.customer_add({"Name": "Taken"}, request_id="2"),
        q.customer_add({"Name": "Three"}, request_id="3"),
    ]
    stop = run(company, *batch, on_error="stopOnError")
    assert [r.status_code for r in stop.responses] == [0, 3100]  # processing stops at the failure
    assert [r["Name"] for r in company.records("Customer")] == ["Taken", "One"]
    batch[0] = q.customer_add({"Name": "Four"}, request_id="1")
    rolled = run(company, *batch, on_error="rollbackOnError")
    assert [r.status_code for r in rolled.responses] == [0, 3100, 0]
    assert [r["Name"] for r in company.records("Customer")] == ["Taken", "One"]  # all undone
    go_on = run(company, *batch, on_error="continueOnError")
    assert [r.status_code for r in go_on.responses] == [0, 3100, 0]
    assert sorted(r["Name"] for r in company.records("Customer")) == ["Four", "One", "Taken", "Three"]


def test_iterator_pages_250_customers_within_one_session(company):
    adds = [q.customer_add({"Name": f"Customer {i:03d}"}, request_id=f"c{i}") for i in range(250)]
    assert all(r.status_code == 0 for r in run(company, *adds).responses)
    seen: list[str] = []
    first = run(company, q.customer_query(request_id="p1", iterator="Start", max_returned=100)).responses[0]
    assert (len(first.records), first.iterator_remaining_count) == (100, 150)
    seen += [r["Name"] for r in first.records]
    other_session = q.envelope(
        [
            q.customer_query(
                request_id="x", iterator="Continue", iterator_id=first.iterator_id, max_returned=100
            )
        ]
    )
    assert q.parse_response(company.process(other_session, session="other")).responses[0].status_code == 3391
    iterator_id, remaining, page = first.iterator_id, first.iterator_remaining_count, 1
    while remaining:
        page += 1
        rs = run(
            company,
            q.customer_query(
                request_id=f"p{page}", iterator="Continue", iterator_id=iterator_id, max_returned=100
            ),
        )
        response = rs.responses[0]
        assert response.status_code == 0 and response.iterator_id == iterator_id
        seen += [r["Name"] for r in response.records]
        remaining = response.iterator_remaining_count
    assert page == 3 and len(seen) == 250 and len(set(seen)) == 250
    gone = run(
        company,
        q.customer_query(request_id="late", iterator="Continue", iterator_id=iterator_id, max_returned=100),
    )
    assert gone.responses[0].status_code == 3391 and "is not valid" in gone.responses[0].message
    again = run(company, q.customer_query(request_id="s", iterator="Start", max_returned=10)).responses[0]
    company.end_session()
    ended = run(
        company,
        q.customer_query(request_id="t", iterator="Continue", iterator_id=again.iterator_id, max_returned=10),
    )
    assert ended.responses[0].status_code == 3391


def test_modified_date_range_filter(company, clock):
    add_customer(company, "Early")
    clock.now += 3600
    late = add_customer(company, "Late")
    since = late.records[0]["TimeModified"]
    rs = run(company, q.customer_query(request_id="q", modified_from=since))
    assert [r["Name"] for r in rs.responses[0].records] == ["Late"]
    rs = run(company, q.customer_query(request_id="q", modified_to="2024-05-31T19:30:00-05:00"))
    assert [r["Name"] for r in rs.responses[0].records] == ["Early"]
    invoice_rq = q.invoice_query(request_id="i", modified_from="2024-05-31")
    assert run(company, invoice_rq).responses[0].status_code == 1


def test_data_ext_round_trip(company):
    customer = add_customer(company, "Acme")
    rs = run(
        company,
        q.data_ext_def_add(OWNER, "SalesforceId", "STR255TYPE", ["Customer", "Invoice"], request_id="d1"),
        q.data_ext_add(OWNER, "SalesforceId", "Customer", customer.list_id, "001ABC", request_id="d2"),
        q.data_ext_add(OWNER, "SalesforceId", "Customer", customer.list_id, "001DEF", request_id="d3"),
        q.data_ext_add(OWNER, "NotDefined", "Customer", customer.list_id, "x", request_id="d4"),
        q.data_ext_def_add(OWNER, "SalesforceId", request_id="d5"),
    )
    defined, added, twice, undefined, redefined = rs.responses
    assert defined.status_code == 0 and defined.records[0]["DataExtName"] == "SalesforceId"
    assert added.status_code == 0 and added.records[0] == {
        "OwnerID": OWNER, "DataExtName": "SalesforceId", "DataExtType": "STR255TYPE", "DataExtValue": "001ABC",
    }  # fmt: skip
    assert twice.status_code == 3180 and undefined.status_code == 3120 and redefined.status_code == 3100
    plain = run(company, q.customer_query(request_id="q0", list_ids=[customer.list_id])).responses[0]
    assert "DataExtRet" not in plain.records[0]  # private fields only for their owner
    found = run(company, q.customer_query(request_id="q1", full_names=["Acme"], owner_id=OWNER)).responses[0]
    assert found.records[0]["DataExtRet"] == [added.records[0]]
    run(
        company, q.data_ext_mod(OWNER, "SalesforceId", "Customer", customer.list_id, "001XYZ", request_id="m")
    )
    assert company.data_ext(OWNER, "SalesforceId", customer.list_id) == "001XYZ"
    too_long = run(
        company,
        q.data_ext_mod(OWNER, "SalesforceId", "Customer", customer.list_id, "x" * 256, request_id="l"),
    )
    assert too_long.responses[0].status_code == 3070
    run(
        company,
        q.item_service_add(
            {"Name": "Svc", "SalesOrPurchase": {"Price": 5, "AccountRef": "Services"}}, request_id="i"
        ),
    )
    invoice = run(
        company,
        q.invoice_add(
            {"CustomerRef": "Acme", "InvoiceLineAdd": [{"ItemRef": "Svc", "Quantity": 3}]}, request_id="v"
        ),
    ).responses[0]
    run(company, q.data_ext_add(OWNER, "SalesforceId", "Invoice", invoice.txn_id, "006Q", request_id="t"))
    txn = run(
        company,
        q.invoice_query(request_id="iq", ref_numbers=[invoice.records[0]["RefNumber"]], owner_id=OWNER),
    ).responses[0]
    assert txn.records[0]["DataExtRet"][0]["DataExtValue"] == "006Q"
    deleted = run(
        company, q.data_ext_del(OWNER, "SalesforceId", "Customer", customer.list_id, request_id="x")
    ).responses[0]
    assert deleted.status_code == 0 and company.data_ext(OWNER, "SalesforceId", customer.list_id) is None


def test_transactions_compute_lines_and_mods_replace_lines(company):
    add_customer(company, "Acme", BillAddress={"City": "Utrecht"})
    run(
        company,
        q.item_non_inventory_add(
            {
                "Name": "Widget",
                "SalesOrPurchase": {"Price": "12.50", "Desc": "A widget", "AccountRef": "Sales"},
            },
            request_id="i",
        ),
    )
    invoice = run(
        company,
        q.invoice_add(
            {
                "CustomerRef": "Acme",
                "RefNumber": "SF-1",
                "InvoiceLineAdd": [{"ItemRef": "Widget", "Quantity": 4}, {"ItemRef": "Widget", "Amount": 3}],
            },
            request_id="v",
        ),
    ).responses[0]
    record = invoice.records[0]
    assert (
        record["Subtotal"] == "53.00"
        and record["BalanceRemaining"] == "53.00"
        and record["BillAddress"] == {"City": "Utrecht"}
    )
    first_line = record["InvoiceLineRet"][0]
    assert (first_line["Rate"], first_line["Amount"], first_line["Desc"]) == ("12.5", "50.00", "A widget")
    modded = run(
        company,
        q.invoice_mod(
            invoice.txn_id,
            invoice.edit_sequence,
            {
                "InvoiceLineMod": [
                    {"TxnLineID": first_line["TxnLineID"], "Quantity": 2},
                    {"TxnLineID": "-1", "ItemRef": "Widget", "Amount": 1},
                ]
            },
            request_id="m",
        ),
    ).responses[0]
    lines = modded.records[0]["InvoiceLineRet"]
    assert [line["Amount"] for line in lines] == ["25.00", "1.00"] and modded.records[0][
        "Subtotal"
    ] == "26.00"
    assert lines[0]["TxnLineID"] == first_line["TxnLineID"]
    receipt = run(
        company,
        q.sales_receipt_add(
            {
                "CustomerRef": "Acme",
                "PaymentMethodRef": "Visa",
                "SalesReceiptLineAdd": [{"ItemRef": "Widget", "Quantity": 1}],
            },
            request_id="r",
        ),
    ).responses[0]
    assert (
        receipt.records[0]["TotalAmount"] == "12.50"
        and receipt.records[0]["DepositToAccountRef"]["FullName"] == "Undeposited Funds"
    )
    order = run(
        company,
        q.sales_order_add(
            {"CustomerRef": "Acme", "SalesOrderLineAdd": [{"ItemRef": "Widget", "Quantity": 2}]},
            request_id="o",
        ),
    ).responses[0]
    without_lines = run(company, q.sales_order_query(request_id="q", txn_ids=[order.txn_id])).responses[0]
    assert "SalesOrderLineRet" not in without_lines.records[0]
    with_lines = run(
        company, q.sales_order_query(request_id="q", txn_ids=[order.txn_id], include_line_items=True)
    ).responses[0]
    assert with_lines.records[0]["SalesOrderLineRet"][0]["Amount"] == "25.00"
    duplicate_ref = run(
        company,
        q.invoice_add(
            {
                "CustomerRef": "Acme",
                "RefNumber": "SF-1",
                "InvoiceLineAdd": [{"ItemRef": "Widget", "Amount": 1}],
            },
            request_id="v2",
        ),
    )
    assert duplicate_ref.responses[0].status_code == 0  # transactions have no uniqueness guard
    assert len(run(company, q.invoice_query(request_id="r", ref_numbers=["SF-1"])).responses[0].records) == 2


def test_deletes_follow_quickbooks_rules(company):
    customer = add_customer(company, "Acme")
    run(
        company,
        q.item_service_add(
            {"Name": "Svc", "SalesOrPurchase": {"Price": 5, "AccountRef": "Services"}}, request_id="i"
        ),
    )
    invoice = run(
        company,
        q.invoice_add(
            {"CustomerRef": "Acme", "InvoiceLineAdd": [{"ItemRef": "Svc", "Amount": 5}]}, request_id="v"
        ),
    ).responses[0]
    in_use = run(company, q.list_del("Customer", customer.list_id, request_id="d1")).responses[0]
    assert in_use.status_code == 3170 and "in use" in in_use.message
    txn = run(company, q.txn_del("Invoice", invoice.txn_id, request_id="d2")).responses[0]
    assert txn.status_code == 0 and txn.txn_id == invoice.txn_id and company.count("Invoice") == 0
    gone = run(company, q.list_del("Customer", customer.list_id, request_id="d3")).responses[0]
    assert gone.status_code == 0 and gone.records[0]["FullName"] == "Acme" and company.count("Customer") == 0
    tombstones = run(
        company, q.build_request("ListDeletedQuery", {"ListDelType": ["Customer"]}, request_id="ld")
    ).responses[0]
    assert tombstones.records[0]["ListID"] == customer.list_id
    again = run(company, q.list_del("Customer", customer.list_id, request_id="d4")).responses[0]
    assert again.status_code == 3120


def test_message_set_recovery_after_a_lost_response(company):
    """Crash after commit: the write exists once, and oldMessageSetID returns what was lost."""
    company.faults.update({"lose_responses": 1})
    doc = q.envelope([q.customer_add({"Name": "Acme"}, request_id="a1")], new_message_set_id="job-7:1")
    with pytest.raises(ResponseLostError) as lost:
        company.process(doc)
    assert company.count("Customer") == 1
    lost_list_id = q.parse_response(lost.value.response_xml).responses[0].list_id
    # The bridge's recovery document: the old message set id plus a probe query, no new id.
    recovered = run(
        company, q.customer_query(request_id="probe", full_names=["Acme"]), old_message_set_id="job-7:1"
    )
    assert recovered.message_set_status_code == 0
    stored, probe = recovered.responses
    assert (stored.request_id, stored.kind, stored.list_id) == ("a1", "CustomerAdd", lost_list_id)
    assert (probe.request_id, probe.list_id) == ("probe", lost_list_id)
    assert company.count("Customer") == 1  # the lost Add was not executed again
    status_only = run(company, old_message_set_id="job-7:1", new_message_set_id="job-7:1")
    assert [r.request_id for r in status_only.responses] == ["a1"]
    resent = q.parse_response(company.process(doc))  # the same newMessageSetID again: a status check
    assert resent.message_set_status_code == 0 and resent.responses[0].list_id == lost_list_id
    assert company.count("Customer") == 1
    other = q.parse_response(
        company.process(
            q.envelope([q.customer_add({"Name": "Beta"}, request_id="b")], new_message_set_id="job-7:1")
        )
    )
    assert other.message_set_status_code == 9001 and other.responses == [] and company.count("Customer") == 1
    unknown = run(
        company, q.customer_query(request_id="probe2", full_names=["Acme"]), old_message_set_id="never-sent"
    )
    assert unknown.message_set_status_code == 600 and [r.request_id for r in unknown.responses] == ["probe2"]
    never = run(company, old_message_set_id="never-sent", new_message_set_id="never-sent")
    assert never.message_set_status_code == 9002 and never.responses == []
    fresh = run(
        company,
        q.customer_add({"Name": "Gamma"}, request_id="g"),
        old_message_set_id="never-sent",
        new_message_set_id="job-8:1",
    )
    assert fresh.responses[0].status_code == 0 and company.count("Customer") == 2  # old unknown: new one runs
    assert run(company, old_message_set_id="job-8:1").responses[0].request_id == "g"
    raw = f'<QBXML><QBXMLMsgsRq onError="stopOnError" newMessageSetID="{"x" * 25}"></QBXMLMsgsRq></QBXML>'
    too_long = q.parse_response(company.process(raw))  # the library refuses to build this one
    assert too_long.message_set_status_code == 9004


def test_strict_recovery_history_keeps_only_the_last_message_set(clock):
    company = CompanyFile(None, clock=clock, recovery_history=1)
    run(company, q.customer_add({"Name": "A"}, request_id="a"), new_message_set_id="s1")
    run(company, q.customer_add({"Name": "B"}, request_id="b"), new_message_set_id="s2")
    assert run(company, old_message_set_id="s1").message_set_status_code == 600
    assert run(company, old_message_set_id="s2").responses[0].request_id == "b"


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        (b"<QBXML><QBXMLMsgsRq onError='continueOnError'><CustomerAddRq>", "not well-formed"),
        (b"<QBXML><QBXMLMsgsRq><CustomerQueryRq/></QBXMLMsgsRq></QBXML>", "onError"),
        (
            b'<QBXML><QBXMLMsgsRq onError="continueOnError"><CustomerAddRq><CustomerAdd><CompanyName>x</CompanyName>'
            b"<Name>y</Name></CustomerAdd></CustomerAddRq></QBXMLMsgsRq></QBXML>",
            "CustomerAdd/CompanyName",
        ),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><QBXML/>', "DTD"),
    ],
    ids=["not-well-formed", "no-onError", "out-of-order", "dtd"],
)
def test_malformed_documents_are_refused_whole_with_hresult_0x80040400(company, document, detail):
    with pytest.raises(RequestProcessorError) as refused:
        company.process(document)
    assert refused.value.hresult == "0x80040400"
    assert refused.value.message == "QuickBooks found an error when parsing the provided XML text stream."
    assert detail in refused.value.detail
    assert company.count("Customer") == 0 and company.stats["parse_errors"] == 1


def test_busy_and_lock_faults(company):
    customer = add_customer(company, "Acme")
    company.faults.update({"busy": 1, "lock_writes": 1, "locked_ids": {customer.list_id: 1}})
    with pytest.raises(RequestProcessorError) as busy:
        company.process(q.envelope([q.customer_query(request_id="q")]))
    assert busy.value.hresult == "0x80040401"
    locked = run(
        company, q.customer_mod(customer.list_id, customer.edit_sequence, {"Phone": "1"}, request_id="m")
    ).responses[0]
    assert locked.status_code == 3175 and isinstance(q.error_for(locked), RetriableSourceError)
    write_locked = add_customer(company, "Beta")
    assert write_locked.status_code == 3180 and isinstance(q.error_for(write_locked), RetriableSourceError)
    assert add_customer(company, "Beta").status_code == 0
    ok = run(
        company, q.customer_mod(customer.list_id, customer.edit_sequence, {"Phone": "1"}, request_id="m")
    ).responses[0]
    assert ok.status_code == 0
    with pytest.raises(ValueError, match="unknown fault"):
        company.faults.update({"explode": 1})


def test_host_company_and_registered_file_id(company):
    company.register_application(OWNER, "{00000000-1111-2222-3333-444444444444}")
    rs = run(
        company,
        q.host_query(request_id="h"),
        q.company_query(request_id="c", owner_id=OWNER),
        q.build_request("PreferencesQuery", {}, request_id="p"),
    )
    host, comp, prefs = rs.responses
    assert (
        "13.0" in host.records[0]["SupportedQBXMLVersion"] and host.records[0]["QBFileMode"] == "SingleUser"
    )
    assert comp.records[0]["DataExtRet"] == [
        {
            "OwnerID": OWNER,
            "DataExtName": "FileID",
            "DataExtType": "STR255TYPE",
            "DataExtValue": "{00000000-1111-2222-3333-444444444444}",
        }
    ]
    assert prefs.status_code == 0


def test_company_file_persists_across_restart(tmp_path, clock):
    path = tmp_path / "qb" / "company.sqlite"
    first = CompanyFile(path, clock=clock)
    added = add_customer(first, "Acme")
    run(first, q.customer_add({"Name": "Beta"}, request_id="b"), new_message_set_id="set-1")
    first.close()
    second = CompanyFile(path, clock=clock)
    try:
        found = run(second, q.customer_query(request_id="q", full_names=["Acme"])).responses[0]
        assert found.list_id == added.list_id and found.edit_sequence == added.edit_sequence
        new = add_customer(second, "Gamma")
        assert new.list_id not in {added.list_id} and second.count("Customer") == 3
        assert run(second, old_message_set_id="set-1").responses[0].request_id == "b"
    finally:
        second.close()


def test_iterators_expire(clock):
    company = CompanyFile(None, clock=clock, iterator_ttl_seconds=600)
    run(company, *[q.customer_add({"Name": f"C{i}"}, request_id=f"c{i}") for i in range(5)])
    first = run(company, q.customer_query(request_id="s", iterator="Start", max_returned=2)).responses[0]
    assert first.iterator_remaining_count == 3

    def more() -> q.QbResponse:
        rq = q.customer_query(
            request_id="c", iterator="Continue", iterator_id=first.iterator_id, max_returned=2
        )
        return run(company, rq).responses[0]

    clock.now += 599  # idle just under the TTL: still open, and each page restarts the TTL
    assert more().iterator_remaining_count == 1
    clock.now += 601
    assert more().status_code == 3391
    assert q.outcome_for(3391) is q.Outcome.REFRESH_RETRY  # the bridge restarts the query with Start


def test_item_query_spans_item_types_and_filters_by_name(company):
    run(
        company,
        q.item_service_add(
            {"Name": "Consulting", "SalesOrPurchase": {"Price": 100, "AccountRef": "Services"}},
            request_id="a",
        ),
        q.item_non_inventory_add(
            {"Name": "Cable", "SalesOrPurchase": {"Price": 3, "AccountRef": "Sales"}}, request_id="b"
        ),
        q.item_inventory_add(
            {
                "Name": "Pump",
                "IncomeAccountRef": "Sales",
                "COGSAccountRef": "Cost of Goods Sold",
                "AssetAccountRef": "Inventory Asset",
            },
            request_id="c",
        ),
        q.item_service_add(
            {"Name": "Cable", "SalesOrPurchase": {"Price": 1, "AccountRef": "Services"}}, request_id="d"
        ),
    )
    assert company.count("Item") == 3  # "Cable" as a service clashes with the non-inventory item (3100)
    items = run(company, q.item_query(request_id="q")).responses[0]
    assert [r["Name"] for r in items.records] == ["Consulting", "Cable", "Pump"]
    assert "<ItemInventoryRet>" in items.xml and "<ItemServiceRet>" in items.xml
    named = run(
        company,
        q.build_request(
            "ItemQuery", {"NameFilter": {"MatchCriterion": "StartsWith", "Name": "c"}}, request_id="n"
        ),
    )
    assert [r["Name"] for r in named.responses[0].records] == ["Consulting", "Cable"]
    trimmed = run(
        company,
        q.item_service_query(
            request_id="t", full_names=["Consulting"], include_ret_elements=["ListID", "Name"]
        ),
    )
    assert set(trimmed.responses[0].records[0]) == {"ListID", "Name"}


def test_response_data_include_none_returns_statuses_only(company):
    doc = q.envelope([q.customer_add({"Name": "Quiet"}, request_id="a")]).replace(
        'onError="continueOnError"', 'onError="continueOnError" responseData="includeNone"'
    )
    response = q.parse_response(company.process(doc)).responses[0]
    assert (response.status_code, response.records) == (0, []) and company.count("Customer") == 1


def test_latency_fault_delays_the_answer(company):
    import time

    company.faults.update({"latency_seconds": 0.2})
    started = time.perf_counter()
    run(company, q.host_query(request_id="h"))
    assert time.perf_counter() - started >= 0.2


def test_without_a_schema_directory_the_simulator_still_refuses_bad_requests(monkeypatch, company):
    monkeypatch.delenv("ERPSYNC_QBXML_SCHEMA_DIR")
    misordered = (
        '<QBXML><QBXMLMsgsRq onError="continueOnError"><CustomerAddRq><CustomerAdd><Phone>1</Phone>'
        "<Name>y</Name></CustomerAdd></CustomerAddRq></QBXMLMsgsRq></QBXML>"
    )
    with pytest.raises(RequestProcessorError) as refused:
        company.process(misordered)
    assert refused.value.hresult == "0x80040400" and "out of schema order" in refused.value.detail
    too_long = misordered.replace("<Phone>1</Phone><Name>y</Name>", f"<Name>{'y' * 42}</Name>")
    assert q.parse_response(company.process(too_long)).responses[0].status_code == 3070


def test_open_invoices_move_customer_balances_without_touching_edit_sequence(company):
    parent = add_customer(company, "Acme")
    job = add_customer(company, "Site A", ParentRef={"FullName": "Acme"})
    run(
        company,
        q.item_service_add(
            {"Name": "Svc", "SalesOrPurchase": {"Price": 10, "AccountRef": "Services"}}, request_id="i"
        ),
    )
    invoice = run(
        company,
        q.invoice_add(
            {"CustomerRef": "Acme:Site A", "InvoiceLineAdd": [{"ItemRef": "Svc", "Quantity": 3}]},
            request_id="v",
        ),
    ).responses[0]

    def balances():
        found = (
            run(company, q.customer_query(request_id="q", list_ids=[parent.list_id, job.list_id]))
            .responses[0]
            .records
        )
        return [(r["Balance"], r["TotalBalance"], r["EditSequence"]) for r in found]

    assert balances() == [("0.00", "30.00", parent.edit_sequence), ("30.00", "30.00", job.edit_sequence)]
    line = invoice.records[0]["InvoiceLineRet"][0]["TxnLineID"]
    run(
        company,
        q.invoice_mod(
            invoice.txn_id,
            invoice.edit_sequence,
            {"InvoiceLineMod": [{"TxnLineID": line, "Quantity": 1}]},
            request_id="m",
        ),
    )
    assert [b[:2] for b in balances()] == [("0.00", "10.00"), ("10.00", "10.00")]
    run(company, q.txn_del("Invoice", invoice.txn_id, request_id="d"))
    assert [b[:2] for b in balances()] == [("0.00", "0.00"), ("0.00", "0.00")]


def test_kinds_the_simulator_does_not_model_answer_3250_and_the_batch_goes_on(company):
    vendor = q.build_request("CustomerAdd", {"Name": "Fine"}, request_id="ok").xml
    doc = (
        '<QBXML><QBXMLMsgsRq onError="continueOnError"><VendorAddRq requestID="v"><VendorAdd><Name>Supplier</Name>'
        f"</VendorAdd></VendorAddRq>{vendor}</QBXMLMsgsRq></QBXML>"
    )
    not_modelled, fine = q.parse_response(company.process(doc)).responses
    assert (
        not_modelled.status_code == 3250
        and "VendorAdd is not implemented by the QuickBooks simulator" in not_modelled.message
    )
    assert fine.status_code == 0


def test_meta_data_only_counts_without_records(company):
    run(company, *[q.customer_add({"Name": f"M{i}"}, request_id=f"m{i}") for i in range(7)])
    counted = run(
        company, q.build_request("CustomerQuery", {}, request_id="n", attrs={"metaData": "MetaDataOnly"})
    )
    assert (counted.responses[0].ret_count, counted.responses[0].records) == (7, [])
    both = q.build_request(
        "CustomerQuery", {"MaxReturned": 2}, request_id="b", attrs={"metaData": "MetaDataAndResponseData"}
    )
    response = run(company, both).responses[0]
    assert response.ret_count == 7 and len(response.records) == 2


def _fixture(name: str) -> bytes:
    from tests.conftest import SHARED

    path = SHARED / "fixtures" / "qbwc" / name
    data = path.read_bytes() if path.is_file() else b""
    if not data.strip():
        pytest.fail(f"QuickBooks fixture {path} is missing or empty: nothing to compare with", pytrace=False)
    return data


def test_answers_have_the_shape_of_captured_quickbooks_answers(company):
    """Same input as the captured CustomerAdd: the same elements in the same order, and the same host facts."""
    from lxml import etree

    captured = etree.fromstring(_fixture("qbwc-qbwc_customer_add_response.xml")).find(".//CustomerRet")
    fields = {
        "CompanyName": "Joes Garage", "Salutation": "Mr", "FirstName": "Joe",
        "LastName": "Customer", "BillAddress": {"Addr1": "123 Main St.", "City": "Mountain View", "State": "CA", "PostalCode": "94566"},
        "Email": "joecustomer@gmail.com", "AccountNumber": "89087", "CreditLimit": "2000.00",
    }  # fmt: skip
    ours = etree.fromstring(add_customer(company, "mrjoecustomer", **fields).xml).find("CustomerRet")
    assert [child.tag for child in ours] == [child.tag for child in captured]
    assert [c.tag for c in ours.find("BillAddress")] == [c.tag for c in captured.find("BillAddress")]
    host_capture = q.parse_response(_fixture("qbwc-qbwc_hcp_response_qbpro2014.xml")).responses[0].records[0]
    host_ours = run(company, q.host_query(request_id="h")).responses[0].records[0]
    assert list(host_ours) == list(host_capture)
    assert set(host_capture["SupportedQBXMLVersion"]) <= set(host_ours["SupportedQBXMLVersion"])


def test_two_processes_can_share_one_company_file(tmp_path):
    """`sandbox up` and a separate `sandbox webconnector` may open the same SQLite file at once."""
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "shared.sqlite"
    first, second = CompanyFile(path), CompanyFile(path)
    try:

        def load(args):
            company, worker = args
            doc = q.envelope(
                [q.customer_add({"Name": f"P{worker}-{i}"}, request_id=f"{worker}-{i}") for i in range(25)]
            )
            return [r.list_id for r in q.parse_response(company.process(doc)).responses]

        with ThreadPoolExecutor(max_workers=4) as pool:
            ids = [
                i
                for batch in pool.map(load, [(first, 0), (second, 1), (first, 2), (second, 3)])
                for i in batch
            ]
        assert len(ids) == 100 and len(set(ids)) == 100 and None not in ids
        assert first.count("Customer") == second.count("Customer") == 100
        clash = run(second, q.customer_add({"Name": "P0-0"}, request_id="dup")).responses[0]
        assert clash.status_code == 3100
    finally:
        first.close()
        second.close()


def test_a_records_data_exts_are_found_by_its_id_not_by_a_scan(company):
    """Each Ret carries its record's DataExts: with 50,000 customers a scan per Ret made every 500-id
    query take seconds. The lookup must use the index on the record's id (the query plan says so)."""
    plan = company.store._db.execute(
        "EXPLAIN QUERY PLAN SELECT owner_id, name, value FROM data_ext WHERE object_id = ? AND owner_id IN (?)",
        ("80000001-1", "0"),
    ).fetchall()
    detail = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX data_ext_object" in detail and "SCAN" not in detail, detail


def test_sales_reps_are_listed_by_initial_and_a_customer_must_name_one_that_exists(company):
    """Every company file has sales reps (seeded: SalesRepAdd needs an employee list the simulator
    does not keep); SalesRepQuery finds them by Initial, and a customer's SalesRepRef must resolve
    (3140 otherwise), as in QuickBooks."""
    reps = run(company, q.sales_rep_query(request_id="r", active_status="All")).responses[0]
    assert [(r["Initial"], r["SalesRepEntityRef"]["FullName"]) for r in reps.records] == [
        ("ADM", "Administrator"),
        ("AV", "Anna de Vries"),
        ("BJ", "Bram Jansen"),
        ("CB", "Carla Bakker"),
    ]
    one = run(company, q.sales_rep_query(request_id="o", full_names=["bj"])).responses[0]
    assert [r["Initial"] for r in one.records] == ["BJ"]
    missing = run(company, q.sales_rep_query(request_id="m", full_names=["ZZ"])).responses[0]
    assert missing.status_code == 500
    ok = add_customer(company, "Rep Customer", SalesRepRef={"FullName": "AV"})
    assert ok.status_code == 0 and ok.records[0]["SalesRepRef"]["FullName"] == "AV"
    refused = add_customer(company, "No Rep Customer", SalesRepRef={"FullName": "ZZ"})
    assert refused.status_code == 3140 and 'SalesRep "ZZ"' in refused.message
