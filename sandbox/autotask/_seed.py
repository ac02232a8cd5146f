"""Deterministic demo tenant, dirty on purpose the way a PSA that has run for years is.

What is in it (the sync must cope, not choke):

- 2 API-only users sharing the tenant's threshold: this package's (``USERNAME``) and another
  integration's (``OTHER_USERNAME``); both are Resources too (licence type "API User"), as real API
  users are (reference §5.3: exclude them when matching account managers).
- 14 Resources. Matching the Salesforce sandbox's 8 account owners by exact first and last name:
  Anna de Vries and Bram Jansen are active resources; Carla Bakker exists twice (not unique); Daan
  Visser is inactive; "eva smit" differs only in case; Finn Meijer, Greta Mulder and Hugo de Boer are
  not resources at all. Angela Richer is the default account manager of the seed's extension screen.
- Countries (a few, with Autotask's numeric ids; Salesforce sends names).
- Company 0, the tenant's own company, as every Autotask database has.
- 6 companies that are the same company as a Salesforce sandbox account (same name, address 1, city,
  state), one with two contacts of the same first and last name as that account's contacts; a company
  with the same name as a Salesforce account but another city (not the same company); duplicate
  company names inside Autotask; an inactive company; a company whose owner resource is now inactive.
- ~40 other companies with 1-3 contacts each, including duplicate contact names in one company.
- No UDFs: like the retired extension, the sync creates "Salesforce Company ID" and "Salesforce Contact
  ID" itself (``POST UserDefinedFieldDefinitions``). Two unrelated UDFs exist ("Lead Source", "N-central
  Customer ID") so UDF lists are never trivially empty.
"""

from __future__ import annotations

import random

from ._store import ApiUser, Tenant

__all__ = ["OTHER_USERNAME", "USERNAME", "seed_minimal", "seed_tenant"]

USERNAME = "erpsync.api@erpsync.sandbox"
SECRET = "Sbx-Autotask-S3cret!"
INTEGRATION_CODE = "ERPSYNCSANDBOXTRACKINGCODE0001"
OTHER_USERNAME = "other.integration@erpsync.sandbox"
OTHER_SECRET = "Sbx-Other-S3cret!"
OTHER_INTEGRATION_CODE = "OTHERVENDORTRACKINGCODE0000002"
#: The seed's "If Salesforce Account Manager does not exist in Autotask, assign company to: Richer, Angela".
DEFAULT_ACCOUNT_MANAGER = ("Angela", "Richer")

_RESOURCES = [
    # first, last, active, resource type, licence type, email
    ("Angela", "Richer", True, 1, 1),
    ("Anna", "de Vries", True, 1, 1),
    ("Bram", "Jansen", True, 1, 1),
    ("Carla", "Bakker", True, 1, 1),
    ("Carla", "Bakker", True, 2, 1),  # a contractor with the same name: names are not unique
    ("Daan", "Visser", False, 1, 1),  # left the company: an inactive resource
    ("eva", "smit", True, 1, 1),  # same person as Salesforce's Eva Smit, typed in lower case
    ("Joost", "Hendriks", True, 1, 1),
    ("Mila", "Kuipers", True, 1, 2),  # co-managed
    ("Ruben", "Vos", True, 2, 1),
    ("Sanne", "Willems", True, 1, 1),
    ("Tim", "Koster", False, 1, 1),
]
_COUNTRIES = [
    (150, "NL", "Netherlands"),
    (21, "BE", "Belgium"),
    (81, "DE", "Germany"),
    (225, "GB", "United Kingdom"),
    (237, "US", "United States"),
    (74, "FR", "France"),
]
_CITIES = [
    ("Amsterdam", "Noord-Holland", "1012 AB"),
    ("Rotterdam", "Zuid-Holland", "3011 AD"),
    ("Utrecht", "Utrecht", "3511 AA"),
    ("Eindhoven", "Noord-Brabant", "5611 AZ"),
    ("Groningen", "Groningen", "9711 AA"),
    ("Antwerpen", "Antwerpen", "2000"),
]
_NAMES = [
    "Noorderlicht ICT",
    "De Haven Logistiek",
    "Bakkerij Van Dijk",
    "Tandartspraktijk Zuid",
    "Advocatenkantoor Smits",
    "Gemeente Voorbeeld",
    "Huisartsen Centrum",
    "Brouwerij De Molen",
    "Fietsfabriek Holland",
    "Zorggroep Oost",
]
_FIRST = ["Lotte", "Sem", "Julia", "Noah", "Emma", "Lucas", "Sophie", "Milan", "Fenna", "Thijs"]
_LAST = ["de Jong", "van Dijk", "Bos", "Vermeulen", "Hoekstra", "Dijkstra", "Kok", "Prins", "Post"]


