"""Realistic demo data for the simulated company file, written through qbXML like any client would."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from erpsync.qbwc_bridge import qbxml as q

if TYPE_CHECKING:
    from erpsync.sandbox.quickbooks.company import CompanyFile

__all__ = ["seed_company"]

_COMPANIES = [
    "Abercrombie Plumbing", "Baker & Sons Bakery", "Cedar Ridge Dental", "Delta Freight Lines",
    "Evergreen Landscaping", "Fulton Hardware", "Granite Equipment Rental", "Harbor View Marina",
    "Iris Floral Design", "Juniper Coffee Roasters", "Keystone Builders", "Lakeside Veterinary",
    "Maple Street Books", "Northwind Traders", "Oakmont Auto Repair", "Pioneer Printing",
    "Quarry Stone Works", "Redwood Cabinetry", "Summit Physical Therapy", "Tidewater Seafood",
    "Union Square Tailors", "Valley Orchard Farms", "Westfield Electric", "Yellowstone Outfitters",
    "Zephyr Cycling", "Brightline Solar", "Copperleaf Catering", "Driftwood Surf Shop",
]  # fmt: skip
_CITIES = [("Mountain View", "CA", "94043"), ("Portland", "OR", "97201"), ("Austin", "TX", "78701"),
           ("Denver", "CO", "80202"), ("Madison", "WI", "53703"), ("Raleigh", "NC", "27601")]  # fmt: skip
_SERVICES = [("Consulting", 150), ("Installation", 95), ("Repair Labor", 85), ("Training", 120),
             ("Site Survey", 250), ("Design", 135), ("Project Management", 110), ("Support Hour", 75)]  # fmt: skip
_GOODS = [("Cable 10m", 12.5), ("Mounting Kit", 29.95), ("Filter Cartridge", 18.0), ("Gasket Set", 7.25),
          ("Valve 1in", 42.0), ("Sensor Module", 64.99), ("Bracket Steel", 5.4), ("Power Supply 24V", 39.0)]  # fmt: skip
_STOCK = [("WIDGET-01", 10.0, 120), ("WIDGET-02", 14.5, 80), ("GADGET-A", 99.0, 15), ("GADGET-B", 149.0, 8),
          ("PUMP-300", 420.0, 4)]  # fmt: skip


def seed_company(company: CompanyFile, *, seed: int = 7) -> dict[str, int]:
    """Add customers (some with jobs), service/non-inventory/inventory items and a few transactions.

    Idempotent: does nothing when the company already has customers. Returns counts added.
    """
    if company.count("Customer"):
        return {}
    rng = random.Random(seed)
    requests = []
    for index, name in enumerate(_COMPANIES):
        city, state, postal = rng.choice(_CITIES)
        first, last = (
            rng.choice(["Ana", "Ben", "Chloe", "Dev", "Emma", "Finn"]),
            rng.choice(["Ng", "Ortiz", "Park", "Quinn"]),
        )
        requests.append(
            q.customer_add(
                {
                    "Name": name,
                    "CompanyName": name,
                    "FirstName": first,
                    "LastName": last,
                    "BillAddress": {
                        "Addr1": name,
                        "Addr2": f"{100 + index} Main St",
                        "City": city,
                        "State": state,
                        "PostalCode": postal,
                        "Country": "US",
                    },
                    "Phone": f"555-01{index:02d}",
                    "Email": f"ap@{name.split()[0].lower()}.example",
                    "TermsRef": {"FullName": rng.choice(["Net 15", "Net 30"])},
                    "AccountNumber": f"C{1000 + index}",
                },
                request_id=f"seed-c{index}",
            )
        )
    for index, parent in enumerate(_COMPANIES[:4]):
        requests.append(
            q.customer_add(
                {"Name": f"Project {2024 + index}", "ParentRef": {"FullName": parent}},
                request_id=f"seed-j{index}",
            )
        )
    for index, (name, price) in enumerate(_SERVICES):
        requests.append(
            q.item_service_add(
                {
                    "Name": name,
                    "SalesOrPurchase": {"Desc": name, "Price": price, "AccountRef": {"FullName": "Services"}},
                },
                request_id=f"seed-s{index}",
            )
        )
    for index, (name, price) in enumerate(_GOODS):
        requests.append(
            q.item_non_inventory_add(
                {
                    "Name": name,
                    "SalesOrPurchase": {"Desc": name, "Price": price, "AccountRef": {"FullName": "Sales"}},
                },
                request_id=f"seed-n{index}",
            )
        )
    for index, (name, price, on_hand) in enumerate(_STOCK):
        requests.append(
            q.item_inventory_add(
                {
                    "Name": name,
                    "SalesDesc": name,
                    "SalesPrice": price,
                    "IncomeAccountRef": {"FullName": "Sales"},
                    "PurchaseCost": round(price * 0.55, 2),
                    "COGSAccountRef": {"FullName": "Cost of Goods Sold"},
                    "AssetAccountRef": {"FullName": "Inventory Asset"},
                    "QuantityOnHand": on_hand,
                },
                request_id=f"seed-i{index}",
            )
        )
    items = [s[0] for s in _SERVICES] + [g[0] for g in _GOODS] + [s[0] for s in _STOCK]
    builders = {"inv": q.invoice_add, "so": q.sales_order_add, "sr": q.sales_receipt_add}
    line_names = {"inv": "InvoiceLineAdd", "so": "SalesOrderLineAdd", "sr": "SalesReceiptLineAdd"}
    for index in range(12):
        kind = ["inv", "inv", "so", "sr"][index % 4]
        lines = [
            {"ItemRef": {"FullName": rng.choice(items)}, "Quantity": rng.randint(1, 5)}
            for _ in range(rng.randint(1, 3))
        ]
        fields = {
            "CustomerRef": {"FullName": rng.choice(_COMPANIES)},
            "TxnDate": f"2024-0{1 + index % 9}-1{index % 9}",
            line_names[kind]: lines,
        }
        if kind == "sr":
            fields["PaymentMethodRef"] = {"FullName": "Check"}
        requests.append(builders[kind](fields, request_id=f"seed-t{index}"))
    response = q.parse_response(company.process(q.envelope(requests, on_error="stopOnError")))
    failed = [r for r in response.responses if r.status_code != 0]
    if failed:
        raise RuntimeError(f"seeding failed at {failed[0].request_id}: {failed[0].message}")
    return {"customers": len(_COMPANIES) + 4, "items": len(items), "transactions": 12}
