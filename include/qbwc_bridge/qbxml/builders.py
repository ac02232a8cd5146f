"""Named builders for the requests the sync flows send; thin wrappers over `build_request`.

Each returns a `QbRequest`. Add/Mod builders take the record's fields as a dict (any order; nested
dicts for aggregates, lists for lines); query builders take the usual filters as keyword arguments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from erpsync.qbwc_bridge.qbxml._check import children
from erpsync.qbwc_bridge.qbxml.build import QbRequest, build_request
from erpsync.qbwc_bridge.qbxml.errors import QbxmlValidationError

__all__ = [
    "company_query",
    "customer_add",
    "customer_mod",
    "customer_query",
    "data_ext_add",
    "data_ext_def_add",
    "data_ext_def_query",
    "data_ext_del",
    "data_ext_mod",
    "host_query",
    "invoice_add",
    "invoice_mod",
    "invoice_query",
    "item_inventory_add",
    "item_inventory_mod",
    "item_inventory_query",
    "item_non_inventory_add",
    "item_non_inventory_mod",
    "item_non_inventory_query",
    "item_query",
    "item_service_add",
    "item_service_mod",
    "item_service_query",
    "list_del",
    "sales_order_add",
    "sales_order_mod",
    "sales_order_query",
    "sales_receipt_add",
    "sales_receipt_mod",
    "sales_receipt_query",
    "sales_rep_query",
    "txn_del",
]

When = dt.datetime | dt.date | str | None


def _iterator_attrs(kind: str, iterator: str | None, iterator_id: str | None) -> dict[str, Any]:
    if iterator is None:
        if iterator_id is not None:
            raise QbxmlValidationError(
                f"{kind}Rq@iteratorID", "needs iterator='Continue' or 'Stop'", iterator_id
            )
        return {}
    if iterator in ("Continue", "Stop") and not iterator_id:
        raise QbxmlValidationError(f"{kind}Rq@iteratorID", f"is required with iterator={iterator!r}")
    return {"iterator": iterator, "iteratorID": iterator_id}


def _list_add(kind: str):
    def add(
        fields: Mapping[str, Any], *, request_id: str, include_ret_elements: Sequence[str] | None = None
    ) -> QbRequest:
        return build_request(kind, fields, request_id=request_id, include_ret_elements=include_ret_elements)

    add.__name__ = f"{kind}"
    add.__doc__ = f"Build a ``{kind}Rq`` from `fields` (children of ``{kind}``, in any order)."
    return add


def _list_mod(kind: str):
    def mod(list_id: str, edit_sequence: str, fields: Mapping[str, Any], *, request_id: str) -> QbRequest:
        return build_request(
            kind, {**fields, "ListID": list_id, "EditSequence": edit_sequence}, request_id=request_id
        )

    mod.__doc__ = (
        f"Build a ``{kind}Rq``: ListID + the current EditSequence (stale -> status 3200), then `fields`."
    )
    return mod


def _txn_mod(kind: str):
    def mod(txn_id: str, edit_sequence: str, fields: Mapping[str, Any], *, request_id: str) -> QbRequest:
        return build_request(
            kind, {**fields, "TxnID": txn_id, "EditSequence": edit_sequence}, request_id=request_id
        )

    mod.__doc__ = (
        f"Build a ``{kind}Rq``: TxnID + the current EditSequence (stale -> status 3200), then `fields`."
    )
    return mod


def _list_query(kind: str):
    def query(
        *,
        request_id: str,
        list_ids: Sequence[str] | None = None,
        full_names: Sequence[str] | None = None,
        modified_from: When = None,
        modified_to: When = None,
        max_returned: int | None = None,
        active_status: str | None = None,
        iterator: str | None = None,
        iterator_id: str | None = None,
        include_ret_elements: Sequence[str] | None = None,
        owner_id: str | Sequence[str] | None = None,
    ) -> QbRequest:
        fields: dict[str, Any] = {
            "ListID": list(list_ids) if list_ids else None,
            "FullName": list(full_names) if full_names else None,
            "MaxReturned": max_returned,
            "ActiveStatus": active_status,
            "FromModifiedDate": modified_from,
            "ToModifiedDate": modified_to,
            "OwnerID": [owner_id] if isinstance(owner_id, str) else owner_id,
        }
        return build_request(
            kind,
            fields,
            request_id=request_id,
            attrs=_iterator_attrs(kind, iterator, iterator_id),
            include_ret_elements=include_ret_elements,
        )

    query.__doc__ = (
        f"Build a ``{kind}Rq``: by ListID or FullName, or by filters (modified range, MaxReturned), "
        "optionally paged with an iterator (Start, then Continue with the iteratorID); `owner_id` "
        "returns DataExtRet (``0`` public fields, a GUID private ones)."
    )
    return query


def _txn_query(kind: str):
    def query(
        *,
        request_id: str,
        txn_ids: Sequence[str] | None = None,
        ref_numbers: Sequence[str] | None = None,
        modified_from: When = None,
        modified_to: When = None,
        max_returned: int | None = None,
        customer_list_id: str | None = None,
        include_line_items: bool | None = None,
        iterator: str | None = None,
        iterator_id: str | None = None,
        include_ret_elements: Sequence[str] | None = None,
        owner_id: str | Sequence[str] | None = None,
    ) -> QbRequest:
        date_filter = None
        if modified_from is not None or modified_to is not None:
            date_filter = {"FromModifiedDate": modified_from, "ToModifiedDate": modified_to}
        fields: dict[str, Any] = {
            "TxnID": list(txn_ids) if txn_ids else None,
            "RefNumber": list(ref_numbers) if ref_numbers else None,
            "MaxReturned": max_returned,
            "ModifiedDateRangeFilter": date_filter,
            "EntityFilter": {"ListID": customer_list_id} if customer_list_id else None,
            "IncludeLineItems": include_line_items,
            "OwnerID": [owner_id] if isinstance(owner_id, str) else owner_id,
        }
        return build_request(
            kind,
            fields,
            request_id=request_id,
            attrs=_iterator_attrs(kind, iterator, iterator_id),
            include_ret_elements=include_ret_elements,
        )

    query.__doc__ = (
        f"Build a ``{kind}Rq``: by TxnID or RefNumber, or by filters (ModifiedDateRangeFilter, "
        "customer, MaxReturned), optionally with line items, iterators and DataExt (`owner_id`)."
    )
    return query


customer_add = _list_add("CustomerAdd")
customer_mod = _list_mod("CustomerMod")
customer_query = _list_query("CustomerQuery")
item_service_add = _list_add("ItemServiceAdd")
item_service_mod = _list_mod("ItemServiceMod")
item_service_query = _list_query("ItemServiceQuery")
item_non_inventory_add = _list_add("ItemNonInventoryAdd")
item_non_inventory_mod = _list_mod("ItemNonInventoryMod")
item_non_inventory_query = _list_query("ItemNonInventoryQuery")
item_inventory_add = _list_add("ItemInventoryAdd")
item_inventory_mod = _list_mod("ItemInventoryMod")
item_inventory_query = _list_query("ItemInventoryQuery")
item_query = _list_query("ItemQuery")
#: Sales reps (no iterator, no DataExt: the list is short and has no custom fields).
sales_rep_query = _list_query("SalesRepQuery")
sales_order_add = _list_add("SalesOrderAdd")
sales_order_mod = _txn_mod("SalesOrderMod")
sales_order_query = _txn_query("SalesOrderQuery")
invoice_add = _list_add("InvoiceAdd")
invoice_mod = _txn_mod("InvoiceMod")
invoice_query = _txn_query("InvoiceQuery")
sales_receipt_add = _list_add("SalesReceiptAdd")
sales_receipt_mod = _txn_mod("SalesReceiptMod")
sales_receipt_query = _txn_query("SalesReceiptQuery")


def txn_del(txn_type: str, txn_id: str, *, request_id: str | None = None) -> QbRequest:
    """Build a ``TxnDelRq`` (delete a transaction such as an Invoice; QuickBooks keeps no trace)."""
    return build_request("TxnDel", {"TxnDelType": txn_type, "TxnID": txn_id}, request_id=request_id)


def list_del(list_type: str, list_id: str, *, request_id: str | None = None) -> QbRequest:
    """Build a ``ListDelRq`` (QuickBooks refuses to delete a list object that is in use)."""
    return build_request("ListDel", {"ListDelType": list_type, "ListID": list_id}, request_id=request_id)


def host_query(*, request_id: str | None = None) -> QbRequest:
    """Build a ``HostQueryRq`` (product, version, supported qbXML versions)."""
    return build_request("HostQuery", {}, request_id=request_id)


def company_query(*, request_id: str | None = None, owner_id: str | None = None) -> QbRequest:
    """Build a ``CompanyQueryRq``; with `owner_id` it returns that owner's company DataExts (FileID)."""
    return build_request("CompanyQuery", {"OwnerID": [owner_id] if owner_id else None}, request_id=request_id)


