"""Deterministic demo data: divisions, VAT codes, payment conditions, accounts, ~250 items, prices, stock.

The same seed always yields the same GUIDs, codes and prices, so the demo and tests can name records.
Some items are dirty on purpose, the way real administrations are: a missing description, a code
with spaces, a description longer than Salesforce or Exact's own form would take, a price of 0, and
non-ASCII text. They were imported long ago (Exact accepts more through imports than through the
API), which is why they bypass the POST validation here.
"""

from __future__ import annotations

import random
import uuid

from erpsync.sandbox.exact._entities import ENTITIES
from erpsync.sandbox.exact._odata import ms_to_date
from erpsync.sandbox.exact._store import Division, ExactStore, pad_account_code

__all__ = ["DIVISIONS", "seed_store"]

_NS = uuid.UUID("0b6f3c1e-8a34-4d59-9c0e-5e1d2f3a4b5c")

#: (code, name) of the seeded divisions; names differ only in punctuation on purpose (App4Sales asks
#: for the exact name, capitals, spaces and punctuation included).
DIVISIONS = [
    (1001234, "ERPSync Demo B.V.", "NL"),
    (1001235, "ERPSync Demo B.V. (test)", "NL"),
    (2002001, "Voorbeeld Groothandel BV", "BE"),
]

VAT_CODES = [
    # code, description, percentage, type, transaction type, blocked
    ("0", "Geen BTW", 0.0, "N", "S", False),
    ("1", "BTW laag 9%", 9.0, "E", "S", False),
    ("2", "BTW hoog 21%", 21.0, "E", "S", False),
    ("3", "BTW 0% (export buiten EU)", 0.0, "B", "S", False),
    ("4", "BTW verlegd", 0.0, "E", "B", False),
    ("5", "BTW hoog 19% (oud)", 19.0, "E", "S", True),
    ("6", "BTW inkopen hoog 21%", 21.0, "I", "P", False),
]

#: financial/Journals: code, description, type (20 sales, 12 bank, 22 purchase, 90 general).
JOURNALS = [
    ("70", "Verkoopboek", 20),
    ("71", "Verkoopboek webshop", 20),
    ("60", "Inkoopboek", 22),
    ("20", "Bank", 12),
    ("90", "Memoriaal", 90),
]

PAYMENT_CONDITIONS = [
    ("00", "Contant", 0, "K"),
    ("14", "14 dagen netto", 14, "B"),
    ("30", "30 dagen netto", 30, "B"),
    ("60", "60 dagen netto", 60, "B"),
    ("IN", "Automatische incasso 8 dagen", 8, "I"),
    ("VB", "Vooruitbetaling", 0, "B"),
    # PaymentMethod: B on credit, I collection (incasso), K cash, V credit card
    ("14I", "14 dagen automatische incasso", 14, "I"),
    ("30I", "30 dagen automatische incasso", 30, "I"),
    ("CC", "Creditcard", 0, "V"),
]

ACCOUNTS = [
    # code, name, email, city, country, payment condition, vat, status
    ("1", "Diverse debiteuren", None, "Amsterdam", "NL", "00", "2", "C"),
    (
        "1001",
        "Bakkerij De Gouden Korrel B.V.",
        "inkoop@goudenkorrel.example",
        "Utrecht",
        "NL",
        "30",
        "2",
        "C",
    ),
    ("1002", "Fietsenwinkel Spaak", "info@spaak.example", "Groningen", "NL", "14", "2", "C"),
    ("1003", "Müller & Söhne GmbH", "einkauf@mueller-soehne.example", "Düsseldorf", "DE", "30", "4", "C"),
    ("1004", "Jan de Vries", "jan.devries@mail.example", "Haarlem", "NL", "IN", "2", "C"),
    ("1005", "Café 't Hoekje", "hoekje@horeca.example", "Leiden", "NL", "14", "1", "C"),
    ("1006", "Northwind Traders Ltd", "orders@northwind.example", "London", "GB", "60", "3", "C"),
    ("2001", "Staalhandel Oost (leverancier)", "verkoop@staaloost.example", "Enschede", "NL", "30", "2", ""),
]

