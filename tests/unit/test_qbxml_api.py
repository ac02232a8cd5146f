"""The qbXML package's public names are pinned, and importing it stays light (no lxml, no I/O)."""

from __future__ import annotations

import json
import subprocess
import sys

from erpsync.qbwc_bridge import qbxml

EXPECTED = [
    "STATUS_ACTIONS", "MalformedXmlError", "Outcome", "QbRequest", "QbResponse", "QbResponseSet",
    "QbxmlResponseError", "QbxmlValidationError", "UnsafeXmlError", "build_request", "company_query",
    "customer_add", "customer_mod", "customer_query", "data_ext_add", "data_ext_def_add", "data_ext_def_query",
    "data_ext_del", "data_ext_mod", "envelope", "error_for", "host_query", "invoice_add", "invoice_mod",
    "invoice_query", "item_inventory_add", "item_inventory_mod", "item_inventory_query", "item_non_inventory_add",
    "item_non_inventory_mod", "item_non_inventory_query", "item_query", "item_service_add", "item_service_mod",
    "item_service_query", "list_del", "outcome_for", "parse_response", "sales_order_add", "sales_order_mod",
    "sales_order_query", "sales_receipt_add", "sales_receipt_mod", "sales_receipt_query", "sales_rep_query", "txn_del",
    "validate_document", "validate_request", "validate_request_element", "validate_requests", "xsd_later",
]  # fmt: skip


def test_public_names_are_pinned():
    assert qbxml.__all__ == EXPECTED
    assert all(hasattr(qbxml, name) for name in EXPECTED)


def test_importing_the_library_loads_no_heavy_module_and_reads_no_schema():
    probe = (
        "import sys, json; import erpsync.qbwc_bridge.qbxml as q; "
        "from erpsync.qbwc_bridge.qbxml import validate; "
        "print(json.dumps({'heavy': sorted(m for m in ('lxml', 'pandas', 'httpx', 'great_expectations', "
        "'simple_salesforce', 'pyarrow') if m in sys.modules), 'schemas': len(validate._schemas)}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"heavy": [], "schemas": 0}