def data_ext_def_add(
    owner_id: str,
    name: str,
    data_ext_type: str = "STR255TYPE",
    assign_to_objects: Sequence[str] = ("Customer",),
    *,
    request_id: str | None = None,
) -> QbRequest:
    """Build a ``DataExtDefAddRq``: define custom field `name` (max 31) for the listed object types."""
    fields = {
        "OwnerID": owner_id,
        "DataExtName": name,
        "DataExtType": data_ext_type,
        "AssignToObject": list(assign_to_objects),
    }
    return build_request("DataExtDefAdd", fields, request_id=request_id)


def data_ext_def_query(*, owner_id: str | None = None, request_id: str | None = None) -> QbRequest:
    """Build a ``DataExtDefQueryRq`` for one owner's definitions (all public ones with ``0``)."""
    return build_request("DataExtDefQuery", {"OwnerID": owner_id}, request_id=request_id)


def _data_ext_target(object_type: str, object_id: str | Mapping[str, str], where: str) -> dict[str, Any]:
    list_types = children("DataExtAdd")["ListDataExtType"].facts["enum"]
    txn_types = children("DataExtAdd")["TxnDataExtType"].facts["enum"]
    if object_type in list_types:
        ref = dict(object_id) if isinstance(object_id, Mapping) else {"ListID": object_id}
        return {"ListDataExtType": object_type, "ListObjRef": ref}
    if object_type in txn_types:
        if not isinstance(object_id, str):
            raise QbxmlValidationError(f"{where}/TxnID", "must be a TxnID string", object_id)
        return {"TxnDataExtType": object_type, "TxnID": object_id}
    raise QbxmlValidationError(
        f"{where}/ListDataExtType",
        f"object type must be one of {', '.join(list_types)} or a transaction type ({', '.join(txn_types[:8])}, ...)",
        object_type,
    )


