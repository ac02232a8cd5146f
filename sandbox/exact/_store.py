"""Per-division data of the simulated Exact Online: records, row versions, business rules, persistence.

Records are kept in their wire form (dates as `/Date(ms)/`, GUIDs as lower-case strings) plus an
integer `Timestamp`, the per-division row version the sync API pages by. Every change bumps it, so
a sync consumer sees each change exactly once. Validation mirrors what Exact refuses (mandatory
fields, read-only fields, unknown properties, duplicate codes, dangling references) and raises
`ApiError`, which the app turns into Exact's OData error body.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erpsync.sandbox.exact._entities import ENTITIES, EntitySpec
from erpsync.sandbox.exact._odata import ms_to_date

__all__ = ["ApiError", "Division", "ExactStore", "pad_account_code"]

ORDER_STATUS = {12: "Open", 20: "Partial", 21: "Complete", 45: "Cancelled"}
#: salesinvoice/SalesInvoices.Status and .Type (Exact's documentation).
INVOICE_STATUS = {10: "Draft", 20: "Open", 50: "Processed"}
INVOICE_TYPES = {8020: "Sales invoice", 8021: "Sales credit note", 8023: "Direct sales invoice"}
#: financial/Journals.Type of a sales journal.
SALES_JOURNAL = 20
DELIVERY_STATUS = {12: "Open", 20: "Partial", 21: "Complete"}


class ApiError(Exception):
    """A request Exact refuses; `status` and `message` go into the OData error body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def pad_account_code(code: Any) -> str:
    """Right-align an account code in 18 characters, as Exact stores it (`'                25'`)."""
    text = str(code).strip()
    if len(text) > 18:
        raise ApiError(400, f"Code: maximum length is 18 characters ('{text}')")
    return text.rjust(18)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Division:
    """One administration: its tables, row-version counter and number sequences."""

    code: int
    name: str
    country: str = "NL"
    currency: str = "EUR"
    customer_name: str = "ERPSync Demo"
    tables: dict[str, dict[str, dict]] = field(default_factory=dict)
    timestamp: int = 1000
    order_number: int = 0
    invoice_number: int = 0
    delivery_number: int = 0
    deleted: list[dict] = field(default_factory=list)

    def table(self, spec: EntitySpec) -> dict[str, dict]:
        return self.tables.setdefault(spec.path, {})

    def next_timestamp(self) -> int:
        self.timestamp += 1
        return self.timestamp

    def as_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: dict) -> Division:
        return cls(**data)

    @property
    def info(self) -> dict:
        return {
            "Code": self.code,
            "Description": self.name,
            "Country": self.country,
            "Currency": self.currency,
        }


def _new_guid() -> str:
    return str(uuid.uuid4())


def _is_guid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


