"""The built-in rules equal the XSD's, and agree with it on random requests (hypothesis)."""

from __future__ import annotations

import string
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erpsync.qbwc_bridge import qbxml as q
from erpsync.qbwc_bridge.qbxml import _rules
from erpsync.qbwc_bridge.qbxml._xsd_model import build_model
from erpsync.qbwc_bridge.qbxml.validate import load_schema, schema_dir, schema_load_seconds, validate_request


def test_generated_rules_match_the_xsd():
    """Re-derive the table from Intuit's schema: the committed fallback must be identical."""
    model = build_model(schema_dir())
    assert model["aggregates"] == _rules.AGGREGATES
    assert model["choices"] == _rules.CHOICES
    assert model["messages"] == _rules.MESSAGES


def test_schema_compiles_once_and_quickly():
    started = time.perf_counter()
    first = load_schema()
    second = load_schema()
    assert first is second  # cached per process
    seconds = schema_load_seconds()
    assert seconds is not None and seconds < 5, seconds
    assert time.perf_counter() - started < 5
    print(f"qbXML schema compile: {seconds:.3f} s")


def test_fallback_and_xsd_reject_the_same_misordered_document():
    misordered = (
        "<CustomerAddRq><CustomerAdd><CompanyName>x</CompanyName><Name>y</Name></CustomerAdd></CustomerAddRq>"
    )
    for use_schema in (True, False):
        try:
            validate_request(misordered, use_schema=use_schema)
        except q.QbxmlValidationError as exc:
            assert exc.field.startswith("CustomerAddRq/CustomerAdd/")
        else:
            raise AssertionError(f"misordered request accepted (use_schema={use_schema})")


def test_fallback_refuses_kinds_it_has_no_rules_for():
    try:
        validate_request("<VendorAddRq><VendorAdd><Name>v</Name></VendorAdd></VendorAddRq>", use_schema=False)
    except q.QbxmlValidationError as exc:
        assert "ERPSYNC_QBXML_SCHEMA_DIR" in str(exc)
    else:
        raise AssertionError("unknown kind accepted by the fallback")


# Customer fields with their simple types; values are drawn around each limit.
_CUSTOMER_TEXT = {
    "Name": 41, "CompanyName": 41, "Salutation": 15, "FirstName": 25, "MiddleName": 5, "LastName": 25,
    "JobTitle": 41, "Phone": 21, "Email": 1023, "ResaleNumber": 15, "AccountNumber": 99, "Notes": 4095,
}  # fmt: skip
_ADDRESS_TEXT = {
    "Addr1": 41,
    "Addr2": 41,
    "City": 31,
    "State": 21,
    "PostalCode": 13,
    "Country": 31,
    "Note": 41,
}
_ALPHABET = string.ascii_letters + string.digits + " &<>'\"-éß"


def _text_near(limit: int):
    return st.integers(min_value=max(0, limit - 2), max_value=limit + 2).flatmap(
        lambda n: st.text(alphabet=_ALPHABET, min_size=n, max_size=n)
    )


_address = st.dictionaries(st.sampled_from(sorted(_ADDRESS_TEXT)), st.just(None), max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({k: _text_near(_ADDRESS_TEXT[k]) for k in keys})
)
_customer = st.dictionaries(st.sampled_from(sorted(_CUSTOMER_TEXT)), st.just(None), max_size=7).flatmap(
    lambda keys: st.fixed_dictionaries(
        {
            **{k: _text_near(_CUSTOMER_TEXT[k]) for k in keys},
            "Name": _text_near(41),
            "BillAddress": _address,
            "OpenBalance": st.one_of(
                st.none(), st.sampled_from(["1", "1.5", "12.50", "-3.00", "1.234", "x", ""])
            ),
            "IsActive": st.one_of(st.none(), st.booleans(), st.sampled_from(["true", "0", "yes"])),
            "JobStatus": st.one_of(st.none(), st.sampled_from(["Awarded", "None", "Pending", "Busy"])),
        }
    )
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=_customer, order=st.randoms())
def test_builder_and_fallback_agree_with_the_xsd(fields, order):
    """Whatever the order and values: the builder refuses exactly what the XSD refuses.

    Accepted -> the XSD accepts the output and so does the fallback validator; refused -> writing
    the same fields in schema order by hand makes the XSD refuse too, so the builder is never
    stricter or looser than the schema on these fields.
    """
    items = list(fields.items())
    order.shuffle(items)
    shuffled = dict(items)
    try:
        rq = q.build_request("CustomerAdd", shuffled, request_id="p", validate=False)
    except q.QbxmlValidationError as refused:
        raw = _naive_customer_add(fields)
        try:
            validate_request(raw, use_schema=True)
        except q.QbxmlValidationError:
            return
        raise AssertionError(f"builder refused what the XSD accepts: {refused}") from None
    validate_request(rq.xml, use_schema=True)
    validate_request(rq.xml, use_schema=False)