CONTACTS = [
    ("1001", "Anouk", "Jansen", "anouk.jansen@goudenkorrel.example", True),
    ("1001", "Pieter", "Bakker", "pieter@goudenkorrel.example", False),
    ("1002", "Sanne", "Spaak", "sanne@spaak.example", True),
    ("1003", "Jürgen", "Müller", "j.mueller@mueller-soehne.example", True),
    ("1004", "Jan", "de Vries", "jan.devries@mail.example", True),
    ("1006", "Margaret", "Peacock", "m.peacock@northwind.example", True),
]

_FAMILIES = [
    (
        "BOLT",
        "Bout",
        ["M4x10", "M5x16", "M6x20", "M8x25", "M10x40"],
        ["verzinkt", "RVS A2", "RVS A4"],
        0.12,
        "box",
    ),
    (
        "CHAIR",
        "Bureaustoel",
        ["Basic", "Ergo 200", "Ergo 300", "Executive"],
        ["zwart", "grijs", "blauw"],
        149.0,
        "pc",
    ),
    ("CABLE", "Kabel", ["1.5mm2", "2.5mm2", "4mm2", "6mm2"], ["blauw", "bruin", "geel/groen"], 0.85, "m"),
    (
        "COFFEE",
        "Koffiebonen",
        ["250 g", "500 g", "1 kg"],
        ["Arabica", "Robusta", "Espresso blend"],
        6.5,
        "pc",
    ),
    ("LAMP", "LED lamp", ["E27 6W", "E27 9W", "E14 4W", "GU10 5W"], ["warm wit", "koel wit"], 3.95, "pc"),
    ("DESK", "Bureau", ["120x80", "140x80", "160x80", "180x90"], ["eiken", "wit", "zwart"], 289.0, "pc"),
    ("PAPER", "Printpapier A4", ["80 g", "100 g", "120 g"], ["wit", "gerecycled"], 4.25, "box"),
    ("SERV", "Installatie", ["per uur", "dagdeel", "spoed per uur"], ["monteur", "specialist"], 65.0, "hr"),
    ("GLOVE", "Werkhandschoen", ["S", "M", "L", "XL"], ["nitril", "leer", "katoen"], 2.1, "pc"),
    ("TAPE", "Tape", ["19mm", "25mm", "50mm"], ["transparant", "bruin", "isolatie"], 1.35, "pc"),
]


def _guid(*parts: object) -> str:
    return str(uuid.uuid5(_NS, "/".join(str(p) for p in parts)))


def _items(count: int, rng: random.Random) -> list[dict]:
    """Build `count` items across the families, with the dirty ones at fixed positions."""
    catalogue = []
    for prefix, noun, sizes, variants, base, unit in _FAMILIES:
        for size in sizes:
            for variant in variants:
                catalogue.append((prefix, f"{noun} {size} {variant}", base, unit))
    items = []
    for n in range(count):
        prefix, description, base, unit = catalogue[n % len(catalogue)]
        round_no = n // len(catalogue)
        if round_no:
            description = f"{description} v{round_no + 1}"
        price = round(base * rng.uniform(0.8, 1.6), 2)
        item = {
            "Code": f"{prefix}-{n + 1:05d}",
            "Description": description,
            "ExtraDescription": f"{description}. Leverbaar uit voorraad, levertijd 1-2 werkdagen.",
            "Unit": unit,
            "SalesVatCode": "1" if prefix == "COFFEE" else "2",
            "StandardSalesPrice": price,
            "CostPriceStandard": round(price * 0.6, 2),
            "IsStockItem": prefix != "SERV",
            "IsSalesItem": True,
            "IsPurchaseItem": prefix != "SERV",
            "Barcode": f"87{rng.randrange(10**10, 10**11)}",
        }
        items.append(item)
    dirty = {
        3: {"Description": ""},  # missing description
        11: {"Code": "WID 0042 "},  # code with spaces (and a trailing one)
        17: {
            "Description": "Bureaustoel Ergo 300 " + "met verstelbare armleuningen, lendensteun, " * 7
        },  # too long
        23: {"StandardSalesPrice": 0.0},  # price 0
        29: {"Description": "Café crème — Ø 30 cm, ½ kg «speciaal» 日本"},  # non-ASCII
        31: {"SalesVatCode": "0"},  # no VAT
        37: {"SalesVatCode": "3"},  # export 0%
    }
    for index, patch in dirty.items():
        if index < len(items):
            items[index].update(patch)
    return items


