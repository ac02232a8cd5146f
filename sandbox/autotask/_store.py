"""The simulated tenant: records per entity, UDF definitions, API users, its zone, saved as one JSON file.

Write rules follow reference/autotask.md §3, §5, §6, §9 and §11:

- Input keys are accepted in any casing; output keys are camelCase. Read-only fields in a body are
  ignored; a key the entity does not have is refused (HTTP 500, Autotask's message shape).
- Required fields must be present on create and on PUT, and cannot be set to null by PATCH.
- Strings longer than the field are refused with "String value exceeds maximum length (field:x)."
- Booleans must be literal true/false; Contacts.isActive is an integer 1/0 (§5.2).
- Picklist fields take an active value of their picklist (inactive values cannot be set, §7); reference
  fields take the id of an existing record (Companies.ownerResourceID: an active resource).
- PATCH changes only what the body names (UDFs too); PUT replaces: every writable field and UDF the
  body omits is cleared (booleans become false), which is why clients should never PUT (§12 #7).
- UDF values are ``[{name, value}]`` with exact UDF names; values are strings on the wire (§6).
- Validation failures answer HTTP 500, as the real service does (§9).
- Empty strings are stored as null, as Autotask does for cleared fields.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._schema import ENTITIES, EntitySpec, FieldSpec

__all__ = ["ApiError", "ApiUser", "Tenant", "iso"]

UDF_LIMITS = {1: 200, 2: 100}  # Company, Contact (Developer Help "UserDefinedFieldDefinitions")
FIRST_IDS = {
    "companies": 29683500,
    "contacts": 30682100,
    "resources": 29682800,
    "countries": 1,
    "userdefinedfielddefinitions": 29682950,
}


class ApiError(Exception):
    """A refused request: HTTP `status` and the strings of Autotask's ``{"errors": [...]}`` body."""

    def __init__(self, status: int, *messages: str):
        super().__init__("; ".join(messages))
        self.status, self.messages = status, list(messages)