def _naive_customer_add(fields: dict) -> str:
    from erpsync.qbwc_bridge.qbxml._check import children
    from erpsync.qbwc_bridge.qbxml.build import escape_text

    def render(key, mapping):
        slots = children(key)
        parts = []
        for name in sorted((n for n, v in mapping.items() if v is not None), key=lambda n: slots[n].index):
            value = mapping[name]
            if isinstance(value, dict):
                parts.append(f"<{name}>{render(slots[name].key, value)}</{name}>")
            else:
                text = {True: "true", False: "false"}.get(value, value) if isinstance(value, bool) else value
                parts.append(f"<{name}>{escape_text(str(text))}</{name}>")
        return "".join(parts)

    return f"<CustomerAddRq><CustomerAdd>{render('CustomerAdd', fields)}</CustomerAdd></CustomerAddRq>"


def test_builders_work_without_a_schema_directory(monkeypatch):
    """No ERPSYNC_QBXML_SCHEMA_DIR: the built-in rules still order, limit and validate."""
    monkeypatch.delenv("ERPSYNC_QBXML_SCHEMA_DIR")
    assert schema_dir() is None
    rq = q.customer_add({"Phone": "1", "Name": "A"}, request_id="r")
    assert rq.xml.index("<Name>") < rq.xml.index("<Phone>")
    q.validate_document(q.envelope([rq]))
    try:
        q.customer_add({"Name": "A" * 42}, request_id="r")
    except q.QbxmlValidationError as exc:
        assert "maxLength is 41" in str(exc)
    else:
        raise AssertionError("length not enforced without the schema")
    try:
        q.validate_request(
            "<CustomerAddRq><CustomerAdd><Phone>1</Phone><Name>A</Name></CustomerAdd></CustomerAddRq>"
        )
    except q.QbxmlValidationError as exc:
        assert exc.field == "CustomerAddRq/CustomerAdd/Name" and "out of schema order" in exc.rule
    else:
        raise AssertionError("order not enforced without the schema")


def test_many_requests_are_checked_in_one_xsd_pass_and_the_invalid_ones_named():
    """`validate_requests` (the upsert's batch check) finds exactly the requests one-by-one would."""
    from erpsync.qbwc_bridge.qbxml import QbxmlValidationError, validate_requests, xsd_later

    with xsd_later():  # built without their own XSD pass, as the upsert program builds them
        good = [q.customer_add({"Name": f"Batch Co {i}"}, request_id=f"a{i}").xml for i in range(50)]
    misordered = '<CustomerAddRq requestID="bad"><CustomerAdd><Phone>1</Phone><Name>X</Name></CustomerAdd></CustomerAddRq>'
    unknown = '<CustomerAddRq requestID="odd"><CustomerAdd><Name>Y</Name><Colour>red</Colour></CustomerAdd></CustomerAddRq>'
    assert validate_requests(good) == {}
    batch = [*good[:10], misordered, *good[10:], unknown]
    errors = validate_requests(batch)
    assert sorted(errors) == [10, 51]
    for n, exc in errors.items():
        assert isinstance(exc, QbxmlValidationError)
        try:
            validate_request(batch[n])
        except QbxmlValidationError as alone:
            assert (exc.field, exc.rule) == (alone.field, alone.rule)
        else:
            raise AssertionError(f"request {n} passes alone")
    assert validate_requests([]) == {}