def seed_store(store: ExactStore, *, item_count: int = 250) -> None:
    """Fill `store` with the demo divisions and their data (deterministic)."""
    rng = random.Random(20240501)
    base_ms = 1_704_067_200_000  # 2024-01-01T00:00:00Z: seeded records look imported long ago
    for code, name, country in DIVISIONS:
        div = store.divisions[code] = Division(code=code, name=name, country=country)
        stamp = ms_to_date(base_ms)

        def put(path: str, record: dict, *, div: Division = div, stamp: str = stamp) -> dict:
            spec = ENTITIES[path.lower()]
            record.setdefault("Created", stamp)
            record.setdefault("Modified", stamp)
            record.update(
                Division=div.code,
                Creator=store.USER["UserID"],
                CreatorFullName=store.USER["FullName"],
                Modifier=store.USER["UserID"],
                ModifierFullName=store.USER["FullName"],
                Timestamp=div.next_timestamp(),
            )
            div.table(spec)[record[spec.key]] = record
            return record

        vats = {}
        for vcode, description, percentage, vtype, ttype, blocked in VAT_CODES:
            vats[vcode] = put(
                "vat/VATCodes",
                {
                    "ID": _guid(code, "vat", vcode),
                    "Code": vcode,
                    "Description": description,
                    "Percentage": percentage,
                    "Type": vtype,
                    "VATTransactionType": ttype,
                    "IsBlocked": blocked,
                    "Charged": False,
                },
            )
        for jcode, description, jtype in JOURNALS:
            put(
                "financial/Journals",
                {
                    "ID": _guid(code, "journal", jcode),
                    "Code": jcode,
                    "Description": description,
                    "Type": jtype,
                },
            )
        for pcode, description, days, method in PAYMENT_CONDITIONS:
            put(
                "cashflow/PaymentConditions",
                {
                    "ID": _guid(code, "pc", pcode),
                    "Code": pcode,
                    "Description": description,
                    "PaymentDays": days,
                    "PaymentEndOfMonths": 0,
                    "DiscountPaymentDays": 0,
                    "DiscountPercentage": 0.0,
                    "PaymentMethod": method,
                },
            )
        main = code == DIVISIONS[0][0]
        accounts = {}
        for acode, aname, email, city, acountry, pc, vat, status in ACCOUNTS if main else ACCOUNTS[:2]:
            accounts[acode] = put(
                "crm/Accounts",
                {
                    "ID": _guid(code, "account", acode),
                    "Code": pad_account_code(acode),
                    "Name": aname,
                    "Status": status,
                    "IsSales": status in ("C", "P", "S"),
                    "IsSupplier": status == "",
                    "Blocked": False,
                    "Email": email,
                    "City": city,
                    "Country": acountry,
                    "PaymentConditionSales": pc,
                    "SalesVATCode": vat,
                    "SalesCurrency": "EUR",
                    "Type": "A",
                },
            )
        for acode, first, last, email, is_main in CONTACTS if main else []:
            account = accounts[acode]
            contact = put(
                "crm/Contacts",
                {
                    "ID": _guid(code, "contact", acode, first),
                    "Account": account["ID"],
                    "AccountName": account["Name"],
                    "FirstName": first,
                    "LastName": last,
                    "FullName": f"{first} {last}",
                    "Email": email,
                    "Code": account["Code"],
                    "AccountIsCustomer": True,
                    "AccountIsSupplier": False,
                    "IsMainContact": is_main,
                    "City": account["City"],
                    "Country": account["Country"],
                },
            )
            if is_main:
                account["MainContact"] = contact["ID"]
        for n, item in enumerate(_items(item_count if main else 5, rng)):
            item.update(
                ID=_guid(code, "item", n),
                UnitDescription=item["Unit"],
                SalesVatCodeDescription=vats[item["SalesVatCode"]]["Description"],
                Stock=0.0,
            )
            put("logistics/Items", item)
            put(
                "logistics/SalesItemPrices",
                {
                    "ID": _guid(code, "price", n),
                    "Item": item["ID"],
                    "ItemCode": item["Code"],
                    "ItemDescription": item["Description"],
                    "Price": item["StandardSalesPrice"],
                    "Currency": "EUR",
                    "Unit": item["Unit"],
                    "Quantity": 0.0,
                    "DefaultItemUnit": item["Unit"],
                    "NumberOfItemsPerUnit": 1.0,
                },
            )
            if item["IsStockItem"]:
                store.set_stock(div, item, current=float(rng.randrange(0, 400)), reorder=20.0)
