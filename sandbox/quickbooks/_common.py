"""Shared facts of the QuickBooks simulator: object kinds, name spaces, status failures, money."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

__all__ = [
    "FAMILY_LABEL",
    "ITEM_KINDS",
    "LIST_KINDS",
    "MAX_MESSAGE_SET_ID",
    "NOT_FOUND_TAIL",
    "REF_FAMILIES",
    "TXN_KINDS",
    "Failure",
    "fmt_money",
    "list_name",
    "money",
    "parse_when",
]

#: List kinds the simulator keeps, with their name space (names are unique per name space:
#: customers share one with vendors/employees in QuickBooks, items share one across item types).
LIST_KINDS: dict[str, str] = {
    "Customer": "entity",
    "ItemService": "item",
    "ItemNonInventory": "item",
    "ItemInventory": "item",
    "Account": "account",
    "PaymentMethod": "paymentmethod",
    "SalesTaxCode": "salestaxcode",
    "StandardTerms": "terms",
    "SalesRep": "salesrep",  # named by its Initial (SalesRepRet has no Name)
}
ITEM_KINDS = ("ItemService", "ItemNonInventory", "ItemInventory")
TXN_KINDS: dict[str, str] = {
    "SalesOrder": "SalesOrderLine",
    "Invoice": "InvoiceLine",
    "SalesReceipt": "SalesReceiptLine",
}
#: Which name space each reference element points into.
REF_FAMILIES: dict[str, str] = {
    "CustomerRef": "entity",
    "ItemRef": "item",
    "AccountRef": "account",
    "IncomeAccountRef": "account",
    "COGSAccountRef": "account",
    "AssetAccountRef": "account",
    "ExpenseAccountRef": "account",
    "DepositToAccountRef": "account",
    "ARAccountRef": "account",
    "PaymentMethodRef": "paymentmethod",
    "PreferredPaymentMethodRef": "paymentmethod",
    "SalesTaxCodeRef": "salestaxcode",
    "CustomerSalesTaxCodeRef": "salestaxcode",
    "PurchaseTaxCodeRef": "salestaxcode",
    "TermsRef": "terms",
    "SalesRepRef": "salesrep",
}
FAMILY_LABEL = {
    "entity": "Customer",
    "item": "Item",
    "account": "Account",
    "paymentmethod": "PaymentMethod",
    "salestaxcode": "SalesTaxCode",
    "terms": "Terms",
    "salesrep": "SalesRep",
}


def list_name(record: dict[str, Any]) -> str:
    """A list object's name as references and FullName filters use it: a sales rep's is its Initial."""
    return record.get("FullName") or record.get("Initial") or ""


NOT_FOUND_TAIL = (
    "QuickBooks error message: Invalid argument.  The specified record does not exist in the list."
)
MAX_MESSAGE_SET_ID = 24  # Intuit's error-recovery sample: messageSetStatusCode 9004 above 24 characters


class Failure(Exception):
    """One request failed with a QuickBooks status code; the others in the batch go on."""

    def __init__(self, code: int, message: str, severity: str = "Error"):
        self.code, self.message, self.severity = code, message, severity
        super().__init__(f"{code}: {message}")


def money(value: Any) -> Decimal:
    try:
        return Decimal(str(value or "0"))
    except InvalidOperation:
        return Decimal(0)


def fmt_money(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def parse_when(text: str, default_tz: dt.tzinfo) -> dt.datetime:
    """Read a qbXML DATETIMETYPE/DATETYPE; a value without offset is in the company's local time."""
    text = text.strip()
    if len(text) == 10:
        return dt.datetime.fromisoformat(text).replace(tzinfo=default_tz)
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=default_tz)
