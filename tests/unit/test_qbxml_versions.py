"""The per-element qbXML versions (one table, shared by the bridge's enqueue check and the QuickBooks
simulator) equal Intuit's annotated sample."""

from __future__ import annotations

import pytest
from lxml import etree

from erpsync.qbwc_bridge.qbxml._since import SINCE
from erpsync.qbwc_bridge.qbxml.versions import build_table, first_too_new, newest, request_kinds


def test_generated_table_matches_the_annotated_sample(shared_dir):
    """Re-derive the table from qbxmlops130.xml: the committed one must be identical."""
    assert build_table(shared_dir / "reference" / "qbxml" / "qbxmlops130.xml", request_kinds()) == SINCE
    assert SINCE["CustomerAddRq/CustomerAdd/JobTitle"] == "12.0" and newest() == "13.0"
    assert SINCE["CustomerAddRq/CustomerAdd/ClassRef"] == "12.0" and SINCE["InvoiceModRq"] == "2.1"
    assert "CustomerAddRq/CustomerAdd/Name" not in SINCE  # since 1.0: not listed


def test_first_too_new_names_the_element_and_its_version():
    request = etree.fromstring(
        "<CustomerAddRq><CustomerAdd><Name>X</Name><CurrencyRef><FullName>EUR</FullName></CurrencyRef>"
        "<JobTitle>Buyer</JobTitle></CustomerAdd></CustomerAddRq>"
    )
    assert first_too_new(request, "13.0") is None
    assert first_too_new(request, "11.0") == ("CustomerAddRq/CustomerAdd/JobTitle", "12.0")
    assert first_too_new(request, "7.0") == ("CustomerAddRq/CustomerAdd/CurrencyRef", "8.0")


def test_first_too_new_does_not_walk_at_or_above_the_newest_version():
    """At the table's newest version (or later) every element exists: the request is not walked."""

    class Unwalkable:
        tag = "CustomerAddRq"

        def __iter__(self):
            raise AssertionError("walked")

    assert first_too_new(Unwalkable(), newest()) is None
    assert first_too_new(Unwalkable(), "16.0") is None
    with pytest.raises(AssertionError, match="walked"):
        first_too_new(Unwalkable(), "12.0")
