"""Deterministic demo data for the simulated org (seeded random: the same org on every machine).

What is in it, and which rows are dirty on purpose (the sync must quarantine them, not choke):

- 9 Users (the integration user plus 8 account owners with first and last names).
- 300 Accounts with billing addresses, owners, types and industries. Dirty: 8 names longer than
  QuickBooks' 41 characters, 6 without BillingCity, 3 pairs of duplicate names.
- About 450 Contacts with emails. Dirty: 5 with an invalid email (loaded before validation existed,
  as legacy rows are), 4 without email.
- 50 Product2 rows: 28 carry the codes and descriptions of the Exact sandbox's first clean items in
  ``ProductCode``/``SKU__c`` (``BOLT-00001``...) and are what the orders use; 20 are an older catalogue
  (``ITEM-0001``..``ITEM-0020``) no order uses; ``SF-ONLY-001``/``SF-ONLY-002`` exist only in Salesforce, with active standard PricebookEntries, plus
  a custom "Partner Price Book" with entries for the first 10 products.
- 200 Orders (Status Draft, Awaiting Payment, Activated, Paid; StatusCode Draft or Activated) on the standard price book with 1-4 OrderItems each. Dirty:
  4 orders containing an ``SF-ONLY-*`` product, 3 orders whose bill-to contact has no email.

SystemModstamps are spread over the last 30 days so incremental windows find work.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from .org import Org, format_datetime
from .schema import get_object

__all__ = ["INTEGRATION_USERNAME", "seed_org"]

INTEGRATION_USERNAME = "integration@erpsync.sandbox"

_FIRST = [
    "Anna",
    "Bram",
    "Carla",
    "Daan",
    "Eva",
    "Finn",
    "Greta",
    "Hugo",
    "Iris",
    "Jonas",
    "Karin",
    "Lars",
    "Maud",
    "Niels",
    "Olga",
    "Pieter",
    "Quinten",
    "Rosa",
    "Sven",
    "Tess",
    "Ulla",
    "Victor",
    "Wouter",
    "Xenia",
    "Yara",
    "Zoë",
    "Émile",
    "Søren",
    "Björn",
    "Łukasz",
]
_LAST = [
    "de Vries",
    "Jansen",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "Mulder",
    "de Boer",
    "Peeters",
    "Claes",
    "Andersson",
    "Johansson",
    "Müller",
    "Schmidt",
    "O'Brien",
    "van den Berg",
    "Dekker",
    "Brouwer",
    "Lindqvist",
    "Nowak",
]
_WORDS = [
    "Noord",
    "Polder",
    "Delta",
    "Kanaal",
    "Zeeland",
    "Brabant",
    "Fjord",
    "Alpen",
    "Rijn",
    "Maas",
    "Ems",
    "Elbe",
    "Schelde",
    "Vecht",
    "Amstel",
    "Lek",
    "IJssel",
    "Waal",
    "Linge",
    "Dommel",
]
_KINDS = [
    "Techniek",
    "Logistics",
    "Bouw",
    "Foods",
    "Systems",
    "Trading",
    "Installaties",
    "Retail",
    "Consult",
    "Metaal",
    "Print",
    "Energy",
]
_LEGAL = ["B.V.", "BV", "N.V.", "GmbH", "AB", "NV", "Ltd"]
_CITIES = [
    ("Amsterdam", "Noord-Holland", "1012", "Netherlands"),
    ("Rotterdam", "Zuid-Holland", "3011", "Netherlands"),
    ("Utrecht", "Utrecht", "3511", "Netherlands"),
    ("Eindhoven", "Noord-Brabant", "5611", "Netherlands"),
    ("Antwerpen", "Antwerpen", "2000", "Belgium"),
    ("Gent", "Oost-Vlaanderen", "9000", "Belgium"),
    ("Düsseldorf", "Nordrhein-Westfalen", "40213", "Germany"),
    ("Göteborg", "Västra Götaland", "411 03", "Sweden"),
    ("Groningen", "Groningen", "9711", "Netherlands"),
    ("Zwolle", "Overijssel", "8011", "Netherlands"),
]
_STREETS = [
    "Hoofdstraat",
    "Kerkstraat",
    "Stationsweg",
    "Industrieweg",
    "Havenkade",
    "Marktplein",
    "Dorpsstraat",
    "Kanaalweg",
    "Molenweg",
    "Parklaan",
]
_PRODUCTS = [
    ("Pallet Racking Beam", "Hardware"),
    ("Warehouse Scanner", "Hardware"),
    ("Label Printer", "Hardware"),
    ("Forklift Battery", "Hardware"),
    ("Safety Gloves (box)", "Consumables"),
    ("Stretch Film Roll", "Consumables"),
    ("Shipping Carton L", "Consumables"),
    ("WMS Licence", "Software"),
    ("Route Planner Licence", "Software"),
    ("Installation Service", "Services"),
    ("Maintenance Contract", "Services"),
    ("Training Day", "Services"),
]


_PAYMENT_TERMS = ("Net 30", "Net 14", "Due on receipt", "Net 30", "Prepaid", "Net 60", None)


def _account_email(i: int, name: str) -> str | None:
    """The account's invoice e-mail: mostly valid, a few malformed (quarantine) and a few missing."""
    if i in (13, 77, 151, 242):
        return ("invoices(at)example.nl", "finance@", "boekhouding@@example.nl", "n/a")[(i // 77) % 4]
    if i % 23 == 5:
        return None
    return f"invoices@{name.split()[0].lower()}-{i}.example"


def _stamp_days_ago(rng: random.Random, now: datetime, max_days: int = 30) -> str:
    return format_datetime(now - timedelta(seconds=rng.randint(3600, max_days * 86400)))


_LEGACY_PRODUCTS = 20
_EXACT_PRODUCTS = 48 - _LEGACY_PRODUCTS


def _exact_catalogue(count: int) -> list[tuple[str, str]]:
    """Return (item code, description) of the Exact sandbox's first clean items, in its seed order.

    The orders flow checks that every ordered product exists in Exact by its code, so the seeded
    Salesforce products must carry codes the Exact sandbox really has (its seed is deterministic too).
    Dirty Exact items (codes with spaces, empty or overlong descriptions) are skipped.
    """
    from erpsync.sandbox.exact._seed import _items

    out = []
    for item in _items(count * 2, random.Random(0)):
        code, description = item["Code"], item["Description"]
        if code == code.strip() and " " not in code and 0 < len(description) <= 80:
            out.append((code, description))
    return out[:count]


def seed_org(org: Org, seed: int = 20240501) -> dict:
    """Fill an empty org with the demo data; return facts worth putting in the state file."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    user = get_object("User")
    users = []
    for n, (first, last, uname) in enumerate(
        [("Integration", "User", INTEGRATION_USERNAME)]
        + [
            (f, la, f"{f.lower()}.{la.lower().replace(' ', '').replace(chr(39), '')}@erpsync.sandbox")
            for f, la in zip(_FIRST[:8], _LAST[:8], strict=True)
        ]
    ):
        rid, errs = org.create(
            user,
            {"Username": uname, "FirstName": first, "LastName": last, "Email": uname, "IsActive": True},
            bypass_rules=True,
        )
        assert not errs, errs
        users.append(rid)
        if n == 0:
            org.integration_user_id = rid
    owners = users[1:]

    account = get_object("Account")
    long_names = {rng.randrange(300) for _ in range(12)}
    no_city = {rng.randrange(300) for _ in range(8)} - long_names
    accounts, names = [], []
    for i in range(300):
        name = f"{rng.choice(_WORDS)} {rng.choice(_KINDS)} {rng.choice(_LEGAL)}"
        while name in names:
            name = (
                f"{rng.choice(_WORDS)}{rng.choice(_WORDS).lower()} {rng.choice(_KINDS)} {rng.choice(_LEGAL)}"
            )
        if i in list(long_names)[:8]:
            name = f"{name.rsplit(' ', 1)[0]} Internationale Handelsonderneming en Distributie {rng.choice(_LEGAL)}"
        if i in (50, 120, 210):  # duplicate names: the same company entered twice
            name = names[i - 7]
        names.append(name)
        city, state, postal, country = rng.choice(_CITIES)
        values = {
            "Name": name,
            "AccountNumber": f"C{10000 + i}",
            "Type": rng.choice(
                ("Customer - Direct", "Customer - Channel", "Prospect", "Channel Partner / Reseller")
            ),
            "Industry": rng.choice(
                ("Construction", "Retail", "Manufacturing", "Transportation", "Food & Beverage", "Technology")
            ),
            "BillingStreet": f"{rng.choice(_STREETS)} {rng.randint(1, 250)}",
            "BillingCity": None if i in list(no_city)[:6] else city,
            "BillingState": state,
            "BillingPostalCode": f"{postal} {rng.choice('ABCDEFGHJKLMNPRSTVWXZ')}{rng.choice('ABCDEFGHJKLMNPRSTVWXZ')}"
            if country == "Netherlands"
            else postal,
            "BillingCountry": country,
            "Phone": f"+31 {rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
            # Derived, not drawn, so the random sequence (and every other seeded value) stays the same.
            "Email__c": _account_email(i, name),
            "Website": f"https://www.{name.split()[0].lower()}-{i}.example",
            "OwnerId": rng.choice(owners),
            "NumberOfEmployees": rng.randint(2, 900),
            "AnnualRevenue": float(rng.randint(50, 20000) * 1000),
        }
        rid, errs = org.create(account, values, bypass_rules=True)
        assert not errs, errs
        accounts.append(rid)

    contact = get_object("Contact")
    contacts: dict[str, list[str]] = {}
    n_contact = 0
    for i, acc in enumerate(accounts):
        for _ in range(rng.choice((1, 1, 2, 2, 2))):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            email = (
                f"{first.lower()}.{last.lower().replace(' ', '').replace(chr(39), '')}{n_contact}@"
                f"{names[i].split()[0].lower()}.example"
            )
            if n_contact in (7, 61, 133, 250, 377):
                email = rng.choice(
                    ("jan.devries@@example.nl", "info(at)bouw.example", "sales@", "no email", "piet@example")
                )
            elif n_contact in (19, 88, 201, 333):
                email = None
            rid, errs = org.create(
                contact,
                {
                    "FirstName": first,
                    "LastName": last,
                    "AccountId": acc,
                    "Email": email,
                    "Title": rng.choice(("Inkoper", "Directeur", "Office Manager", "CFO", "Buyer")),
                    "Phone": f"+31 6 {rng.randint(10000000, 99999999)}",
                    "OwnerId": rng.choice(owners),
                },
                bypass_rules=True,
            )
            assert not errs, errs
            contacts.setdefault(acc, []).append(rid)
            n_contact += 1

    product, entry, book = get_object("Product2"), get_object("PricebookEntry"), get_object("Pricebook2")
    std, errs = org.create(
        book, {"Name": "Standard Price Book", "IsActive": True, "IsStandard": True}, bypass_rules=True
    )
    assert not errs, errs
    partner, errs = org.create(book, {"Name": "Partner Price Book", "IsActive": True})
    assert not errs, errs
    products, std_entries = [], {}
    catalogue = _exact_catalogue(_EXACT_PRODUCTS)
    for i in range(50):
        base, family = _PRODUCTS[i % len(_PRODUCTS)]
        if i < _LEGACY_PRODUCTS:  # an older catalogue, kept in Salesforce; no order uses it
            sku, name = f"ITEM-{i + 1:04d}", f"{base} {chr(65 + i // len(_PRODUCTS))}{i % len(_PRODUCTS) + 1}"
        elif i < 48:
            sku, name = catalogue[i - _LEGACY_PRODUCTS]
        else:
            sku, name = f"SF-ONLY-{i - 47:03d}", f"{base} (Salesforce only)"
        rid, errs = org.create(
            product,
            {
                "Name": name,
                "ProductCode": sku,
                "SKU__c": sku,
                "Family": family,
                "IsActive": True,
                "QuantityUnitOfMeasure": "Each",
                "Description": f"{name}, sandbox product {i + 1}",
                "EAN__c": f"{8712345000000 + i * 7:013d}" if i % 9 else None,
            },
        )
        assert not errs, errs
        products.append(rid)
        price = float(rng.randint(5, 2500))
        eid, errs = org.create(
            entry, {"Pricebook2Id": std, "Product2Id": rid, "UnitPrice": price, "IsActive": True}
        )
        assert not errs, errs
        std_entries[rid] = (eid, price)
        if i < 10:
            _, errs = org.create(
                entry,
                {
                    "Pricebook2Id": partner,
                    "Product2Id": rid,
                    "UnitPrice": round(price * 0.9, 2),
                    "IsActive": True,
                },
            )
            assert not errs, errs

    order, item = get_object("Order"), get_object("OrderItem")
    sf_only_orders = {17, 64, 111, 188}
    no_email_orders = {23, 99, 150}
    start = date.today() - timedelta(days=60)
    for i in range(200):
        acc = rng.choice(accounts)
        bill_to = rng.choice(contacts[acc])
        if i in no_email_orders:
            bill_to = next((c for cs in contacts.values() for c in cs if not org.get(c)["Email"]), bill_to)
        oid, errs = org.create(
            order,
            {
                "AccountId": acc,
                "BillToContactId": bill_to,
                "EffectiveDate": (start + timedelta(days=i % 60)).isoformat(),
                "Status": "Draft",
                "Pricebook2Id": std,
                "PoNumber": f"PO-{2024000 + i}",
                "Description": f"Sandbox order {i + 1}",
                "OwnerId": rng.choice(owners),
                "BillingStreet": org.get(acc)["BillingStreet"],
                "BillingCity": org.get(acc)["BillingCity"],
                "BillingPostalCode": org.get(acc)["BillingPostalCode"],
                "BillingCountry": org.get(acc)["BillingCountry"],
                "CurrencyIsoCode": "EUR",
                "Payment_Terms__c": _PAYMENT_TERMS[i % len(_PAYMENT_TERMS)],
            },
        )
        assert not errs, errs
        chosen = rng.sample(products[_LEGACY_PRODUCTS:48], rng.randint(1, 4))
        if i in sf_only_orders:
            chosen[0] = products[48 + i % 2]
        for pid in chosen:
            eid, price = std_entries[pid]
            _, errs = org.create(
                item,
                {
                    "OrderId": oid,
                    "PricebookEntryId": eid,
                    "Quantity": float(rng.randint(1, 20)),
                    "UnitPrice": price,
                    # Dutch VAT: services and licences at 21 %, consumables at the reduced 9 %.
                    "Tax_Rate__c": 9.0 if org.get(pid).get("Family") == "Consumables" else 21.0,
                },
            )
            assert not errs, errs
        status = ("Draft", "Awaiting Payment", "Activated", "Activated", "Paid", "Paid")[i % 6]
        if status != "Draft":
            errs = org.update(order, oid, {"Status": status})
            assert not errs, errs

    # Spread the modification stamps over the last 30 days (creation a little earlier).
    for table in org.tables.values():
        for rec in table.values():
            stamp = _stamp_days_ago(rng, now)
            rec["SystemModstamp"] = rec["LastModifiedDate"] = stamp
            rec["CreatedDate"] = format_datetime(now - timedelta(days=45 + rng.randint(0, 300)))
    org.dirty = True
    return {"standard_pricebook_id": std, "partner_pricebook_id": partner}
