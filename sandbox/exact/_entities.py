"""Entity definitions of the simulated Exact Online REST API: paths, keys, required and read-only fields.

Field lists and read-only flags follow the metadata Exact generates into its .NET client (see
reference/exact-online.md §9): a property that is read-only there is refused on POST/PUT here, with
the error body a client would have to handle, so a hook never depends on Exact silently dropping it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BULK", "ENTITIES", "SYNC", "EntitySpec", "resolve"]

#: Audit fields every entity carries and nobody may write.
COMMON_READ_ONLY = (
    "Division",
    "Created",
    "Creator",
    "CreatorFullName",
    "Modified",
    "Modifier",
    "ModifierFullName",
)


@dataclass(frozen=True)
class EntitySpec:
    """One entity set: where it lives, its key, and what a client may send."""

    path: str
    type_name: str
    fields: tuple[str, ...]
    key: str = "ID"
    required: tuple[str, ...] = ()
    read_only: frozenset[str] = frozenset()
    methods: frozenset[str] = frozenset({"GET", "POST", "PUT", "DELETE"})
    #: navigation property -> (child entity path, field on the child that points at the parent)
    children: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: EntityType code in sync/Deleted (leapforce's numbering)
    deleted_type: int | None = None
    #: only reachable through sync/read endpoints (stock positions)
    regular: bool = True

    @property
    def all_fields(self) -> tuple[str, ...]:
        return self.fields + COMMON_READ_ONLY + tuple(self.children)

    @property
    def entity_name(self) -> str:
        return self.path.split("/", 1)[1]


def _spec(path, type_name, fields, *, read_only=(), **kw) -> EntitySpec:
    return EntitySpec(
        path=path,
        type_name=f"Exact.Web.Api.Models.{type_name}",
        fields=tuple(fields.split()),
        read_only=frozenset(read_only.split() if isinstance(read_only, str) else read_only)
        | frozenset(COMMON_READ_ONLY),
        **kw,
    )


ENTITIES: dict[str, EntitySpec] = {
    s.path.lower(): s
    for s in (
        _spec(
            "crm/Accounts",
            "Account",
            "ID Code Name Status IsSales IsSupplier Blocked Email Phone Website AddressLine1 AddressLine2 "
            "Postcode City State Country CountryName VATNumber ChamberOfCommerce PaymentConditionSales "
            "PaymentConditionSalesDescription SalesVATCode SalesVATCodeDescription PriceList SalesCurrency "
            "Language SearchCode Remarks MainContact Type",
            read_only="IsSales CountryName PaymentConditionSalesDescription SalesVATCodeDescription Type",
            required=("Name",),
            deleted_type=2,
        ),
        _spec(
            "crm/Contacts",
            "Contact",
            "ID Account AccountName FirstName MiddleName LastName FullName Initials Title JobTitleDescription "
            "Email BusinessEmail Phone BusinessPhone Mobile Notes Gender Language AccountIsCustomer "
            "AccountIsSupplier IsMainContact City Country Postcode Code",
            read_only="FullName AccountIsCustomer AccountIsSupplier IsMainContact City Country Postcode Code",
            required=("Account",),
            deleted_type=5,
        ),
        _spec(
            "crm/Addresses",
            "CRM.Address",
            "ID Account AccountIsSupplier AccountName AddressLine1 AddressLine2 AddressLine3 City Contact "
            "ContactName Country CountryName Fax Mailbox Main Notes Phone PhoneExtension Postcode State "
            "StateDescription Type",
            read_only="AccountIsSupplier AccountName ContactName CountryName StateDescription",
            required=("Type",),
        ),
        _spec(
            "logistics/Items",
            "Logistics.Item",
            "ID Code Description ExtraDescription Unit UnitDescription IsSalesItem IsPurchaseItem IsStockItem "
            "IsWebshopItem Barcode Notes SearchCode SalesVatCode SalesVatCodeDescription StandardSalesPrice "
            "CostPriceStandard Stock AverageCost StartDate EndDate ItemGroupCode ItemGroupDescription "
            "FreeTextField_01 FreeTextField_02",
            read_only="Stock AverageCost UnitDescription ItemGroupCode ItemGroupDescription "
            "SalesVatCodeDescription StandardSalesPrice",
            required=("Code", "Description"),
            deleted_type=9,
        ),
        _spec(
            "logistics/SalesItemPrices",
            "Logistics.SalesItemPrice",
            "ID Item ItemCode ItemDescription Price Currency Unit Quantity Account AccountName StartDate EndDate "
            "DefaultItemUnit NumberOfItemsPerUnit",
            read_only="ItemCode ItemDescription AccountName DefaultItemUnit NumberOfItemsPerUnit",
            required=("Item", "Price"),
            deleted_type=8,
        ),
        _spec(
            "salesorder/SalesOrders",
            "SalesOrder.SalesOrder",
            "OrderID OrderNumber OrderedBy OrderedByName OrderedByContactPerson DeliverTo InvoiceTo OrderDate "
            "DeliveryDate YourRef Description Remarks Currency PaymentCondition PaymentConditionDescription "
            "PaymentReference ShippingMethod WarehouseID Salesperson DeliveryAddress Status StatusDescription "
            "DeliveryStatus DeliveryStatusDescription InvoiceStatus AmountDC AmountFC AmountFCExclVat",
            key="OrderID",
            read_only="OrderNumber OrderedByName PaymentConditionDescription Status StatusDescription "
            "DeliveryStatus DeliveryStatusDescription InvoiceStatus AmountDC AmountFC AmountFCExclVat",
            required=("OrderedBy",),
            children={"SalesOrderLines": ("salesorder/SalesOrderLines", "OrderID")},
            deleted_type=12,
        ),
        _spec(
            "salesorder/SalesOrderLines",
            "SalesOrder.SalesOrderLine",
            "ID OrderID OrderNumber LineNumber Item ItemCode ItemDescription Description Quantity "
            "QuantityDelivered QuantityInvoiced UnitPrice NetPrice Discount AmountDC AmountFC VATCode "
            "VATCodeDescription VATPercentage VATAmount UnitCode DeliveryDate Notes",
            read_only="OrderNumber LineNumber ItemCode ItemDescription QuantityDelivered QuantityInvoiced "
            "AmountDC AmountFC VATCodeDescription VATAmount",
            required=("OrderID", "Item"),
        ),
        _spec(
            "salesorder/GoodsDeliveries",
            "SalesOrder.GoodsDelivery",
            "EntryID EntryNumber DeliveryNumber DeliveryDate Description Remarks TrackingNumber ShippingMethod "
            "DeliveryAccount DeliveryAccountName DeliveryAccountCode Warehouse",
            key="EntryID",
            read_only="EntryNumber DeliveryNumber DeliveryAccount DeliveryAccountName DeliveryAccountCode Warehouse",
            methods=frozenset({"GET", "POST", "PUT"}),
            children={"GoodsDeliveryLines": ("salesorder/GoodsDeliveryLines", "EntryID")},
        ),
        _spec(
            "salesorder/GoodsDeliveryLines",
            "SalesOrder.GoodsDeliveryLine",
            "ID EntryID SalesOrderLineID QuantityDelivered QuantityOrdered TrackingNumber Notes Description Item "
            "ItemCode SalesOrderNumber SalesOrderLineNumber DeliveryDate LineNumber",
            read_only="EntryID Item ItemCode QuantityOrdered SalesOrderNumber SalesOrderLineNumber DeliveryDate "
            "LineNumber",
            methods=frozenset({"GET", "PUT"}),
            required=("SalesOrderLineID", "QuantityDelivered"),
        ),
        _spec(
            "salesinvoice/SalesInvoices",
            "SalesInvoice.SalesInvoice",
            "InvoiceID InvoiceNumber Journal JournalDescription Type TypeDescription Status StatusDescription "
            "OrderedBy OrderedByName OrderedByContactPerson InvoiceTo InvoiceToName DeliverTo DeliverToName "
            "DeliverToAddress InvoiceDate OrderDate DueDate YourRef Description Remarks Currency PaymentCondition "
            "PaymentConditionDescription PaymentReference Salesperson AmountDC AmountFC AmountFCExclVat "
            "VATAmountDC VATAmountFC",
            key="InvoiceID",
            read_only="InvoiceNumber JournalDescription TypeDescription Status StatusDescription OrderedByName "
            "InvoiceToName DeliverToName PaymentConditionDescription DueDate AmountDC AmountFC AmountFCExclVat "
            "VATAmountDC VATAmountFC",
            required=("OrderedBy", "Journal"),
            children={"SalesInvoiceLines": ("salesinvoice/SalesInvoiceLines", "InvoiceID")},
            deleted_type=13,
        ),
        _spec(
            "salesinvoice/SalesInvoiceLines",
            "SalesInvoice.SalesInvoiceLine",
            "ID InvoiceID LineNumber Item ItemCode ItemDescription Description Quantity UnitPrice NetPrice "
            "Discount AmountDC AmountFC VATCode VATCodeDescription VATPercentage VATAmountDC VATAmountFC UnitCode "
            "Notes",
            read_only="LineNumber ItemCode ItemDescription AmountDC AmountFC VATCodeDescription VATAmountDC "
            "VATAmountFC",
            required=("InvoiceID", "Item"),
        ),
        _spec(
            "financial/Journals",
            "Financial.Journal",
            "ID Code Description Type",
            methods=frozenset({"GET"}),
        ),
        _spec(
            "vat/VATCodes",
            "VAT.VATCode",
            "ID Code Description Percentage Type VATTransactionType IsBlocked Charged",
            read_only="Percentage",
            required=("Code", "Description"),
        ),
        _spec(
            "cashflow/PaymentConditions",
            "Cashflow.PaymentCondition",
            "ID Code Description PaymentDays PaymentEndOfMonths DiscountPaymentDays DiscountPercentage "
            "PaymentMethod",
            methods=frozenset({"GET", "POST"}),
            required=("Code", "Description"),
        ),
        _spec(
            "inventory/StockPositions",
            "Inventory.StockPosition",
            "ItemId ItemCode Warehouse CurrentStock FreeStock ReservedStock PlanningIn PlanningOut "
            "ProjectedStock ReorderPoint UnitCode",
            key="ItemId",
            methods=frozenset({"GET"}),
            regular=False,
            deleted_type=15,
        ),
    )
}

#: sync/<path> (case-insensitive, as Exact treats the service segment) -> entity path.
SYNC: dict[str, str] = {
    "crm/accounts": "crm/Accounts",
    "crm/contacts": "crm/Contacts",
    "logistics/items": "logistics/Items",
    "logistics/salesitemprices": "logistics/SalesItemPrices",
    "salesorder/salesorderheaders": "salesorder/SalesOrders",
    "salesorder/salesorderlines": "salesorder/SalesOrderLines",
    "salesorder/goodsdeliveries": "salesorder/GoodsDeliveries",
    "salesorder/goodsdeliverylines": "salesorder/GoodsDeliveryLines",
    "inventory/stockpositions": "inventory/StockPositions",
}

#: bulk/<path> -> entity path (no stock positions, no VAT codes: Exact has no bulk variant for them).
BULK: dict[str, str] = {
    "crm/accounts": "crm/Accounts",
    "crm/addresses": "crm/Addresses",
    "crm/contacts": "crm/Contacts",
    "logistics/items": "logistics/Items",
    "logistics/salesitemprices": "logistics/SalesItemPrices",
    "salesorder/salesorders": "salesorder/SalesOrders",
    "salesorder/salesorderlines": "salesorder/SalesOrderLines",
    "salesorder/goodsdeliveries": "salesorder/GoodsDeliveries",
    "salesorder/goodsdeliverylines": "salesorder/GoodsDeliveryLines",
}


def resolve(path: str) -> EntitySpec | None:
    """Return the regular entity for `service/Entity` (case-insensitive), or None."""
    spec = ENTITIES.get(path.lower())
    return spec if spec is not None and spec.regular else None