class ExactStore:
    """All divisions, with the create/update/delete rules of each entity."""

    USER = {
        "UserID": "4b3a6f0e-3c8a-4c1e-9f1e-2d6c3e5a7b10",
        "UserName": "demo@erpsync.example",
        "FullName": "Demo Integrator",
    }

    def __init__(self, path: Path | None = None):
        self.path = path
        self.divisions: dict[int, Division] = {}

    # ---- persistence -------------------------------------------------------------------------

    def load(self) -> bool:
        if self.path is None or not self.path.exists():
            return False
        data = json.loads(self.path.read_text())
        self.divisions = {int(k): Division.from_json(v) for k, v in data["divisions"].items()}
        return True

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"divisions": {str(k): v.as_json() for k, v in self.divisions.items()}}))
        tmp.replace(self.path)

    # ---- helpers -----------------------------------------------------------------------------

    def division(self, code: int) -> Division:
        return self.divisions[code]

    def _stamp(self, div: Division, record: dict, *, created: bool) -> None:
        stamp = ms_to_date(now_ms())
        if created:
            record.setdefault("Created", stamp)
            record.setdefault("Creator", self.USER["UserID"])
            record.setdefault("CreatorFullName", self.USER["FullName"])
        record["Modified"] = stamp
        record["Modifier"] = self.USER["UserID"]
        record["ModifierFullName"] = self.USER["FullName"]
        record["Division"] = div.code
        record["Timestamp"] = div.next_timestamp()

    def _check_body(self, spec: EntitySpec, body: Any, *, creating: bool, allow_key: bool = True) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, f"Error reading request body: expected a JSON object for {spec.entity_name}")
        known = set(spec.all_fields)
        for name in body:
            if name not in known:
                raise ApiError(
                    400,
                    f"The property '{name}' does not exist on type '{spec.type_name}'. "
                    "Make sure to only use property names that are defined by the type.",
                )
            if name in spec.read_only and name not in spec.children:
                raise ApiError(400, f"Property '{name}' of '{spec.type_name}' is read-only and cannot be set")
            if name == spec.key and not (creating and allow_key):
                raise ApiError(
                    400, f"Property '{name}' is the key of '{spec.type_name}' and cannot be changed"
                )
        if creating:
            for name in spec.required:
                value = body.get(name)
                if value is None or (isinstance(value, str) and not value.strip()):
                    raise ApiError(400, f"Mandatory: {name}")
        return dict(body)

    def _ref(self, div: Division, path: str, key: Any, what: str) -> dict:
        spec = ENTITIES[path.lower()]
        if not _is_guid(key):
            raise ApiError(400, f"{what}: '{key}' is not a valid guid")
        record = div.table(spec).get(str(key).lower())
        if record is None:
            raise ApiError(
                400, f"{what}: {spec.entity_name[:-1]} '{key}' does not exist in division {div.code}"
            )
        return record

    def _by_code(self, div: Division, path: str, code: str) -> dict | None:
        for record in div.table(ENTITIES[path.lower()]).values():
            if record.get("Code") == code:
                return record
        return None

    # ---- generic CRUD -------------------------------------------------------------------------

    def get(self, div: Division, spec: EntitySpec, key: str) -> dict:
        record = div.table(spec).get(key.lower())
        if record is None:
            raise ApiError(404, f"{spec.entity_name}: record with {spec.key} '{key}' not found")
        return record

    def create(self, div: Division, spec: EntitySpec, body: Any) -> dict:
        """Validate and insert one record (with its embedded children); return the stored record."""
        if "POST" not in spec.methods:
            raise ApiError(405, f"Method POST is not allowed on {spec.entity_name}")
        record = self._check_body(spec, body, creating=True)
        key = record.get(spec.key)
        if key is not None:
            if not _is_guid(key):
                raise ApiError(400, f"{spec.key}: '{key}' is not a valid guid")
            if str(key).lower() in div.table(spec):
                raise ApiError(400, f"{spec.entity_name}: a record with {spec.key} '{key}' already exists")
        record[spec.key] = str(key).lower() if key else _new_guid()
        prepare = getattr(self, f"_create_{spec.entity_name}", None)
        if prepare is not None:
            prepare(div, spec, record)
        self._stamp(div, record, created=True)
        div.table(spec)[record[spec.key]] = record
        return record

    def update(self, div: Division, spec: EntitySpec, key: str, body: Any) -> dict:
        if "PUT" not in spec.methods:
            raise ApiError(405, f"Method PUT is not allowed on {spec.entity_name}")
        record = self.get(div, spec, key)
        changes = self._check_body(spec, body, creating=False)
        for nav in spec.children:
            if nav in changes:
                raise ApiError(
                    400, f"{nav} cannot be changed through {spec.entity_name}; PUT the lines themselves"
                )
        check = getattr(self, f"_update_{spec.entity_name}", None)
        if check is not None:
            check(div, spec, record, changes)
        for name in spec.required:
            if name in changes and (changes[name] is None or str(changes[name]).strip() == ""):
                raise ApiError(400, f"Mandatory: {name}")
        record.update(changes)
        self._stamp(div, record, created=False)
        return record

    def delete(self, div: Division, spec: EntitySpec, key: str) -> None:
        if "DELETE" not in spec.methods:
            raise ApiError(405, f"Method DELETE is not allowed on {spec.entity_name}")
        record = self.get(div, spec, key)
        del div.table(spec)[record[spec.key]]
        self._record_deletion(div, spec, record[spec.key])
        if spec.path == "logistics/Items":
            # The item's stock position goes with it (sync/Deleted, EntityType 15), so the stock
            # sync feed never keeps a position of an item that no longer exists.
            positions = ENTITIES["inventory/stockpositions"]
            if div.table(positions).pop(record["ID"], None) is not None:
                self._record_deletion(div, positions, record["ID"])

    def _record_deletion(self, div: Division, spec: EntitySpec, key: str) -> None:
        """Add a `sync/Deleted` row (with the next row version) for an entity type Exact reports."""
        if spec.deleted_type is None:
            return
        div.deleted.append(
            {
                "ID": _new_guid(),
                "Timestamp": div.next_timestamp(),
                "Division": div.code,
                "EntityKey": key,
                "EntityType": spec.deleted_type,
                "DeletedBy": self.USER["UserID"],
                "DeletedDate": ms_to_date(now_ms()),
            }
        )

    # ---- entity rules ---------------------------------------------------------------------------

    def _create_Accounts(self, div: Division, spec: EntitySpec, record: dict) -> None:
        table = div.table(spec)
        if record.get("Code") in (None, ""):
            numbers = [int(r["Code"]) for r in table.values() if str(r.get("Code", "")).strip().isdigit()]
            record["Code"] = str(max(numbers, default=0) + 1)
        record["Code"] = pad_account_code(record["Code"])
        if any(r.get("Code") == record["Code"] for r in table.values()):
            raise ApiError(400, f"Code: an account with code '{record['Code'].strip()}' already exists")
        self._account_refs(div, record)
        record.setdefault("Status", "C")
        record.setdefault("Blocked", False)
        record.setdefault("IsSupplier", False)
        record["IsSales"] = record.get("Status") in ("C", "P", "S")
        record["Type"] = "A"

    def _update_Accounts(self, div: Division, spec: EntitySpec, record: dict, changes: dict) -> None:
        if "Code" in changes:
            changes["Code"] = pad_account_code(changes["Code"])
            if any(r.get("Code") == changes["Code"] and r is not record for r in div.table(spec).values()):
                raise ApiError(400, f"Code: an account with code '{changes['Code'].strip()}' already exists")
        self._account_refs(div, changes)
        if "Status" in changes:
            changes["IsSales"] = changes["Status"] in ("C", "P", "S")

    def _account_refs(self, div: Division, record: dict) -> None:
        if record.get("Status") not in (None, "", "C", "P", "S", "A"):
            raise ApiError(400, f"Status: '{record['Status']}' is not a valid customer status (C, P, S, A)")
        code = record.get("PaymentConditionSales")
        if code:
            pc = self._by_code(div, "cashflow/PaymentConditions", code)
            if pc is None:
                raise ApiError(400, f"PaymentConditionSales: payment condition '{code}' does not exist")
            record["PaymentConditionSalesDescription"] = pc["Description"]
        code = record.get("SalesVATCode")
        if code:
            vat = self._by_code(div, "vat/VATCodes", code)
            if vat is None:
                raise ApiError(400, f"SalesVATCode: VAT code '{code}' does not exist")
            record["SalesVATCodeDescription"] = vat["Description"]

    def _create_Contacts(self, div: Division, spec: EntitySpec, record: dict) -> None:
        if not (record.get("FirstName") or record.get("LastName")):
            raise ApiError(400, "Mandatory: FirstName or LastName")
        self._contact_refs(div, record)

    def _update_Contacts(self, div: Division, spec: EntitySpec, record: dict, changes: dict) -> None:
        merged = {**record, **changes}
        if not (merged.get("FirstName") or merged.get("LastName")):
            raise ApiError(400, "Mandatory: FirstName or LastName")
        self._contact_refs(div, merged)
        changes.update({k: merged[k] for k in ("FullName", "AccountName", "Code", "AccountIsCustomer")})

    def _contact_refs(self, div: Division, record: dict) -> None:
        account = self._ref(div, "crm/Accounts", record["Account"], "Account")
        record["Account"] = account["ID"]
        names = [record.get("FirstName"), record.get("MiddleName"), record.get("LastName")]
        record["FullName"] = " ".join(n for n in names if n)
        record["AccountName"] = account["Name"]
        record["Code"] = account["Code"]
        record["AccountIsCustomer"] = account.get("IsSales", False)
        record["AccountIsSupplier"] = account.get("IsSupplier", False)
        record.setdefault("IsMainContact", account.get("MainContact") == record.get("ID"))

    #: crm/Addresses.Type: Visit=1, Postal=2, Invoice=3, Delivery=4 (Exact's documentation).
    ADDRESS_TYPES = {1: "Visit", 2: "Postal", 3: "Invoice", 4: "Delivery"}

    def _create_Addresses(self, div: Division, spec: EntitySpec, record: dict) -> None:
        self._address_refs(div, record)
        same = [
            r
            for r in div.table(spec).values()
            if r.get("Account") == record["Account"] and r.get("Type") == record["Type"] and r.get("Main")
        ]
        record["Main"] = bool(record.get("Main", not same))
        if record["Main"]:
            for other in same:
                other["Main"] = False

    def _update_Addresses(self, div: Division, spec: EntitySpec, record: dict, changes: dict) -> None:
        merged = {**record, **changes}
        self._address_refs(div, merged)
        changes.update({k: merged[k] for k in ("Type", "Account", "AccountName", "AccountIsSupplier")})

    def _address_refs(self, div: Division, record: dict) -> None:
        kind = record.get("Type")
        if isinstance(kind, bool) or not isinstance(kind, int) or kind not in self.ADDRESS_TYPES:
            raise ApiError(
                400, f"Type: '{kind}' is not a valid address type (1 visit, 2 postal, 3 invoice, 4 delivery)"
            )
        if not record.get("Account"):
            raise ApiError(400, "Mandatory: Account")
        account = self._ref(div, "crm/Accounts", record["Account"], "Account")
        record["Account"] = account["ID"]
        record["AccountName"] = account["Name"]
        record["AccountIsSupplier"] = account.get("IsSupplier", False)
        if record.get("Contact"):
            contact = self._ref(div, "crm/Contacts", record["Contact"], "Contact")
            record["Contact"] = contact["ID"]
            record["ContactName"] = contact.get("FullName")

    def _delivery_address(self, div: Division, order: dict) -> None:
        """A sales order's DeliveryAddress is a delivery address (type 4) of its DeliverTo account."""
        key = order.get("DeliveryAddress")
        if not key:
            return
        address = self._ref(div, "crm/Addresses", key, "DeliveryAddress")
        if address.get("Type") != 4:
            raise ApiError(
                400,
                f"DeliveryAddress: address '{key}' is not a delivery address (type {address.get('Type')})",
            )
        if address.get("Account") != order.get("DeliverTo"):
            raise ApiError(
                400, f"DeliveryAddress: address '{key}' does not belong to the delivery account (DeliverTo)"
            )
        order["DeliveryAddress"] = address["ID"]

    def _create_Items(self, div: Division, spec: EntitySpec, record: dict) -> None:
        if any(r.get("Code") == record["Code"] for r in div.table(spec).values()):
            raise ApiError(400, f"Code: item code '{record['Code']}' already exists")
        self._item_refs(div, record)
        record.setdefault("Unit", "pc")
        record.setdefault("IsSalesItem", True)
        record.setdefault("IsPurchaseItem", True)
        record.setdefault("IsStockItem", False)
        record.setdefault("StandardSalesPrice", 0.0)
        record.setdefault("Stock", 0.0)
        record["UnitDescription"] = {
            "pc": "Piece",
            "box": "Box",
            "kg": "Kilogram",
            "m": "Meter",
            "hr": "Hour",
        }.get(record["Unit"], record["Unit"])
        if record.get("IsStockItem"):
            self.set_stock(div, record, current=0.0)

    def _update_Items(self, div: Division, spec: EntitySpec, record: dict, changes: dict) -> None:
        if "Code" in changes and any(
            r.get("Code") == changes["Code"] and r is not record for r in div.table(spec).values()
        ):
            raise ApiError(400, f"Code: item code '{changes['Code']}' already exists")
        self._item_refs(div, changes)

    def _item_refs(self, div: Division, record: dict) -> None:
        description = record.get("Description")
        if isinstance(description, str) and len(description) > 60:
            raise ApiError(400, f"Description: maximum length is 60 characters, got {len(description)}")
        code = record.get("SalesVatCode")
        if code:
            vat = self._by_code(div, "vat/VATCodes", code)
            if vat is None:
                raise ApiError(400, f"SalesVatCode: VAT code '{code}' does not exist")
            record["SalesVatCodeDescription"] = vat["Description"]

    def _create_SalesItemPrices(self, div: Division, spec: EntitySpec, record: dict) -> None:
        item = self._ref(div, "logistics/Items", record["Item"], "Item")
        record["Item"] = item["ID"]
        record.update(
            ItemCode=item["Code"], ItemDescription=item["Description"], DefaultItemUnit=item["Unit"]
        )
        record.setdefault("Currency", div.currency)
        record.setdefault("Unit", item["Unit"])
        record.setdefault("Quantity", 0.0)
        record.setdefault("NumberOfItemsPerUnit", 1.0)
        if record.get("Account"):
            record["AccountName"] = self._ref(div, "crm/Accounts", record["Account"], "Account")["Name"]
        if not record.get("Account") and float(record.get("Quantity") or 0) == 0:
            item["StandardSalesPrice"] = float(record["Price"])
            self._stamp(div, item, created=False)

    # ---- sales orders ----------------------------------------------------------------------------

    def _create_SalesOrders(self, div: Division, spec: EntitySpec, record: dict) -> None:
        lines = record.pop("SalesOrderLines", None)
        if isinstance(lines, dict) and "results" in lines:
            lines = lines["results"]
        if not isinstance(lines, list) or not lines:
            raise ApiError(400, "SalesOrderLines: a sales order needs at least one line")
        account = self._ref(div, "crm/Accounts", record["OrderedBy"], "OrderedBy")
        if account.get("Blocked"):
            raise ApiError(400, f"OrderedBy: account '{account['Name']}' is blocked")
        record["OrderedBy"] = account["ID"]
        record["OrderedByName"] = account["Name"]
        record.setdefault("DeliverTo", account["ID"])
        record.setdefault("InvoiceTo", account["ID"])
        record["DeliverTo"] = self._ref(div, "crm/Accounts", record["DeliverTo"], "DeliverTo")["ID"]
        self._delivery_address(div, record)
        record.setdefault("OrderDate", ms_to_date(now_ms() // 86_400_000 * 86_400_000))
        record.setdefault("Currency", div.currency)
        if record.get("YourRef") is not None and len(str(record["YourRef"])) > 30:
            raise ApiError(
                400, f"YourRef: maximum length is 30 characters, got {len(str(record['YourRef']))}"
            )
        pc_code = record.get("PaymentCondition") or account.get("PaymentConditionSales")
        if pc_code:
            pc = self._by_code(div, "cashflow/PaymentConditions", pc_code)
            if pc is None:
                raise ApiError(400, f"PaymentCondition: payment condition '{pc_code}' does not exist")
            record["PaymentCondition"] = pc_code
            record["PaymentConditionDescription"] = pc["Description"]
        line_spec = ENTITIES["salesorder/salesorderlines"]
        prepared = []
        for index, line in enumerate(lines):
            try:
                body = self._check_body(line_spec, line, creating=False, allow_key=True)
                if not body.get("Item"):
                    raise ApiError(400, "Mandatory: Item")
                prepared.append(body)
            except ApiError as exc:
                raise ApiError(exc.status, f"SalesOrderLines[{index}]: {exc.message}") from None
        div.order_number += 1
        record["OrderNumber"] = div.order_number
        record["Status"], record["StatusDescription"] = 12, ORDER_STATUS[12]
        record["DeliveryStatus"], record["DeliveryStatusDescription"] = 12, DELIVERY_STATUS[12]
        record["InvoiceStatus"] = 12
        # Lines are validated first and inserted after: a bad line leaves no half-created order.
        staged = []
        for index, body in enumerate(prepared):
            try:
                staged.append(self._order_line(div, record, body, len(staged) + 1))
            except ApiError as exc:
                div.order_number -= 1
                raise ApiError(exc.status, f"SalesOrderLines[{index}]: {exc.message}") from None
        table = div.table(line_spec)
        for line in staged:
            self._stamp(div, line, created=True)
            table[line["ID"]] = line
            self._reserve(div, line["Item"], line["Quantity"])
        self._order_totals(div, record)

    def _order_line(self, div: Division, order: dict, body: dict, number: int) -> dict:
        item = self._ref(div, "logistics/Items", body["Item"], "Item")
        if not item.get("IsSalesItem", True):
            raise ApiError(400, f"Item: '{item['Code']}' is not a sales item")
        quantity = float(body.get("Quantity", 1))
        unit_price = float(body.get("UnitPrice", item.get("StandardSalesPrice") or 0))
        discount = float(body.get("Discount", 0))
        net = float(body.get("NetPrice", round(unit_price * (1 - discount), 2)))
        vat_code = body.get("VATCode") or item.get("SalesVatCode")
        vat = self._by_code(div, "vat/VATCodes", vat_code) if vat_code else None
        if vat_code and vat is None:
            raise ApiError(400, f"VATCode: VAT code '{vat_code}' does not exist")
        if vat is not None and vat.get("IsBlocked"):
            raise ApiError(400, f"VATCode: VAT code '{vat_code}' is blocked")
        percentage = float(vat["Percentage"]) if vat else 0.0
        amount = round(net * quantity, 2)
        line = dict(body)
        line.update(
            ID=str(body.get("ID") or _new_guid()).lower(),
            OrderID=order["OrderID"],
            OrderNumber=order["OrderNumber"],
            LineNumber=number,
            Item=item["ID"],
            ItemCode=item["Code"],
            ItemDescription=item.get("Description"),
            Description=body.get("Description", item.get("Description")),
            Quantity=quantity,
            QuantityDelivered=0.0,
            QuantityInvoiced=0.0,
            UnitPrice=unit_price,
            NetPrice=net,
            Discount=discount,
            AmountFC=amount,
            AmountDC=amount,
            VATCode=vat_code,
            VATCodeDescription=vat["Description"] if vat else None,
            VATPercentage=percentage / 100,
            VATAmount=round(amount * percentage / 100, 2),
            UnitCode=body.get("UnitCode", item.get("Unit")),
        )
        return line

    def _order_totals(self, div: Division, order: dict) -> None:
        lines = [
            ln
            for ln in div.table(ENTITIES["salesorder/salesorderlines"]).values()
            if ln["OrderID"] == order["OrderID"]
        ]
        excl = round(sum(ln["AmountFC"] for ln in lines), 2)
        order["AmountFCExclVat"] = excl
        order["AmountFC"] = order["AmountDC"] = round(excl + sum(ln["VATAmount"] for ln in lines), 2)
        ordered = sum(ln["Quantity"] for ln in lines)
        delivered = sum(ln["QuantityDelivered"] for ln in lines)
        status = 12 if delivered == 0 else 21 if delivered >= ordered else 20
        order["DeliveryStatus"], order["DeliveryStatusDescription"] = status, DELIVERY_STATUS[status]
        if order.get("Status") != 45:
            order["Status"], order["StatusDescription"] = status, ORDER_STATUS[status]

    def _update_SalesOrders(self, div: Division, spec: EntitySpec, record: dict, changes: dict) -> None:
        if record.get("Status") in (21, 45):
            raise ApiError(
                400,
                f"Sales order {record['OrderNumber']} is {record['StatusDescription'].lower()} and cannot be changed",
            )
        if "OrderedBy" in changes:
            changes["OrderedBy"] = self._ref(div, "crm/Accounts", changes["OrderedBy"], "OrderedBy")["ID"]
        if "DeliveryAddress" in changes or "DeliverTo" in changes:
            merged = {**record, **changes}
            self._delivery_address(div, merged)
            if changes.get("DeliveryAddress"):
                changes["DeliveryAddress"] = merged["DeliveryAddress"]

    # ---- sales invoices -------------------------------------------------------------------------

    def _create_SalesInvoices(self, div: Division, spec: EntitySpec, record: dict) -> None:
        lines = record.pop("SalesInvoiceLines", None)
        if isinstance(lines, dict) and "results" in lines:
            lines = lines["results"]
        if not isinstance(lines, list) or not lines:
            raise ApiError(400, "SalesInvoiceLines: a sales invoice needs at least one line")
        journal = self._by_code(div, "financial/Journals", str(record["Journal"]))
        if journal is None:
            raise ApiError(400, f"Journal: journal '{record['Journal']}' does not exist")
        if journal.get("Type") != SALES_JOURNAL:
            raise ApiError(400, f"Journal: journal '{record['Journal']}' is not a sales journal")
        record["JournalDescription"] = journal["Description"]
        kind = record.setdefault("Type", 8020)
        if kind not in INVOICE_TYPES:
            raise ApiError(400, f"Type: '{kind}' is not a sales invoice type (8020, 8021, 8023)")
        record["TypeDescription"] = INVOICE_TYPES[kind]
        account = self._ref(div, "crm/Accounts", record["OrderedBy"], "OrderedBy")
        if account.get("Blocked"):
            raise ApiError(400, f"OrderedBy: account '{account['Name']}' is blocked")
        record["OrderedBy"], record["OrderedByName"] = account["ID"], account["Name"]
        for role in ("InvoiceTo", "DeliverTo"):
            other = self._ref(div, "crm/Accounts", record.get(role) or account["ID"], role)
            record[role], record[f"{role}Name"] = other["ID"], other["Name"]
        if record.get("DeliverToAddress"):
            check = {"DeliveryAddress": record["DeliverToAddress"], "DeliverTo": record["DeliverTo"]}
            self._delivery_address(div, check)
            record["DeliverToAddress"] = check["DeliveryAddress"]
        today = ms_to_date(now_ms() // 86_400_000 * 86_400_000)
        record.setdefault("InvoiceDate", today)
        record.setdefault("Currency", div.currency)
        if record.get("YourRef") is not None and len(str(record["YourRef"])) > 30:
            raise ApiError(
                400, f"YourRef: maximum length is 30 characters, got {len(str(record['YourRef']))}"
            )
        pc_code = record.get("PaymentCondition") or account.get("PaymentConditionSales")
        if pc_code:
            pc = self._by_code(div, "cashflow/PaymentConditions", pc_code)
            if pc is None:
                raise ApiError(400, f"PaymentCondition: payment condition '{pc_code}' does not exist")
            record["PaymentCondition"], record["PaymentConditionDescription"] = pc_code, pc["Description"]
        line_spec = ENTITIES["salesinvoice/salesinvoicelines"]
        staged = []
        for index, line in enumerate(lines):
            try:
                body = self._check_body(line_spec, line, creating=False, allow_key=True)
                if not body.get("Item"):
                    raise ApiError(400, "Mandatory: Item")
                order_line = self._order_line(div, {"OrderID": None, "OrderNumber": None}, body, index + 1)
            except ApiError as exc:
                raise ApiError(exc.status, f"SalesInvoiceLines[{index}]: {exc.message}") from None
            staged.append(
                {
                    **{k: v for k, v in order_line.items() if k in line_spec.fields},
                    "InvoiceID": record["InvoiceID"],
                    "VATAmountFC": order_line["VATAmount"],
                    "VATAmountDC": order_line["VATAmount"],
                }
            )
        div.invoice_number += 1
        record["InvoiceNumber"] = div.invoice_number
        record["Status"], record["StatusDescription"] = 20, INVOICE_STATUS[20]
        table = div.table(line_spec)
        for line in staged:
            self._stamp(div, line, created=True)
            table[line["ID"]] = line
        excl = round(sum(ln["AmountFC"] for ln in staged), 2)
        vat = round(sum(ln["VATAmountFC"] for ln in staged), 2)
        record["AmountFCExclVat"] = excl
        record["VATAmountFC"] = record["VATAmountDC"] = vat
        record["AmountFC"] = record["AmountDC"] = round(excl + vat, 2)

    def _update_SalesInvoices(self, div: Division, spec: EntitySpec, record: dict, changes: dict) -> None:
        if record.get("Status") == 50:
            raise ApiError(400, f"Sales invoice {record['InvoiceNumber']} is processed and cannot be changed")
        for name in ("Journal", "Type", "OrderedBy"):
            if name in changes and changes[name] != record.get(name):
                raise ApiError(400, f"{name} of sales invoice {record['InvoiceNumber']} cannot be changed")

    def _create_SalesOrderLines(self, div: Division, spec: EntitySpec, record: dict) -> None:
        order = self._ref(div, "salesorder/SalesOrders", record["OrderID"], "OrderID")
        if order.get("Status") in (21, 45):
            raise ApiError(
                400,
                f"Sales order {order['OrderNumber']} is {order['StatusDescription'].lower()} and cannot be changed",
            )
        existing = [ln for ln in div.table(spec).values() if ln["OrderID"] == order["OrderID"]]
        record.update(self._order_line(div, order, record, len(existing) + 1))
        self._reserve(div, record["Item"], record["Quantity"])
        div.table(spec)[record["ID"]] = record  # totals need to see it; _stamp follows in create()
        self._order_totals(div, order)
        self._stamp(div, order, created=False)

    def _update_SalesOrderLines(self, div: Division, spec: EntitySpec, record: dict, changes: dict) -> None:
        order = self._ref(div, "salesorder/SalesOrders", record["OrderID"], "OrderID")
        if order.get("Status") in (21, 45):
            raise ApiError(
                400,
                f"Sales order {order['OrderNumber']} is {order['StatusDescription'].lower()} and cannot be changed",
            )
        if "OrderID" in changes and str(changes["OrderID"]).lower() != record["OrderID"]:
            raise ApiError(400, "OrderID: a line cannot move to another order")
        merged = self._order_line(div, order, {**record, **changes}, record["LineNumber"])
        merged["QuantityDelivered"] = record["QuantityDelivered"]
        self._reserve(div, record["Item"], -record["Quantity"])
        self._reserve(div, merged["Item"], merged["Quantity"])
        changes.update(merged)

    # ---- goods deliveries and stock ----------------------------------------------------------------

    def _create_GoodsDeliveries(self, div: Division, spec: EntitySpec, record: dict) -> None:
        lines = record.pop("GoodsDeliveryLines", None)
        if isinstance(lines, dict) and "results" in lines:
            lines = lines["results"]
        if not isinstance(lines, list) or not lines:
            raise ApiError(400, "GoodsDeliveryLines: a goods delivery needs at least one line")
        line_spec = ENTITIES["salesorder/goodsdeliverylines"]
        so_lines = div.table(ENTITIES["salesorder/salesorderlines"])
        plan = []
        account = None
        for index, line in enumerate(lines):
            try:
                body = self._check_body(line_spec, line, creating=True)
                so_line = self._ref(
                    div, "salesorder/SalesOrderLines", body["SalesOrderLineID"], "SalesOrderLineID"
                )
                quantity = float(body["QuantityDelivered"])
                open_quantity = so_line["Quantity"] - so_line["QuantityDelivered"]
                if quantity <= 0 or quantity > open_quantity:
                    raise ApiError(
                        400,
                        f"QuantityDelivered: {quantity:g} is not between 0 and the open quantity {open_quantity:g}",
                    )
                order = div.table(ENTITIES["salesorder/salesorders"])[so_line["OrderID"]]
                if account is not None and account != order["DeliverTo"]:
                    raise ApiError(
                        400, "SalesOrderLineID: all lines of one delivery must go to the same account"
                    )
                account = order["DeliverTo"]
                plan.append((body, so_line, order, quantity))
            except ApiError as exc:
                raise ApiError(exc.status, f"GoodsDeliveryLines[{index}]: {exc.message}") from None
        div.delivery_number += 1
        acc = div.table(ENTITIES["crm/accounts"]).get(account, {})
        record.update(
            EntryNumber=div.delivery_number,
            DeliveryNumber=div.delivery_number,
            DeliveryAccount=account,
            DeliveryAccountName=acc.get("Name"),
            DeliveryAccountCode=acc.get("Code"),
            Warehouse="00000000-0000-0000-0000-000000000001",
        )
        record.setdefault("DeliveryDate", ms_to_date(now_ms() // 86_400_000 * 86_400_000))
        for number, (body, so_line, order, quantity) in enumerate(plan, start=1):
            line = dict(body)
            line.update(
                ID=_new_guid(),
                EntryID=record["EntryID"],
                SalesOrderLineID=so_line["ID"],
                QuantityDelivered=quantity,
                QuantityOrdered=so_line["Quantity"],
                Item=so_line["Item"],
                ItemCode=so_line["ItemCode"],
                SalesOrderNumber=order["OrderNumber"],
                SalesOrderLineNumber=so_line["LineNumber"],
                DeliveryDate=record["DeliveryDate"],
                LineNumber=number,
            )
            self._stamp(div, line, created=True)
            div.table(line_spec)[line["ID"]] = line
            so_line["QuantityDelivered"] += quantity
            self._stamp(div, so_line, created=False)
            self._reserve(div, so_line["Item"], -quantity, delivered=quantity)
            self._order_totals(div, order)
            self._stamp(div, order, created=False)
        del so_lines  # lines were updated in place

    def _update_GoodsDeliveryLines(
        self, div: Division, spec: EntitySpec, record: dict, changes: dict
    ) -> None:
        if "QuantityDelivered" in changes or "SalesOrderLineID" in changes:
            raise ApiError(
                400, "Only TrackingNumber, Notes and Description of a delivered line can be changed"
            )

    def set_stock(self, div: Division, item: dict, *, current: float, reorder: float = 0.0) -> dict:
        """Create or overwrite the stock position of a stock item (seeding and stock counts)."""
        spec = ENTITIES["inventory/stockpositions"]
        position = div.table(spec).get(item["ID"]) or {
            "ItemId": item["ID"],
            "Warehouse": "00000000-0000-0000-0000-000000000001",
            "ReservedStock": 0.0,
            "PlanningIn": 0.0,
            "PlanningOut": 0.0,
        }
        position.update(
            ItemCode=item["Code"],
            UnitCode=item.get("Unit", "pc"),
            CurrentStock=float(current),
            ReorderPoint=reorder,
        )
        self._stock_derived(position)
        position["Timestamp"] = div.next_timestamp()
        div.table(spec)[item["ID"]] = position
        item["Stock"] = position["CurrentStock"]
        return position

    def _stock_derived(self, position: dict) -> None:
        position["FreeStock"] = round(position["CurrentStock"] - position["ReservedStock"], 4)
        position["PlanningOut"] = position["ReservedStock"]
        position["ProjectedStock"] = round(
            position["CurrentStock"] + position["PlanningIn"] - position["PlanningOut"], 4
        )

    def _reserve(self, div: Division, item_id: str, quantity: float, *, delivered: float = 0.0) -> None:
        position = div.table(ENTITIES["inventory/stockpositions"]).get(item_id)
        if position is None:
            return  # not a stock item: orders do not reserve it
        position["ReservedStock"] = round(position["ReservedStock"] + quantity, 4)
        position["CurrentStock"] = round(position["CurrentStock"] - delivered, 4)
        self._stock_derived(position)
        position["Timestamp"] = div.next_timestamp()
        item = div.table(ENTITIES["logistics/items"]).get(item_id)
        if item is not None and delivered:
            item["Stock"] = position["CurrentStock"]
            self._stamp(div, item, created=False)
