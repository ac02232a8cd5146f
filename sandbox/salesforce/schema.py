"""The simulated org's metadata: objects, fields and the flags `describe` reports and writes enforce.

One table drives describe, SOQL field checks and DML validation, so the three never disagree.
Custom fields the sync flows rely on (see DESIGN.md):

- ``Account.External_Id__c`` (unique external id, generic upsert key; the benchmark uses it),
  ``Account.QB_ListID__c`` (unique external id: the QuickBooks ListID written back by
  ``sf_accounts_to_qb_customers``), ``Account.Legacy_Id__c`` (external id, *not* unique, so upserts on it
  can match several rows and answer 300 Multiple Choices as the real API does).
- ``Contact.External_Id__c`` (unique external id).
- ``Product2.SKU__c`` (unique external id: the Exact item code, the upsert key of
  ``exact_items_to_sf_products``), ``Product2.Exact_Item_Id__c`` (unique external id: Exact's item GUID),
  ``Product2.Exact_Stock__c`` (number: the item's stock in Exact, written by ``exact_stock_to_sf_products``).
- ``Order.Exact_Order_Id__c`` (unique external id, written back by ``sf_orders_to_exact``) and
  ``OrderItem.Exact_Line_Id__c`` (unique external id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["OBJECTS", "FieldDef", "ObjectDef", "get_object"]


@dataclass(frozen=True)
class FieldDef:
    """One field as describe shows it; `required` means "not nillable and no default on create"."""

    name: str
    type: str = "string"
    length: int = 0
    label: str = ""
    required: bool = False
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    external_id: bool = False
    unique: bool = False
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    reference_to: tuple[str, ...] = ()
    default: Any = None
    calculated: bool = False
    auto_number: bool = False
    precision: int = 0
    scale: int = 0

    @property
    def relationship_name(self) -> str | None:
        if self.type != "reference":
            return None
        if self.name.endswith("__c"):
            return self.name[:-3] + "__r"
        return self.name[:-2] if self.name.endswith("Id") else None

    def describe(self) -> dict[str, Any]:
        soap = {
            "string": "xsd:string",
            "textarea": "xsd:string",
            "email": "xsd:string",
            "phone": "xsd:string",
            "url": "xsd:string",
            "picklist": "xsd:string",
            "id": "tns:ID",
            "reference": "tns:ID",
            "boolean": "xsd:boolean",
            "datetime": "xsd:dateTime",
            "date": "xsd:date",
            "double": "xsd:double",
            "currency": "xsd:double",
            "int": "xsd:int",
        }[self.type]
        return {
            "name": self.name,
            "label": self.label or self.name.replace("__c", "").replace("_", " "),
            "type": self.type,
            "soapType": soap,
            "length": self.length,
            "byteLength": self.length * 3,
            "precision": self.precision,
            "scale": self.scale,
            "digits": 9 if self.type == "int" else 0,
            "nillable": self.nillable and not self.required,
            "createable": self.createable,
            "updateable": self.updateable,
            "defaultedOnCreate": self.default is not None or self.name in _SYSTEM_DEFAULTED,
            "defaultValue": self.default if not isinstance(self.default, bool) else None,
            "externalId": self.external_id,
            "unique": self.unique,
            "caseSensitive": False,
            "idLookup": self.external_id or self.name == "Id",
            "calculated": self.calculated,
            "autoNumber": self.auto_number,
            "custom": self.name.endswith("__c"),
            "filterable": True,
            "sortable": self.type != "textarea",
            "groupable": self.type not in {"textarea", "double", "currency"},
            "picklistValues": [
                {"active": True, "defaultValue": v == self.default, "label": v, "validFor": None, "value": v}
                for v in self.picklist
            ],
            "restrictedPicklist": self.restricted,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
        }


_SYSTEM_DEFAULTED = {
    "Id",
    "OwnerId",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
    "IsDeleted",
}


@dataclass(frozen=True)
class ObjectDef:
    """One sObject type: key prefix, fields, and the object-level permissions."""

    name: str
    key_prefix: str
    fields: tuple[FieldDef, ...]
    label: str = ""
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    by_name: dict[str, FieldDef] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name.update({f.name.lower(): f for f in self.fields})

    def field(self, name: str) -> FieldDef | None:
        return self.by_name.get(name.lower())

    def relationship(self, name: str) -> FieldDef | None:
        """Return the reference field whose relationship name is `name` (Owner -> OwnerId)."""
        for f in self.fields:
            rel = f.relationship_name
            if rel and rel.lower() == name.lower():
                return f
        return None

    def describe(self, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label or self.name,
            "labelPlural": (self.label or self.name) + "s",
            "keyPrefix": self.key_prefix,
            "custom": False,
            "createable": self.createable,
            "updateable": self.updateable,
            "deletable": self.deletable,
            "queryable": True,
            "retrieveable": True,
            "searchable": True,
            "undeletable": self.deletable,
            "fields": [f.describe() for f in self.fields],
            "childRelationships": [
                {
                    "childSObject": child,
                    "field": fk,
                    "relationshipName": rel,
                    "cascadeDelete": rel == "OrderItems",
                }
                for (parent, _), (rel, child, fk) in CHILD_RELATIONSHIPS.items()
                if parent == self.name.lower()
            ],
            "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"},
        }


def _system(owner: bool = True) -> tuple[FieldDef, ...]:
    ro = {"createable": False, "updateable": False}
    out = [
        FieldDef("Id", "id", 18, "Record ID", nillable=False, **ro),
        FieldDef("IsDeleted", "boolean", label="Deleted", nillable=False, **ro),
        FieldDef("CreatedDate", "datetime", label="Created Date", nillable=False, **ro),
        FieldDef(
            "CreatedById", "reference", 18, "Created By ID", nillable=False, reference_to=("User",), **ro
        ),
        FieldDef("LastModifiedDate", "datetime", label="Last Modified Date", nillable=False, **ro),
        FieldDef(
            "LastModifiedById",
            "reference",
            18,
            "Last Modified By ID",
            nillable=False,
            reference_to=("User",),
            **ro,
        ),
        FieldDef("SystemModstamp", "datetime", label="System Modstamp", nillable=False, **ro),
    ]
    if owner:
        out.append(FieldDef("OwnerId", "reference", 18, "Owner ID", nillable=False, reference_to=("User",)))
    return tuple(out)


def _address(prefix: str) -> tuple[FieldDef, ...]:
    return (
        FieldDef(f"{prefix}Street", "textarea", 255),
        FieldDef(f"{prefix}City", "string", 40),
        FieldDef(f"{prefix}State", "string", 80),
        FieldDef(f"{prefix}PostalCode", "string", 20),
        FieldDef(f"{prefix}Country", "string", 80),
    )


_RO = {"createable": False, "updateable": False}
_CREATE_ONLY = {"updateable": False}

ACCOUNT_TYPES = (
    "Prospect",
    "Customer - Direct",
    "Customer - Channel",
    "Channel Partner / Reseller",
    "Installation Partner",
    "Technology Partner",
    "Other",
)
INDUSTRIES = (
    "Agriculture",
    "Apparel",
    "Banking",
    "Construction",
    "Consulting",
    "Education",
    "Electronics",
    "Energy",
    "Engineering",
    "Food & Beverage",
    "Healthcare",
    "Hospitality",
    "Manufacturing",
    "Media",
    "Retail",
    "Technology",
    "Transportation",
    "Other",
)
PRODUCT_FAMILIES = ("Hardware", "Software", "Services", "Licenses", "Consumables", "Other")
#: Order Status values and the category (StatusCode) each belongs to; orgs add their own values to the two
#: categories, and the rules (create in Draft, activate only with products) follow the category.
ORDER_STATUS_CATEGORY = {
    "Draft": "Draft",
    "Awaiting Payment": "Draft",
    "Activated": "Activated",
    "Paid": "Activated",
}

OBJECTS: dict[str, ObjectDef] = {
    o.name.lower(): o
    for o in (
        ObjectDef(
            "User",
            "005",
            (
                *_system(owner=False),
                FieldDef("Username", "string", 80, nillable=False, required=True, unique=True),
                FieldDef("FirstName", "string", 40),
                FieldDef("LastName", "string", 80, required=True),
                FieldDef("Name", "string", 121, calculated=True, **_RO),
                FieldDef("Email", "email", 128, required=True),
                FieldDef("IsActive", "boolean", default=True, nillable=False),
            ),
            createable=False,
            updateable=False,
            deletable=False,
        ),
        ObjectDef(
            "Account",
            "001",
            (
                *_system(),
                FieldDef("Name", "string", 255, "Account Name", required=True),
                FieldDef("AccountNumber", "string", 40),
                FieldDef("Type", "picklist", 255, picklist=ACCOUNT_TYPES),
                FieldDef("Industry", "picklist", 255, picklist=INDUSTRIES),
                *_address("Billing"),
                *_address("Shipping"),
                FieldDef("Phone", "phone", 40),
                FieldDef("Fax", "phone", 40),
                FieldDef("Website", "url", 255),
                FieldDef("Description", "textarea", 32000),
                FieldDef("ParentId", "reference", 18, reference_to=("Account",)),
                FieldDef("NumberOfEmployees", "int"),
                FieldDef("AnnualRevenue", "currency", precision=18, scale=0),
                FieldDef("Sic", "string", 20, "SIC Code"),
                FieldDef("TickerSymbol", "string", 20),
                FieldDef("Rating", "picklist", 255, picklist=("Hot", "Warm", "Cold")),
                FieldDef("External_Id__c", "string", 255, external_id=True, unique=True),
                FieldDef("QB_ListID__c", "string", 40, "QuickBooks ListID", external_id=True, unique=True),
                FieldDef("Legacy_Id__c", "string", 40, "Legacy Id", external_id=True),
                # Accounting contact e-mail (Salesforce accounts have no e-mail field of their own).
                FieldDef("Email__c", "email", 80, "Invoice E-mail"),
            ),
        ),
        ObjectDef(
            "Contact",
            "003",
            (
                *_system(),
                FieldDef("FirstName", "string", 40),
                FieldDef("LastName", "string", 80, required=True),
                FieldDef("Name", "string", 121, calculated=True, **_RO),
                FieldDef("Salutation", "picklist", 40, picklist=("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.")),
                FieldDef("AccountId", "reference", 18, reference_to=("Account",)),
                FieldDef("Email", "email", 80),
                FieldDef("Phone", "phone", 40),
                FieldDef("MobilePhone", "phone", 40),
                FieldDef("OtherPhone", "phone", 40),
                FieldDef("Fax", "phone", 40),
                FieldDef("Title", "string", 128),
                *_address("Mailing"),
                FieldDef("External_Id__c", "string", 255, external_id=True, unique=True),
            ),
        ),
        ObjectDef(
            "Product2",
            "01t",
            (
                *_system(owner=False),
                FieldDef("Name", "string", 255, "Product Name", required=True),
                FieldDef("ProductCode", "string", 255),
                FieldDef("Description", "textarea", 4000),
                FieldDef("IsActive", "boolean", default=False, nillable=False),
                FieldDef("Family", "picklist", 255, picklist=PRODUCT_FAMILIES, restricted=True),
                FieldDef("StockKeepingUnit", "string", 180),
                FieldDef(
                    "QuantityUnitOfMeasure", "picklist", 255, picklist=("Each", "Box", "Kg", "Hour", "Meter")
                ),
                FieldDef("SKU__c", "string", 80, "SKU", external_id=True, unique=True),
                FieldDef("Exact_Item_Id__c", "string", 36, "Exact Item Id", external_id=True, unique=True),
                FieldDef("EAN__c", "string", 14, "EAN / GTIN"),
                FieldDef("Exact_Stock__c", "double", 0, "Exact Stock", precision=18, scale=4),
            ),
        ),
        ObjectDef(
            "Pricebook2",
            "01s",
            (
                *_system(owner=False),
                FieldDef("Name", "string", 255, "Price Book Name", required=True),
                FieldDef("IsActive", "boolean", default=False, nillable=False),
                FieldDef("IsStandard", "boolean", nillable=False, **_RO),
                FieldDef("Description", "string", 255),
            ),
        ),
        ObjectDef(
            "PricebookEntry",
            "01u",
            (
                *_system(owner=False),
                FieldDef("Name", "string", 255, calculated=True, **_RO),
                FieldDef(
                    "Pricebook2Id",
                    "reference",
                    18,
                    required=True,
                    reference_to=("Pricebook2",),
                    **_CREATE_ONLY,
                ),
                FieldDef(
                    "Product2Id", "reference", 18, required=True, reference_to=("Product2",), **_CREATE_ONLY
                ),
                FieldDef("ProductCode", "string", 255, calculated=True, **_RO),
                FieldDef("UnitPrice", "currency", required=True, precision=18, scale=2),
                FieldDef("IsActive", "boolean", default=False, nillable=False),
                FieldDef("UseStandardPrice", "boolean", default=False, nillable=False),
            ),
        ),
        ObjectDef(
            "Order",
            "801",
            (
                *_system(),
                FieldDef("AccountId", "reference", 18, required=True, reference_to=("Account",)),
                FieldDef("BillToContactId", "reference", 18, reference_to=("Contact",)),
                FieldDef("EffectiveDate", "date", required=True, label="Order Start Date"),
                FieldDef(
                    "Status",
                    "picklist",
                    40,
                    required=True,
                    picklist=tuple(ORDER_STATUS_CATEGORY),
                    restricted=True,
                    default="Draft",
                ),
                FieldDef("StatusCode", "picklist", 40, picklist=("Draft", "Activated"), **_RO),
                FieldDef("Pricebook2Id", "reference", 18, reference_to=("Pricebook2",)),
                FieldDef("OrderNumber", "string", 30, auto_number=True, nillable=False, **_RO),
                FieldDef("Type", "picklist", 255, picklist=("New", "Renewal", "Return")),
                FieldDef("Description", "textarea", 32000),
                FieldDef("PoNumber", "string", 80),
                FieldDef("OrderReferenceNumber", "string", 80),
                *_address("Billing"),
                *_address("Shipping"),
                FieldDef("TotalAmount", "currency", calculated=True, precision=18, scale=2, **_RO),
                FieldDef("ActivatedDate", "datetime", **_RO),
                FieldDef("Exact_Order_Id__c", "string", 36, "Exact Order Id", external_id=True, unique=True),
                FieldDef("CurrencyIsoCode", "picklist", 3, "Order Currency", picklist=("EUR", "USD", "GBP")),
                FieldDef(
                    "Payment_Terms__c",
                    "picklist",
                    40,
                    "Payment Terms",
                    picklist=("Due on receipt", "Net 14", "Net 30", "Net 60", "Prepaid"),
                ),
                # How the customer pays (a custom picklist, as the terms are; the orders flow maps the
                # pair to one Exact payment condition, which carries the payment method).
                FieldDef(
                    "Payment_Method__c",
                    "picklist",
                    40,
                    "Payment Method",
                    picklist=("Invoice", "Direct Debit", "Credit Card", "Cash"),
                ),
            ),
        ),
        ObjectDef(
            "OrderItem",
            "802",
            (
                *_system(owner=False),
                FieldDef("OrderId", "reference", 18, required=True, reference_to=("Order",), **_CREATE_ONLY),
                FieldDef(
                    "PricebookEntryId",
                    "reference",
                    18,
                    required=True,
                    reference_to=("PricebookEntry",),
                    **_CREATE_ONLY,
                ),
                FieldDef("Product2Id", "reference", 18, reference_to=("Product2",), **_RO),
                FieldDef("Quantity", "double", required=True, precision=18, scale=2),
                FieldDef("UnitPrice", "currency", required=True, precision=18, scale=2),
                FieldDef("ListPrice", "currency", precision=18, scale=2, **_RO),
                FieldDef("TotalPrice", "currency", calculated=True, precision=18, scale=2, **_RO),
                FieldDef("OrderItemNumber", "string", 10, auto_number=True, nillable=False, **_RO),
                FieldDef("Description", "string", 255),
                FieldDef("Exact_Line_Id__c", "string", 36, "Exact Line Id", external_id=True, unique=True),
                FieldDef("Tax_Rate__c", "double", precision=5, scale=2, label="VAT Rate (percent)"),
            ),
        ),
    )
}

BY_PREFIX: dict[str, ObjectDef] = {o.key_prefix: o for o in OBJECTS.values()}

#: Parent-to-child relationships a subquery may name: (parent, relationship) -> (child object, lookup field).
CHILD_RELATIONSHIPS: dict[tuple[str, str], tuple[str, str, str]] = {
    (parent.lower(), rel.lower()): (rel, child, fk)
    for parent, rel, child, fk in (
        ("Account", "Contacts", "Contact", "AccountId"),
        ("Account", "Orders", "Order", "AccountId"),
        ("Account", "ChildAccounts", "Account", "ParentId"),
        ("Order", "OrderItems", "OrderItem", "OrderId"),
        ("Product2", "PricebookEntries", "PricebookEntry", "Product2Id"),
        ("Product2", "OrderItems", "OrderItem", "Product2Id"),
        ("Pricebook2", "PricebookEntries", "PricebookEntry", "Pricebook2Id"),
        ("Contact", "Orders", "Order", "BillToContactId"),
        ("User", "Accounts", "Account", "OwnerId"),
    )
}


def get_object(name: str) -> ObjectDef | None:
    """Return the object definition for `name` (case-insensitive), or None if the org has no such type."""
    return OBJECTS.get(name.lower())
