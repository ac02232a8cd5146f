"""Property tests: the builders and the fallback validator agree with Intuit's XSD.

Random fields (any Add/Mod kind the library covers, values drawn around every limit and type) and
random element orders; whatever the builder accepts validates against the XSD, whatever it refuses
the XSD refuses too, and the fallback validator accepts exactly the orders the XSD accepts.
"""

from __future__ import annotations

import random
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erpsync.qbwc_bridge import qbxml as q
from erpsync.qbwc_bridge.qbxml._check import Child, children
from erpsync.qbwc_bridge.qbxml.build import escape_text, kinds
from erpsync.qbwc_bridge.qbxml.safe_xml import parse_xml
from erpsync.qbwc_bridge.qbxml.validate import validate_request

WRITE_KINDS = [k for k in kinds() if k.endswith(("Add", "Mod")) and children(f"{k}Rq")[k].key]
_ALPHABET = string.ascii_letters + string.digits + " &<>'\"-:éß"
_SAMPLES = {
    "AMTTYPE": ["1", "1.50", "-2.00", "1.5", "12345678901234", "abc", ""],
    "PRICETYPE": ["1", "1.12345", "1.123456", "x", "-0.5"],
    "QUANTYPE": ["3", "2.5", "1.1234567", "many"],
    "PERCENTTYPE": ["10", "12.5", "%"],
    "FLOATTYPE": ["1.5", "x"],
    "BOOLTYPE": [True, False, "true", "0", "maybe"],
    "DATETYPE": ["2024-02-29", "2023-02-29", "2024-1-1", "", "31/12/2024"],
    "DATETIMETYPE": ["2024-05-01T10:00:00", "2024-05-01T10:00:00+02:00", "2024-05-01", "yesterday"],
    "INTTYPE": [1, "12", "-3", "x"],
    "GUIDTYPE": ["0", "{3F2504E0-4F89-11D3-9A0C-0305E82C3301}", "{bad}"],
}


def _text(limit: int | None):
    if limit is None:
        return st.text(alphabet=_ALPHABET, min_size=0, max_size=12)
    sizes = st.integers(min_value=max(0, limit - 2), max_value=limit + 2)
    return sizes.flatmap(lambda n: st.text(alphabet=_ALPHABET, min_size=n, max_size=n))


def _value(child: Child):
    facts = child.facts
    if "enum" in facts:
        return st.sampled_from([*facts["enum"], "NotAnOption"])
    base = facts.get("base", "STRTYPE")
    if base in _SAMPLES:
        return st.sampled_from(_SAMPLES[base])
    return _text(facts.get("maxlen"))


@st.composite
def _write_request(draw):
    kind = draw(st.sampled_from(WRITE_KINDS))
    slots = children(children(f"{kind}Rq")[kind].key)
    leaves = [c for c in slots.values() if c.key is None]
    fields = {}
    for child in slots.values():  # usually give the plain required fields, sometimes forget one
        if child.min >= 1 and not child.path and draw(st.integers(0, 9)) > 0:
            if child.key is None:
                fields[child.name] = draw(_value(child))
            elif "FullName" in children(child.key):
                fields[child.name] = {"FullName": draw(_text(None).filter(bool))}
    for child in draw(st.lists(st.sampled_from(leaves), unique_by=lambda c: c.name, max_size=6)):
        fields[child.name] = draw(_value(child))
    return kind, fields


def _naive(kind: str, fields: dict) -> str:
    """Render `fields` in schema order with no checks at all, as a careless client would."""
    key = children(f"{kind}Rq")[kind].key

    def render(agg_key, mapping):
        slots = children(agg_key)
        parts = []
        for name in sorted(mapping, key=lambda n: slots[n].index):
            value = mapping[name]
            if isinstance(value, dict):
                parts.append(f"<{name}>{render(slots[name].key, value)}</{name}>")
            else:
                text = ("true" if value else "false") if isinstance(value, bool) else str(value)
                parts.append(f"<{name}>{escape_text(text)}</{name}>")
        return "".join(parts)

    return f"<{kind}Rq><{kind}>{render(key, fields)}</{kind}></{kind}Rq>"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=_write_request())
def test_builders_refuse_exactly_what_the_xsd_refuses(request):
    kind, fields = request
    try:
        built = q.build_request(kind, fields, request_id="p", validate=False)
    except q.QbxmlValidationError as refused:
        try:
            validate_request(_naive(kind, fields), use_schema=True)
        except q.QbxmlValidationError:
            return
        raise AssertionError(f"{kind}: the builder refused what the XSD accepts: {refused}") from None
    validate_request(built.xml, use_schema=True)
    validate_request(built.xml, use_schema=False)


_VALID = [
    q.customer_add(
        {
            "Name": "Acme",
            "IsActive": True,
            "CompanyName": "Acme Inc",
            "FirstName": "Jo",
            "BillAddress": {"Addr1": "1 Main", "City": "Utrecht"},
            "Phone": "555",
            "Email": "a@b.c",
            "AccountNumber": "A1",
            "Notes": "n",
        },
        request_id="c",
    ),
    q.invoice_add(
        {
            "CustomerRef": {"FullName": "Acme"},
            "TxnDate": "2024-05-02",
            "RefNumber": "SF-1",
            "PONumber": "PO",
            "Memo": "m",
            "InvoiceLineAdd": [{"ItemRef": {"FullName": "W"}, "Desc": "d", "Quantity": 2, "Rate": 5}],
        },
        request_id="i",
    ),
    q.item_inventory_add(
        {
            "Name": "Gadget",
            "SalesDesc": "g",
            "SalesPrice": 10,
            "IncomeAccountRef": "Sales",
            "COGSAccountRef": "COGS",
            "AssetAccountRef": "Inventory Asset",
            "QuantityOnHand": 3,
        },
        request_id="g",
    ),
]


@settings(max_examples=200, deadline=None)
@given(which=st.integers(0, len(_VALID) - 1), seed=st.integers(0, 2**32 - 1))
def test_fallback_accepts_exactly_the_orders_the_xsd_accepts(which, seed):
    from lxml import etree

    root = parse_xml(_VALID[which].xml)
    aggregate = root[0]
    kids = list(aggregate)
    random.Random(seed).shuffle(kids)
    for kid in kids:
        aggregate.append(kid)  # re-appending moves each child to the end, in the shuffled order
    xml = etree.tostring(root, encoding="unicode")
    verdicts = []
    for use_schema in (True, False):
        try:
            validate_request(xml, use_schema=use_schema)
            verdicts.append(True)
        except q.QbxmlValidationError:
            verdicts.append(False)
    assert verdicts[0] == verdicts[1], (xml, verdicts)
