"""Entities the Autotask simulator serves: their fields, picklists and what each URL may do.

Field names, types, lengths and requiredness follow reference/autotask.md §5 (Companies, Contacts,
Resources) and the Developer Help entity pages; picklist values are the typical tenant defaults of §5.1
(company types) plus tenant-specific market segments and classifications, so a client must resolve
them through ``entityInformation/fields`` instead of hard-coding ids. ``UserDefinedFieldDefinitions``
is the REST entity that creates UDFs (Developer Help "UserDefinedFieldDefinitions": create, update,
query; no delete).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ENTITIES", "EntitySpec", "FieldSpec", "Picklist", "entity_by_path"]


@dataclass(frozen=True)
class Picklist:
    """Picklist entries as (value, label, is_active); values are integers in records, strings in metadata."""

    values: tuple[tuple[int, str, bool], ...]
    default: int | None = None

    def active(self, value: int) -> bool:
        return any(v == value and active for v, _, active in self.values)

    def known(self, value: int) -> bool:
        return any(v == value for v, _, _ in self.values)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    data_type: str  # string, integer, long, double, boolean, datetime
    length: int = 0
    required: bool = False
    read_only: bool = False
    queryable: bool = True
    reference: str = ""  # entity name a reference field points to
    picklist: Picklist | None = None


@dataclass(frozen=True)
class EntitySpec:
    """One entity: its URL name, the singular used in messages, fields and allowed operations."""

    path: str  # URL segment, e.g. Companies
    label: str  # singular, as Autotask's messages name it ("Unable to find x in the Company Entity")
    fields: tuple[FieldSpec, ...]
    can_create: bool = False
    can_update: bool = False
    can_delete: bool = False
    has_udfs: bool = False
    parent: str = ""  # create/update/delete only under {parent}/{id}/{path}
    parent_field: str = ""
    udf_type: int | None = None  # UserDefinedFieldDefinitions.udfType of this entity's UDFs
    by_name: dict[str, FieldSpec] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name.update({f.name.lower(): f for f in self.fields})

    def field(self, name: str) -> FieldSpec | None:
        """Look a field up the way Autotask does: any casing of its name."""
        return self.by_name.get(str(name).lower())


COMPANY_TYPES = Picklist(
    (
        (1, "Customer", True),
        (2, "Lead", True),
        (3, "Prospect", True),
        (4, "Dead", True),
        (5, "Suspect", False),  # retired by the tenant: may not be set on new records
        (6, "Cancellation", True),
        (7, "Vendor", True),
        (8, "Partner", True),
    )
)
MARKET_SEGMENTS = Picklist(
    (
        (11, "Construction", True),
        (12, "Manufacturing", True),
        (13, "Retail", True),
        (14, "Technology", True),
        (15, "Healthcare", True),
        (16, "Financial Services", True),
        (17, "Transportation", False),  # inactive: an import must leave the field empty, not set it
        (18, "Education", True),
    )
)
CLASSIFICATIONS = Picklist(
    (
        (101, "Hot", True),
        (102, "Warm", True),
        (103, "Cold", True),
        (104, "Gold", True),
        (105, "Silver", True),
        (106, "Bronze", False),
    )
)
TERRITORIES = Picklist(((201, "North", True), (202, "South", True), (203, "Benelux", True)))
NAME_PREFIXES = Picklist(((1, "Mr.", True), (2, "Mrs.", True), (3, "Ms.", True), (4, "Dr.", True)))
NAME_SUFFIXES = Picklist(((1, "Jr.", True), (2, "Sr.", True), (3, "PhD", True)))
RESOURCE_TYPES = Picklist(((1, "Employee", True), (2, "Contractor", True), (3, "API User", True)))
LICENSE_TYPES = Picklist(((1, "Full", True), (2, "Co-managed", True), (7, "API User", True)))
UDF_TYPES = Picklist(((1, "Company", True), (2, "Contact", True), (4, "Ticket", True), (5, "Product", True)))
UDF_DATA_TYPES = Picklist(((1, "String", True), (2, "Number", True), (3, "Date", True), (4, "List", True)))


def _f(name: str, data_type: str = "string", length: int = 0, **kw) -> FieldSpec:
    return FieldSpec(name, data_type, length, **kw)


def _ro(name: str, data_type: str = "datetime") -> FieldSpec:
    return FieldSpec(name, data_type, read_only=True)


COMPANIES = EntitySpec(
    "Companies",
    "Company",
    (
        _f("id", "long", read_only=True),
        _f("companyName", length=100, required=True),
        _f("companyType", "integer", required=True, picklist=COMPANY_TYPES),
        _f("ownerResourceID", "integer", required=True, reference="Resources"),
        _f("phone", length=25, required=True),
        _f("isActive", "boolean"),
        _f("companyNumber", length=50),
        _f("address1", length=150),
        _f("address2", length=150),
        _f("additionalAddressInformation", length=100),
        _f("city", length=30),
        _f("state", length=25),
        _f("postalCode", length=10),
        _f("countryID", "integer", reference="Countries"),
        _f("alternatePhone1", length=25),
        _f("alternatePhone2", length=25),
        _f("fax", length=25),
        _f("webAddress", length=255),
        _f("marketSegmentID", "integer", picklist=MARKET_SEGMENTS),
        _f("classification", "integer", picklist=CLASSIFICATIONS),
        _f("territoryID", "integer", picklist=TERRITORIES),
        _f("parentCompanyID", "integer", reference="Companies"),
        _f("assetValue", "double"),
        _f("sicCode", length=32),
        _f("stockSymbol", length=10),
        _f("stockMarket", length=10),
        _f("taxID", length=50),
        _ro("createDate"),
        _ro("createdByResourceID", "integer"),
        _ro("lastActivityDate"),
        _ro("lastTrackedModifiedDateTime"),
    ),
    can_create=True,
    can_update=True,
    has_udfs=True,
    udf_type=1,
)

CONTACTS = EntitySpec(
    "Contacts",
    "Contact",
    (
        _f("id", "long", read_only=True),
        _f("companyID", "integer", required=True, reference="Companies"),
        _f("firstName", length=50, required=True),
        _f("lastName", length=50, required=True),
        # An integer 1/0 in this entity, unlike Companies.isActive (reference §5.2, §11.8).
        _f("isActive", "integer", required=True),
        _f("emailAddress", length=254),
        _f("emailAddress2", length=254),
        _f("emailAddress3", length=254),
        _f("phone", length=25),
        _f("alternatePhone", length=32),
        _f("mobilePhone", length=25),
        _f("faxNumber", length=25),
        _f("extension", length=10),
        _f("title", length=50),
        _f("primaryContact", "boolean"),
        _f("externalID", length=50),
        _f("addressLine", length=128),
        _f("addressLine1", length=128),
        _f("city", length=32),
        _f("state", length=40),
        _f("zipCode", length=16),
        _f("countryID", "integer", reference="Countries"),
        _f("additionalAddressInformation", length=100),
        _f("namePrefix", "integer", picklist=NAME_PREFIXES),
        _f("nameSuffix", "integer", picklist=NAME_SUFFIXES),
        _f("note", length=8000),
        # Not queryable (reference §4.1): a filter on them is an error.
        _f("isOptedOutFromBulkEmail", "boolean", queryable=False),
        _f("solicitationOptOut", "boolean", queryable=False),
        _f("surveyOptOut", "boolean", queryable=False),
        _ro("createDate"),
        _ro("lastActivityDate"),
        _ro("lastModifiedDate"),
    ),
    can_create=True,
    can_update=True,
    can_delete=True,
    has_udfs=True,
    parent="Companies",
    parent_field="companyID",
    udf_type=2,
)

RESOURCES = EntitySpec(
    "Resources",
    "Resource",
    (
        _f("id", "long", read_only=True),
        _f("firstName", length=50),
        _f("lastName", length=50),
        _f("middleName", length=50),
        _f("email", length=254),
        _f("userName", length=32),
        _f("isActive", "boolean"),
        _f("resourceType", "integer", picklist=RESOURCE_TYPES),
        _f("licenseType", "integer", picklist=LICENSE_TYPES),
        _f("title", length=50),
        _f("officePhone", length=25),
        _f("mobilePhone", length=25),
    ),
)

COUNTRIES = EntitySpec(
    "Countries",
    "Country",
    (
        _f("id", "long", read_only=True),
        _f("countryCode", length=2),
        _f("name", length=100),
        _f("displayName", length=100),
        _f("isActive", "boolean"),
    ),
)

UDF_DEFINITIONS = EntitySpec(
    "UserDefinedFieldDefinitions",
    "UserDefinedFieldDefinition",
    (
        _f("id", "long", read_only=True),
        _f("name", length=45, required=True),
        _f("udfType", "integer", required=True, picklist=UDF_TYPES),
        _f("dataType", "integer", required=True, picklist=UDF_DATA_TYPES),
        _f("description", length=128),
        _f("isActive", "boolean"),
        _f("isRequired", "boolean"),
        _f("isProtected", "boolean"),
        _f("isEncrypted", "boolean"),
        _f("isFieldMapping", "boolean"),
        _f("isPrivate", "boolean"),
        _f("isVisibleToClientPortal", "boolean"),
        _f("sortOrder", "integer"),
        _f("defaultValue", length=1024),
        _f("mergeVariableName", length=100),
        _ro("createDate"),
    ),
    can_create=True,
    can_update=True,
)

ENTITIES: dict[str, EntitySpec] = {
    e.path.lower(): e for e in (COMPANIES, CONTACTS, RESOURCES, COUNTRIES, UDF_DEFINITIONS)
}


def entity_by_path(segment: str) -> EntitySpec | None:
    """Return the entity a URL segment names, in any casing (paths are case-insensitive, §1)."""
    return ENTITIES.get(segment.lower())