def _users(tenant: Tenant, resource_ids: dict[str, int]) -> None:
    tenant.add_user(ApiUser(USERNAME, SECRET, INTEGRATION_CODE, resource_ids["api"]))
    tenant.add_user(ApiUser(OTHER_USERNAME, OTHER_SECRET, OTHER_INTEGRATION_CODE, resource_ids["other"]))


def _insert(tenant: Tenant, entity: str, row: dict) -> int:
    """Write a seeded row as an import would: no API validation (old data never met today's rules)."""
    rid = row.get("id")
    if rid is None:
        rid = tenant.next_ids[entity]
        tenant.next_ids[entity] = rid + 1
    row["id"] = rid
    tenant.records[entity][rid] = row
    return rid


def _company(name: str, owner: int, **kw) -> dict:
    row = {
        "companyName": name,
        "companyType": 1,
        "ownerResourceID": owner,
        "phone": "+31 20 555 0100",
        "isActive": True,
        "createDate": "2019-03-01T09:00:00.000Z",
        "createdByResourceID": owner,
        "lastActivityDate": None,
        "lastTrackedModifiedDateTime": "2023-06-01T09:00:00.000Z",
        "userDefinedFields": {},
    }
    row.update(kw)
    return row


def _contact(company: int, first: str, last: str, **kw) -> dict:
    row = {
        "companyID": company,
        "firstName": first,
        "lastName": last,
        "isActive": 1,
        "primaryContact": False,
        "isOptedOutFromBulkEmail": False,
        "solicitationOptOut": False,
        "surveyOptOut": False,
        "createDate": "2019-03-01T09:00:00.000Z",
        "lastModifiedDate": "2023-06-01T09:00:00.000Z",
        "userDefinedFields": {},
    }
    row.update(kw)
    return row


def _salesforce_accounts() -> list[tuple[dict, list[dict]]]:
    """Return the Salesforce sandbox's first accounts with their contacts (both seeds are deterministic)."""
    from erpsync.sandbox.salesforce.org import Org
    from erpsync.sandbox.salesforce.seed import seed_org

    org = Org(None)
    seed_org(org)
    contacts: dict[str, list[dict]] = {}
    for row in org.tables["Contact"].values():
        contacts.setdefault(row.get("AccountId") or "", []).append(row)
    accounts = [a for a in org.tables["Account"].values() if a.get("BillingCity")]
    return [(a, contacts.get(a["Id"], [])) for a in accounts[:12]]


def seed_minimal(tenant: Tenant) -> dict[str, int]:
    """The part every tenant has: the API users as resources, company 0, countries."""
    ids = {
        "api": _insert(
            tenant,
            "resources",
            {
                "firstName": "ERPSync",
                "lastName": "API",
                "email": USERNAME,
                "userName": "erpsync.api",
                "isActive": True,
                "resourceType": 3,
                "licenseType": 7,
            },
        ),
        "other": _insert(
            tenant,
            "resources",
            {
                "firstName": "Other",
                "lastName": "Integration",
                "email": OTHER_USERNAME,
                "userName": "other.api",
                "isActive": True,
                "resourceType": 3,
                "licenseType": 7,
            },
        ),
    }
    _users(tenant, ids)
    for cid, code, name in _COUNTRIES:
        _insert(
            tenant,
            "countries",
            {"id": cid, "countryCode": code, "name": name, "displayName": name, "isActive": True},
        )
    _insert(tenant, "companies", _company("ERPSync Sandbox MSP", ids["api"], id=0, companyType=8))
    return ids


