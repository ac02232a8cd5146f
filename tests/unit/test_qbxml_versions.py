"""The per-element qbXML versions the bridge refuses at enqueue equal Intuit's annotated sample."""

from __future__ import annotations

from lxml import etree

from erpsync.qbwc_bridge.qbxml._since import SINCE
from erpsync.qbwc_bridge.qbxml.validate import schema_dir
from erpsync.qbwc_bridge.qbxml.versions import build_table, first_too_new, newest, request_kinds


def test_generated_table_matches_the_annotated_sample():
    """Re-derive the table from qbxmlops130.xml: the committed one must be identical."""
    assert build_table(schema_dir() / "qbxmlops130.xml", request_kinds()) == SINCE
    assert SINCE["CustomerAddRq/CustomerAdd/JobTitle"] == "12.0" and newest() == "13.0"


def test_first_too_new_names_the_element_and_its_version():
    request = etree.fromstring(
        "<CustomerAddRq><CustomerAdd><Name>X</Name><CurrencyRef><FullName>EUR</FullName></CurrencyRef>"
        "<JobTitle>Buyer</JobTitle></CustomerAdd></CustomerAddRq>"
    )
    assert first_too_new(request, "13.0") is None
    assert first_too_new(request, "11.0") == ("CustomerAddRq/CustomerAdd/JobTitle", "12.0")
    assert first_too_new(request, "7.0") == ("CustomerAddRq/CustomerAdd/CurrencyRef", "8.0")