def data_ext_add(
    owner_id: str,
    name: str,
    object_type: str,
    object_id: str | Mapping[str, str],
    value: Any,
    *,
    request_id: str | None = None,
) -> QbRequest:
    """Build a ``DataExtAddRq``: set custom field `name` on a list object (ListID) or transaction (TxnID)."""
    return _data_ext_value("DataExtAdd", owner_id, name, object_type, object_id, value, request_id)


def data_ext_mod(
    owner_id: str,
    name: str,
    object_type: str,
    object_id: str | Mapping[str, str],
    value: Any,
    *,
    request_id: str | None = None,
) -> QbRequest:
    """Build a ``DataExtModRq``: change the value of custom field `name` on one object."""
    return _data_ext_value("DataExtMod", owner_id, name, object_type, object_id, value, request_id)


def _data_ext_value(kind, owner_id, name, object_type, object_id, value, request_id) -> QbRequest:
    """DataExtAdd and DataExtMod carry the same fields in the same order; only the kind differs."""
    fields = {"OwnerID": owner_id, "DataExtName": name, **_data_ext_target(object_type, object_id, kind)}
    fields["DataExtValue"] = value
    return build_request(kind, fields, request_id=request_id)


def data_ext_del(
    owner_id: str,
    name: str,
    object_type: str,
    object_id: str | Mapping[str, str],
    *,
    request_id: str | None = None,
) -> QbRequest:
    """Build a ``DataExtDelRq``: remove custom field `name` from one object."""
    fields = {
        "OwnerID": owner_id,
        "DataExtName": name,
        **_data_ext_target(object_type, object_id, "DataExtDel"),
    }
    return build_request("DataExtDel", fields, request_id=request_id)