def seed_tenant(tenant: Tenant, seed: int = 20240501) -> dict:
    """Fill an empty tenant with the demo data; return facts for the state file."""
    rng = random.Random(seed)
    ids = seed_minimal(tenant)
    resources: list[int] = []
    for first, last, active, rtype, ltype in _RESOURCES:
        resources.append(
            _insert(
                tenant,
                "resources",
                {
                    "firstName": first,
                    "lastName": last,
                    "email": f"{first.lower()}.{last.lower().replace(' ', '')}@msp.example",
                    "userName": f"{first[0].lower()}{last.lower().replace(' ', '')}",
                    "isActive": active,
                    "resourceType": rtype,
                    "licenseType": ltype,
                    "title": "Account Manager" if rtype == 1 else "Engineer",
                },
            )
        )
    default_manager = resources[0]
    active_owners = [rid for rid, r in zip(resources, _RESOURCES, strict=True) if r[2]]
    inactive_owner = resources[5]

    for name, label in (("Lead Source", "Lead Source"), ("N-central Customer ID", "N-central Customer ID")):
        _insert(
            tenant,
            "userdefinedfielddefinitions",
            {
                "name": name,
                "description": label,
                "udfType": 1,
                "dataType": 1,
                "isActive": True,
                "isRequired": False,
                "isProtected": False,
                "isEncrypted": False,
                "isFieldMapping": False,
                "isPrivate": False,
                "isVisibleToClientPortal": False,
                "sortOrder": 0,
                "defaultValue": None,
                "mergeVariableName": None,
                "createDate": "2018-01-01T00:00:00.000Z",
            },
        )

    # Companies that already are Salesforce accounts (the import must match, not recreate them).
    matched = []
    salesforce = _salesforce_accounts()
    for n, (account, contacts) in enumerate(salesforce[:6]):
        cid = _insert(
            tenant,
            "companies",
            _company(
                account["Name"][:100],
                rng.choice(active_owners),
                address1=account["BillingStreet"],
                city=account["BillingCity"],
                state=account["BillingState"],
                postalCode=(account.get("BillingPostalCode") or "")[:10] or None,
                countryID=150,
                phone=account.get("Phone") or "+31 20 555 0199",
                companyNumber=f"AT-{7000 + n}",
            ),
        )
        matched.append(cid)
        for contact in contacts[:2] if n == 0 else []:
            _insert(
                tenant,
                "contacts",
                _contact(
                    cid, contact["FirstName"], contact["LastName"], emailAddress=None, title="(from Autotask)"
                ),
            )
    first_account = salesforce[6][0]
    _insert(  # same name as a Salesforce account, another city: not the same company
        tenant,
        "companies",
        _company(
            first_account["Name"][:100],
            default_manager,
            address1="Stationsplein 1",
            city="Zwolle",
            state="Overijssel",
            companyNumber="AT-7100",
        ),
    )

    # Everyday PSA data: duplicates, inactive and orphaned owners, 1-3 contacts each.
    for i in range(40):
        city, state, postal = _CITIES[i % len(_CITIES)]
        name = _NAMES[i % len(_NAMES)] + ("" if i < len(_NAMES) else f" {city}")
        if i in (12, 23):  # the same company entered twice, years apart
            name = _NAMES[i % len(_NAMES)]
        owner = inactive_owner if i == 31 else rng.choice(active_owners)
        cid = _insert(
            tenant,
            "companies",
            _company(
                name,
                owner,
                companyType=rng.choice((1, 1, 1, 2, 3, 7, 8)),
                address1=f"Dorpsstraat {rng.randint(1, 200)}",
                city=city,
                state=state,
                postalCode=postal,
                countryID=21 if city == "Antwerpen" else 150,
                marketSegmentID=rng.choice((11, 12, 13, 14, 15, None)),
                classification=rng.choice((101, 102, 103, None)),
                isActive=i != 37,
                webAddress=f"https://www.company{i}.example",
            ),
        )
        people = [(rng.choice(_FIRST), rng.choice(_LAST)) for _ in range(rng.choice((1, 2, 3)))]
        if i == 5:
            people.append(people[0])  # the same person twice in one company
        for k, (first, last) in enumerate(people):
            _insert(
                tenant,
                "contacts",
                _contact(
                    cid,
                    first,
                    last,
                    emailAddress=f"{first.lower()}.{last.lower().replace(' ', '')}{i}{k}@company{i}.example",
                    phone=f"+31 6 {rng.randint(10000000, 99999999)}",
                    primaryContact=k == 0,
                    isActive=0 if (i + k) % 17 == 0 else 1,
                ),
            )
    tenant.dirty = True
    return {
        "default_account_manager_id": default_manager,
        "api_resource_id": ids["api"],
        "matched_company_ids": matched,
    }