def iso(ts: float) -> str:
    """Autotask's response format: UTC ISO-8601 with milliseconds and Z (§3)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class ApiUser:
    """An API-only user: user name, secret, the integration codes it may use and its resource id."""

    def __init__(self, username: str, secret: str, integration_code: str, resource_id: int):
        self.username, self.secret = username, secret
        self.integration_code, self.resource_id = integration_code, resource_id

    def as_json(self) -> dict:
        return dict(vars(self))


class Tenant:
    """One Autotask database; every caller of every API user shares it (and its threshold)."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.records: dict[str, dict[int, dict]] = {name: {} for name in ENTITIES}
        self.next_ids: dict[str, int] = dict(FIRST_IDS)
        self.users: dict[str, ApiUser] = {}
        self.zone = 14
        self.ci = 4711
        self.dirty = False

    # ----- persistence ------------------------------------------------------------------------
    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "format": 1,
                    "zone": self.zone,
                    "ci": self.ci,
                    "users": [u.as_json() for u in self.users.values()],
                    "next_ids": self.next_ids,
                    "records": {name: list(rows.values()) for name, rows in self.records.items()},
                }
            )
        )
        tmp.replace(self.path)
        self.dirty = False

    @classmethod
    def load(cls, path: Path) -> Tenant:
        from erpsync.errors import ConfigError

        tenant = cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            tenant.zone, tenant.ci = int(data["zone"]), int(data["ci"])
            for user in data["users"]:
                tenant.add_user(ApiUser(**user))
            tenant.next_ids.update(data["next_ids"])
            for name, rows in data["records"].items():
                if name not in tenant.records:
                    raise ValueError(f"unknown entity {name!r}")
                tenant.records[name] = {int(row["id"]): row for row in rows}
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"not a usable Autotask simulator file ({exc}); move it away or run `make demo-reset`",
                where=str(path),
            ) from exc
        return tenant

    def add_user(self, user: ApiUser) -> None:
        self.users[user.username.lower()] = user

    # ----- UDFs -------------------------------------------------------------------------------
    def udf_definitions(self, entity: EntitySpec, *, active_only: bool = True) -> list[dict]:
        if entity.udf_type is None:
            return []
        return sorted(
            (
                d
                for d in self.records["userdefinedfielddefinitions"].values()
                if d["udfType"] == entity.udf_type and (d.get("isActive") or not active_only)
            ),
            key=lambda d: (d.get("sortOrder") or 0, d["id"]),
        )

    def udf_names(self, entity: EntitySpec) -> dict[str, str]:
        return {d["name"].lower(): d["name"] for d in self.udf_definitions(entity)}

    # ----- reads ------------------------------------------------------------------------------
    def rows(self, entity: EntitySpec) -> dict[int, dict]:
        return self.records[entity.path.lower()]

    def render(
        self, entity: EntitySpec, row: dict, fields: list[str] | None = None, udfs: bool = True
    ) -> dict:
        """Return a record as the wire shows it: camelCase keys, UDFs as ``[{name, value}]``."""
        names = fields if fields is not None else [f.name for f in entity.fields]
        out = {name: row.get(name) for name in names}
        if entity.has_udfs and udfs:
            values = row.get("userDefinedFields") or {}
            out["userDefinedFields"] = [
                {"name": d["name"], "value": values.get(d["name"])} for d in self.udf_definitions(entity)
            ]
        return out

    # ----- writes -----------------------------------------------------------------------------
    def create(
        self, entity: EntitySpec, body: Any, *, now: float, creator: int, parent_id: int | None = None
    ) -> int:
        body = self._body(entity, body)
        if entity.parent:
            given = body.get(entity.parent_field)
            if given is not None and _as_int(given) != parent_id:
                raise ApiError(
                    500,
                    f"{entity.parent_field} {given} does not match the parent {entity.parent} id {parent_id} in the URL.",
                )
            body[entity.parent_field] = parent_id
        row: dict[str, Any] = {}
        for spec in entity.fields:
            if spec.data_type == "boolean":
                row[spec.name] = False
        if entity.path in {"Companies", "UserDefinedFieldDefinitions"}:
            row["isActive"] = True  # Autotask's default for a new company or UDF
        self._apply(entity, row, body, creating=True)
        self._check_required(entity, row)
        if entity.path == "UserDefinedFieldDefinitions":
            self.check_udf_definition(row)
        new_id = self.next_ids[entity.path.lower()]
        self.next_ids[entity.path.lower()] = new_id + 1
        row["id"] = new_id
        stamp = _iso_now(now)
        for name in ("createDate", "lastTrackedModifiedDateTime", "lastModifiedDate", "lastActivityDate"):
            if entity.field(name):
                row[name] = stamp
        if entity.field("createdByResourceID"):
            row["createdByResourceID"] = creator
        self.rows(entity)[new_id] = row
        self.dirty = True
        return new_id

    def update(
        self, entity: EntitySpec, body: Any, *, now: float, replace: bool, parent_id: int | None = None
    ) -> int:
        body = self._body(entity, body, keep_id=True)
        if body.get("id") is None:
            raise ApiError(500, f"An update of a {entity.label} needs its 'id' in the body.")
        try:
            rid = _as_int(body.pop("id"))
        except ValueError:
            raise ApiError(500, f"'id' must be an integer in the {entity.label} Entity.") from None
        row = self.rows(entity).get(rid)
        if row is None or (entity.parent and row.get(entity.parent_field) != parent_id):
            raise ApiError(
                404,
                f"No {entity.label} with id {rid} was found"
                + (f" under {entity.parent} {parent_id}." if entity.parent else "."),
            )
        if entity.parent and entity.parent_field in body and _as_int(body[entity.parent_field]) != parent_id:
            raise ApiError(500, f"{entity.parent_field} cannot be changed through this URL.")
        new = dict(row)
        if entity.has_udfs:
            new["userDefinedFields"] = dict(row.get("userDefinedFields") or {})
        if replace:
            for spec in entity.fields:
                if not spec.read_only and spec.name not in body and spec.name != entity.parent_field:
                    new[spec.name] = False if spec.data_type == "boolean" else None
            if entity.has_udfs:
                new["userDefinedFields"] = {}
        self._apply(entity, new, body, creating=False, current_id=rid)
        self._check_required(entity, new)
        if entity.path == "UserDefinedFieldDefinitions":
            if new["udfType"] != row["udfType"]:
                raise ApiError(500, "udfType cannot be changed after a user-defined field is created.")
            self.check_udf_definition(new, rid)
        stamp = _iso_now(now)
        for name in ("lastTrackedModifiedDateTime", "lastModifiedDate"):
            if entity.field(name):
                new[name] = stamp
        self.rows(entity)[rid] = new
        self.dirty = True
        return rid

    def delete(self, entity: EntitySpec, rid: int, parent_id: int | None) -> None:
        row = self.rows(entity).get(rid)
        if row is None or (entity.parent and row.get(entity.parent_field) != parent_id):
            raise ApiError(500, f"No {entity.label} with id {rid} exists to delete.")  # 500, not 404 (§9)
        if row.get("primaryContact"):
            raise ApiError(
                500, f"The {entity.label} {rid} is the primary contact of its company; inactivate it instead."
            )
        del self.rows(entity)[rid]
        self.dirty = True

    # ----- validation -------------------------------------------------------------------------
    def _body(self, entity: EntitySpec, body: Any, keep_id: bool = False) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, f"The body must be a JSON object describing one {entity.label}.")
        out: dict[str, Any] = {}
        for key, value in body.items():
            if str(key).lower() == "userdefinedfields":
                out["userDefinedFields"] = value
                continue
            spec = entity.field(key)
            if spec is None:
                raise ApiError(500, f"Unable to find {key} in the {entity.label} Entity.")
            if spec.name == "id":
                if keep_id:
                    out["id"] = value
                continue
            if spec.read_only:
                continue  # the service ignores read-only fields on write
            out[spec.name] = value
        return out

    def _apply(
        self, entity: EntitySpec, row: dict, body: dict, *, creating: bool, current_id: int | None = None
    ) -> None:
        for name, value in body.items():
            if name == "userDefinedFields":
                self._apply_udfs(entity, row, value)
                continue
            spec = entity.field(name)
            assert spec is not None
            row[name] = self._value(entity, spec, value, row.get(name), current_id)
        if creating and entity.has_udfs:
            row.setdefault("userDefinedFields", {})

    def _value(
        self, entity: EntitySpec, spec: FieldSpec, value: Any, old: Any, current_id: int | None
    ) -> Any:
        where = f"(field:{spec.name})"
        if spec.data_type == "boolean":
            if not isinstance(value, bool):
                raise ApiError(500, f"Value {value!r} is not a boolean; send true or false {where}.")
            return value
        if value is None or (isinstance(value, str) and value == ""):
            if spec.required:
                raise ApiError(500, f"Required field '{spec.name}' cannot be empty.")
            return None
        if spec.data_type == "string":
            if isinstance(value, dict | list | bool):
                raise ApiError(500, f"Value {value!r} is not a string {where}.")
            text = str(value)
            if spec.length and len(text) > spec.length:
                raise ApiError(500, f"String value exceeds maximum length {where}.")
            return text
        if spec.data_type == "double":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ApiError(500, f"Value {value!r} is not a number {where}.")
            try:
                return float(value)
            except ValueError:
                raise ApiError(500, f"Value {value!r} is not a number {where}.") from None
        if spec.data_type == "datetime":
            return value
        # integer / long
        try:
            number = _as_int(value)
        except ValueError:
            raise ApiError(500, f"Value {value!r} is not an integer {where}.") from None
        if spec.name == "isActive" and number not in (0, 1):
            raise ApiError(500, f"isActive must be 1 or 0 in the {entity.label} Entity.")
        if spec.picklist is not None and number != old:
            if not spec.picklist.known(number):
                raise ApiError(500, f"Value {number} is not a valid picklist value {where}.")
            if not spec.picklist.active(number):
                raise ApiError(
                    500, f"Value {number} is an inactive picklist value and cannot be set {where}."
                )
        if spec.reference and number != old:
            self._check_reference(entity, spec, number, current_id)
        return number

    def _check_reference(
        self, entity: EntitySpec, spec: FieldSpec, number: int, current_id: int | None
    ) -> None:
        target = self.records[spec.reference.lower()].get(number)
        if target is None:
            raise ApiError(
                500,
                f"No {ENTITIES[spec.reference.lower()].label} with id {number} exists (field:{spec.name}).",
            )
        if spec.reference == "Resources" and not target.get("isActive"):
            raise ApiError(500, f"Resource {number} is inactive and cannot be assigned (field:{spec.name}).")
        if spec.name == "parentCompanyID" and current_id is not None:
            seen, cursor = set(), number
            while cursor is not None and cursor not in seen:
                if cursor == current_id:
                    raise ApiError(
                        500, f"Company {number} cannot be the parent of {current_id}: that makes a cycle."
                    )
                seen.add(cursor)
                cursor = (self.records["companies"].get(cursor) or {}).get("parentCompanyID")

    def _apply_udfs(self, entity: EntitySpec, row: dict, value: Any) -> None:
        if not entity.has_udfs:
            raise ApiError(500, f"The {entity.label} Entity has no user-defined fields.")
        if not isinstance(value, list):
            raise ApiError(500, "userDefinedFields must be an array of {name, value} objects.")
        defined = {d["name"]: d for d in self.udf_definitions(entity)}
        values = row.setdefault("userDefinedFields", {})
        for item in value:
            if not isinstance(item, dict) or "name" not in item:
                raise ApiError(500, "Each user-defined field needs a 'name' and a 'value'.")
            name = item["name"]
            if name not in defined:  # names are matched exactly as defined (§6)
                raise ApiError(
                    500, f"Unable to find the user-defined field {name} in the {entity.label} Entity."
                )
            raw = item.get("value")
            if isinstance(raw, dict | list):
                raise ApiError(500, f"The value of user-defined field {name} must be a string.")
            text = (
                None
                if raw is None or raw == ""
                else (str(raw).lower() if isinstance(raw, bool) else str(raw))
            )
            if text is not None and len(text) > 1024:
                raise ApiError(500, f"String value exceeds maximum length (field:{name}).")
            values[name] = text

    def _check_required(self, entity: EntitySpec, row: dict) -> None:
        missing = [
            f.name for f in entity.fields if f.required and not f.read_only and row.get(f.name) in (None, "")
        ]
        for d in self.udf_definitions(entity):
            if d.get("isRequired") and (row.get("userDefinedFields") or {}).get(d["name"]) is None:
                missing.append(d["name"])
        if missing:
            raise ApiError(500, *(f"Required field '{name}' is missing." for name in missing))

    # ----- UDF definitions --------------------------------------------------------------------
    def check_udf_definition(self, row: dict, rid: int | None = None) -> None:
        """Refuse a duplicate name per entity and more active UDFs than the entity allows."""
        name, udf_type = row.get("name") or "", row.get("udfType")
        for other in self.records["userdefinedfielddefinitions"].values():
            if other["id"] != rid and other["udfType"] == udf_type and other["name"].lower() == name.lower():
                raise ApiError(500, f"A user-defined field named '{name}' already exists for this entity.")
        limit = UDF_LIMITS.get(udf_type)
        active = sum(
            1
            for d in self.records["userdefinedfielddefinitions"].values()
            if d["udfType"] == udf_type and d.get("isActive") and d["id"] != rid
        )
        if limit is not None and row.get("isActive") and active >= limit:
            raise ApiError(500, f"The entity already has its maximum of {limit} active user-defined fields.")


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    return int(str(value).strip())


def _iso_now(now: float) -> str:
    return iso(now)
