"""The simulated org: records, indexes and the save rules Salesforce enforces on every write.

Every write path (single-record REST, collections, Bulk 2.0) goes through `Org.create`, `Org.update`,
`Org.upsert` and `Org.delete`, so the same field checks and object rules apply however a record
arrives. Errors come back as `SaveError` values (code, message, fields); each endpoint renders them in
its own wire shape (``errorCode`` lists, ``statusCode`` per record, Bulk ``sf__Error`` text).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from .ids import make_id, normalize_id
from .schema import BY_PREFIX, OBJECTS, ORDER_STATUS_CATEGORY, FieldDef, ObjectDef, get_object
from .soql import SoqlQuery, parse_sf_datetime, resolve

__all__ = ["Org", "SaveError", "format_datetime"]

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def format_datetime(moment: datetime) -> str:
    """Render a datetime the way the API does: `2024-05-02T08:15:30.000+0000`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


@dataclass
class SaveError:
    """One reason a record was not saved, in Salesforce's vocabulary."""

    code: str
    message: str
    fields: list[str] = field(default_factory=list)

    def rest(self) -> dict:
        return {"message": self.message, "errorCode": self.code, "fields": self.fields}

    def collection(self) -> dict:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}

    def bulk(self) -> str:
        return f"{self.code}:{self.message}:{','.join(self.fields)} --"


class MultipleMatches(Exception):
    """An upsert key matched several records (HTTP 300 in the single-record API)."""

    def __init__(self, ids: list[str]):
        super().__init__(f"{len(ids)} records match")
        self.ids = ids


class Org:
    """All records of one org plus its counters; persisted as JSON in the sandbox data dir."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.tables: dict[str, dict[str, dict]] = {o.name: {} for o in OBJECTS.values()}
        self.counters: dict[str, int] = {}
        self.index: dict[tuple[str, str], dict[str, set[str]]] = {}
        self.deleted_log: list[dict] = []
        self.integration_user_id: str | None = None
        self.dirty = False
        self._last_stamp: datetime | None = None
        self.clock_offset = 0.0  # seconds the simulator's /__admin/clock moved this org forward
        self._rebuild_indexes()

    # ----- persistence -------------------------------------------------------------------------
    def save(self) -> None:
        """Write the org to `path` atomically (tmp + rename) so a crash never leaves half a file."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "format": 1,
                    "tables": self.tables,
                    "counters": self.counters,
                    "deleted": self.deleted_log,
                    "integration_user_id": self.integration_user_id,
                }
            )
        )
        tmp.replace(self.path)
        self.dirty = False

    @classmethod
    def load(cls, path: Path) -> Org:
        from erpsync.errors import ConfigError

        org = cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            tables, counters = data["tables"], data["counters"]
            unknown = set(tables) - set(org.tables)
            if unknown:
                raise ValueError(f"unknown object tables {sorted(unknown)}")
        except (ValueError, KeyError, TypeError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ConfigError(
                f"not a usable simulator org file ({detail}); move it away or run "
                "`make demo-reset` to start from the seed again",
                where=str(path),
            ) from exc
        for name, rows in tables.items():
            org.tables[name] = rows
        org.counters = counters
        org.deleted_log = data.get("deleted", [])
        org.integration_user_id = data.get("integration_user_id")
        org._rebuild_indexes()
        return org

    def _rebuild_indexes(self) -> None:
        self.index = {}
        self.items_by_order: dict[str, set[str]] = {}
        self.entries_by_product: dict[str, set[str]] = {}
        for obj in OBJECTS.values():
            for f in obj.fields:
                if f.external_id or f.unique:
                    self.index[(obj.name, f.name)] = {}
            for rid, rec in self.tables[obj.name].items():
                self._index_add(obj, rid, rec)

    def _index_add(self, obj: ObjectDef, rid: str, rec: dict) -> None:
        # OrderId and Product2Id are create-only, so these two indexes only ever grow.
        if obj.name == "OrderItem":
            self.items_by_order.setdefault(rec["OrderId"], set()).add(rid)
        elif obj.name == "PricebookEntry":
            self.entries_by_product.setdefault(rec["Product2Id"], set()).add(rid)
        for (oname, fname), idx in self.index.items():
            if oname == obj.name and rec.get(fname) not in (None, ""):
                idx.setdefault(str(rec[fname]).lower(), set()).add(rid)

    def _index_remove(self, obj: ObjectDef, rid: str, rec: dict) -> None:
        for (oname, fname), idx in self.index.items():
            if oname == obj.name and rec.get(fname) not in (None, ""):
                ids = idx.get(str(rec[fname]).lower())
                if ids:
                    ids.discard(rid)

    def snapshot(self) -> Any:
        return copy.deepcopy((self.tables, self.counters, self.deleted_log))

    def restore(self, snap: Any) -> None:
        self.tables, self.counters, self.deleted_log = snap
        self._rebuild_indexes()

    # ----- reads -------------------------------------------------------------------------------
    def get(self, rid: str | None, include_deleted: bool = False) -> dict | None:
        norm = normalize_id(rid) if rid else None
        obj = BY_PREFIX.get(norm[:3]) if norm else None
        if obj is None:
            return None
        rec = self.tables[obj.name].get(norm)
        if rec is None or (rec.get("IsDeleted") and not include_deleted):
            return None
        return rec

    def find_by(self, obj: ObjectDef, fdef: FieldDef, value: Any) -> list[str]:
        """Return the live record ids whose external-id field equals `value` (case-insensitive)."""
        if fdef.name == "Id":
            rec = self.get(str(value))
            return [rec["Id"]] if rec and rec["Id"][:3] == obj.key_prefix else []
        ids = self.index.get((obj.name, fdef.name), {}).get(str(value).lower(), set())
        return sorted(i for i in ids if not self.tables[obj.name][i].get("IsDeleted"))

    def query(self, q: SoqlQuery, include_deleted: bool = False) -> list[dict]:
        """Run a parsed query and return the raw matching records (sorted, offset and limit applied)."""
        rows = [
            r
            for r in self._candidates(q)
            if (include_deleted or not r.get("IsDeleted")) and q.matches(r, self._lookup)
        ]
        if q.order:
            rows = q.sort(rows, self._lookup)
        else:
            rows.sort(key=lambda r: r["Id"])
        rows = rows[q.offset :]
        return rows if q.limit is None else rows[: q.limit]

    def _candidates(self, q: SoqlQuery) -> Iterable[dict]:
        """The records a query can match: only the named ones for `Id IN (...)` / `Id = ...` (alone or
        ANDed), as Salesforce's index does, instead of scanning the table; `matches` still decides."""
        from .soql import BoolOp, Comparison

        table = self.tables[q.obj.name]
        terms = q.where.items if isinstance(q.where, BoolOp) and q.where.op == "and" else [q.where]
        for term in terms:
            if isinstance(term, Comparison) and term.path == ("Id",) and term.op in ("in", "="):
                literals = term.value if term.op == "in" else [term.value]
                ids = {normalize_id(lit.value) for lit in literals if isinstance(lit.value, str)}
                return [table[i] for i in ids if i in table]
        return table.values()

    def _lookup(self, rid: str | None) -> dict | None:
        return self.get(rid, include_deleted=True) if rid else None

    def children(self, parent_id: str, sub: SoqlQuery, fk: str) -> list[dict]:
        """Return the live child records of `parent_id` a subquery selects (filtered, sorted, limited)."""
        table = self.tables[sub.obj.name]
        if sub.obj.name == "OrderItem" and fk == "OrderId":
            pool = [table[i] for i in self.items_by_order.get(parent_id, ())]
        else:
            pool = [r for r in table.values() if r.get(fk) == parent_id]
        rows = [r for r in pool if not r.get("IsDeleted") and sub.matches(r, self._lookup)]
        rows = sub.sort(rows, self._lookup) if sub.order else sorted(rows, key=lambda r: r["Id"])
        rows = rows[sub.offset :]
        return rows if sub.limit is None else rows[: sub.limit]

    def shape(
        self,
        rec: dict,
        paths: list[tuple[str, ...]],
        version: str,
        subqueries: list[tuple[str, SoqlQuery, str]] = (),  # type: ignore[assignment]
    ) -> dict:
        """Render a record for a query result: requested fields, nested parents, child subqueries.

        A subquery with no rows renders as null, as Salesforce does; otherwise as a nested query result.
        """
        obj = BY_PREFIX[rec["Id"][:3]]
        out: dict[str, Any] = {
            "attributes": {
                "type": obj.name,
                "url": f"/services/data/v{version}/sobjects/{obj.name}/{rec['Id']}",
            }
        }
        for path in paths:
            self._shape_path(out, obj, rec, path, version)
        for rel_name, sub, fk in subqueries:
            kids = self.children(rec["Id"], sub, fk)
            out[rel_name] = (
                {
                    "totalSize": len(kids),
                    "done": True,
                    "records": [self.shape(k, sub.fields, version) for k in kids],
                }
                if kids
                else None
            )
        return out

    def _shape_path(self, out: dict, obj: ObjectDef, rec: dict | None, path: tuple[str, ...], version: str):
        if len(path) == 1:
            out[path[0]] = None if rec is None else rec.get(path[0])
            return
        rel = obj.relationship(path[0])
        parent = self._lookup(rec.get(rel.name)) if rec is not None and rel else None
        if parent is None:
            out[path[0]] = None
            return
        pobj = BY_PREFIX[parent["Id"][:3]]
        node = out.get(path[0]) or {
            "attributes": {
                "type": pobj.name,
                "url": f"/services/data/v{version}/sobjects/{pobj.name}/{parent['Id']}",
            }
        }
        out[path[0]] = node
        self._shape_path(node, pobj, parent, path[1:], version)

    def flat_value(self, rec: dict, path: tuple[str, ...]) -> Any:
        return resolve(rec, path, self._lookup)

    # ----- writes ------------------------------------------------------------------------------
    def _stamp(self) -> str:
        now = datetime.now(UTC) + timedelta(seconds=self.clock_offset)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if self._last_stamp and now <= self._last_stamp:
            now = self._last_stamp  # never move SystemModstamp backwards within a process
        self._last_stamp = now
        return format_datetime(now)

    def next_id(self, obj: ObjectDef) -> str:
        n = self.counters.get(obj.key_prefix, 0) + 1
        self.counters[obj.key_prefix] = n
        return make_id(obj.key_prefix, n)

    def create(
        self, obj: ObjectDef, values: dict, *, user_id: str | None = None, bypass_rules: bool = False
    ) -> tuple[str | None, list[SaveError]]:
        """Insert one record; return (id, []) or (None, errors)."""
        if not obj.createable and not bypass_rules:
            return None, [
                SaveError(
                    "INSUFFICIENT_ACCESS_OR_READONLY",
                    f"insufficient access rights on object {obj.name}: cannot create",
                )
            ]
        clean, errors = self._clean(obj, values, insert=True, bypass_rules=bypass_rules)
        if errors:
            return None, errors
        for f in obj.fields:
            if f.name not in clean and f.default is not None and f.createable:
                clean[f.name] = f.default
        if "OwnerId" in {f.name for f in obj.fields} and not clean.get("OwnerId"):
            clean["OwnerId"] = user_id or self.integration_user_id
        if not bypass_rules:
            missing = [
                f.name for f in obj.fields if f.required and f.createable and clean.get(f.name) in (None, "")
            ]
            if missing:
                return None, [
                    SaveError(
                        "REQUIRED_FIELD_MISSING",
                        f"Required fields are missing: [{', '.join(missing)}]",
                        missing,
                    )
                ]
        errors = self._check_unique(obj, None, clean)
        if errors:
            return None, errors
        rid = self.next_id(obj)
        stamp = self._stamp()
        rec = {
            f.name: (False if f.type == "boolean" else None) for f in obj.fields
        }  # booleans are never null
        rec.update(clean)
        rec.update(
            Id=rid,
            IsDeleted=False,
            CreatedDate=stamp,
            LastModifiedDate=stamp,
            SystemModstamp=stamp,
            CreatedById=user_id or self.integration_user_id,
            LastModifiedById=user_id or self.integration_user_id,
        )
        if not bypass_rules:
            errors = _RULES.get(obj.name, _no_rule)(self, obj, None, rec)
            if errors:
                self.counters[obj.key_prefix] -= 1
                return None, errors
        self._derive(obj, rec)
        self.tables[obj.name][rid] = rec
        self._index_add(obj, rid, rec)
        self._after_write(obj, rec)
        self.dirty = True
        return rid, []

    def update(
        self, obj: ObjectDef, rid: str, values: dict, *, user_id: str | None = None
    ) -> list[SaveError]:
        """Update one record by Id; return the errors (empty when saved)."""
        norm = normalize_id(rid)
        if norm is None:
            return [SaveError("MALFORMED_ID", f"{obj.name} ID: id value of incorrect type: {rid}", ["Id"])]
        rec = self.tables[obj.name].get(norm) if norm[:3] == obj.key_prefix else None
        if rec is None:
            if norm[:3] != obj.key_prefix:
                return [
                    SaveError("MALFORMED_ID", f"{obj.name} ID: id value of incorrect type: {rid}", ["Id"])
                ]
            return [SaveError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])]
        if rec.get("IsDeleted"):
            return [SaveError("ENTITY_IS_DELETED", "entity is deleted", [])]
        if not obj.updateable:
            return [
                SaveError(
                    "INSUFFICIENT_ACCESS_OR_READONLY",
                    f"insufficient access rights on object {obj.name}: cannot update",
                )
            ]
        clean, errors = self._clean(obj, {k: v for k, v in values.items() if k != "Id"}, insert=False)
        if errors:
            return errors
        nulled = [
            f.name for f in obj.fields if f.required and f.name in clean and clean[f.name] in (None, "")
        ]
        if nulled:
            return [
                SaveError(
                    "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(nulled)}]", nulled
                )
            ]
        errors = self._check_unique(obj, norm, clean)
        if errors:
            return errors
        new = {**rec, **clean}
        errors = _RULES.get(obj.name, _no_rule)(self, obj, rec, new)
        if errors:
            return errors
        self._index_remove(obj, norm, rec)
        stamp = self._stamp()
        new.update(
            LastModifiedDate=stamp, SystemModstamp=stamp, LastModifiedById=user_id or self.integration_user_id
        )
        self._derive(obj, new)
        rec.clear()
        rec.update(new)
        self._index_add(obj, norm, rec)
        self._after_write(obj, rec)
        self.dirty = True
        return []

    def upsert(
        self, obj: ObjectDef, ext_field: str, ext_value: Any, values: dict, *, user_id: str | None = None
    ) -> tuple[str | None, bool, list[SaveError]]:
        """Insert or update by external id; return (id, created, errors); raise MultipleMatches on 300."""
        fdef = obj.field(ext_field)
        if fdef is None or not (fdef.external_id or fdef.name == "Id"):
            return (
                None,
                False,
                [
                    SaveError(
                        "INVALID_FIELD",
                        f"Field name provided, {ext_field} is not an External ID or indexed field for "
                        f"{obj.name}",
                        [ext_field],
                    )
                ],
            )
        if ext_value in (None, ""):
            return None, False, [SaveError("MISSING_ARGUMENT", f"{fdef.name} not specified", [fdef.name])]
        body_value = next((v for k, v in values.items() if k.lower() == fdef.name.lower()), None)
        if body_value is not None and str(body_value) != str(ext_value):
            return (
                None,
                False,
                [
                    SaveError(
                        "INVALID_FIELD",
                        f"{fdef.name}: the value in the request body does not match the value in the URL",
                        [fdef.name],
                    )
                ],
            )
        matches = self.find_by(obj, fdef, ext_value)
        if len(matches) > 1:
            raise MultipleMatches(matches)
        rest = {k: v for k, v in values.items() if k.lower() != fdef.name.lower()}
        if matches:
            return matches[0], False, self.update(obj, matches[0], rest, user_id=user_id)
        if fdef.name == "Id":
            return (
                None,
                False,
                [
                    SaveError(
                        "NOT_FOUND",
                        "Provided external ID field does not exist or is not accessible: " + str(ext_value),
                        [],
                    )
                ],
            )
        rid, errors = self.create(obj, {**rest, fdef.name: ext_value}, user_id=user_id)
        return rid, True, errors

    def delete(self, rid: str) -> list[SaveError]:
        """Move a record to the recycle bin (IsDeleted = true), keeping it for queryAll and getDeleted."""
        norm = normalize_id(rid)
        if norm is None:
            return [SaveError("MALFORMED_ID", f"malformed id {rid}", [])]
        obj = BY_PREFIX.get(norm[:3])
        rec = self.tables[obj.name].get(norm) if obj else None
        if rec is None:
            return [SaveError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])]
        if rec.get("IsDeleted"):
            return [SaveError("ENTITY_IS_DELETED", "entity is deleted", [])]
        if not obj.deletable:
            return [SaveError("INSUFFICIENT_ACCESS_OR_READONLY", f"cannot delete {obj.name}")]
        if obj.name == "Order" and _activated(rec):
            return [SaveError("FIELD_INTEGRITY_EXCEPTION", "You can't delete an activated order.", [])]
        if obj.name == "OrderItem":
            order = self.get(rec["OrderId"])
            if order and _activated(order):
                return [
                    SaveError(
                        "FIELD_INTEGRITY_EXCEPTION", "You can't delete products from an activated order.", []
                    )
                ]
        stamp = self._stamp()
        rec.update(IsDeleted=True, SystemModstamp=stamp)
        self.deleted_log.append({"id": norm, "type": obj.name, "deletedDate": stamp})
        if obj.name == "Order":
            for item in self._live_items(norm):
                item.update(IsDeleted=True, SystemModstamp=stamp)
        if obj.name == "OrderItem":
            self._after_write(obj, rec)
        self.dirty = True
        return []

    # ----- validation --------------------------------------------------------------------------
    def _clean(
        self, obj: ObjectDef, values: dict, *, insert: bool, bypass_rules: bool = False
    ) -> tuple[dict, list[SaveError]]:
        clean: dict[str, Any] = {}
        for key, value in values.items():
            if key == "attributes":
                continue
            fdef = obj.field(key)
            if fdef is None and isinstance(value, dict):
                rel = obj.relationship(key)
                if rel is not None:
                    ref, err = self._resolve_foreign(rel, value)
                    if err:
                        return {}, [err]
                    fdef, value = rel, ref
            if fdef is None:
                return {}, [
                    SaveError("INVALID_FIELD", f"No such column '{key}' on sobject of type {obj.name}", [key])
                ]
            allowed = fdef.createable if insert else fdef.updateable
            if not allowed and not bypass_rules:
                verb = "create" if insert else "update"
                return {}, [
                    SaveError(
                        "INVALID_FIELD_FOR_INSERT_UPDATE",
                        f"Unable to {verb} fields: {fdef.name}. Please check the security settings "
                        "of this field and verify that it is read/write for your profile or "
                        "permission set.",
                        [fdef.name],
                    )
                ]
            converted, err = self._convert(fdef, value, bypass_rules)
            if err:
                return {}, [err]
            clean[fdef.name] = converted
        return clean, []

    def _resolve_foreign(self, rel: FieldDef, value: dict) -> tuple[str | None, SaveError | None]:
        target = get_object(rel.reference_to[0])
        keys = [k for k in value if k != "attributes"]
        if target is None or len(keys) != 1 or target.field(keys[0]) is None:
            return None, SaveError(
                "INVALID_FIELD", f"Invalid foreign key reference for {rel.relationship_name}", [rel.name]
            )
        fdef = target.field(keys[0])
        if not fdef.external_id:
            return None, SaveError(
                "INVALID_FIELD", f"{fdef.name} is not an External ID field on {target.name}", [rel.name]
            )
        ids = self.find_by(target, fdef, value[keys[0]])
        if not ids:
            return None, SaveError(
                "INVALID_FIELD",
                f"Foreign key external ID: {value[keys[0]]} not found for "
                f"field {fdef.name} in entity {target.name}",
                [rel.name],
            )
        if len(ids) > 1:
            return None, SaveError(
                "INVALID_FIELD",
                f"Foreign key external ID: {value[keys[0]]} matches more than "
                f"one record for field {fdef.name} in entity {target.name}",
                [rel.name],
            )
        return ids[0], None

    def _convert(self, fdef: FieldDef, value: Any, lax: bool) -> tuple[Any, SaveError | None]:
        name, t = fdef.name, fdef.type
        if value is None or value == "":
            return None, None

        def bad(kind: str = "") -> tuple[None, SaveError]:
            return None, SaveError(
                "INVALID_TYPE_ON_FIELD_IN_RECORD",
                f"{name}: value not of required type: {value}{kind}",
                [name],
            )

        if t in ("string", "textarea", "email", "phone", "url", "picklist"):
            if isinstance(value, bool | dict | list):
                return bad()
            text = str(value)
            if lax:
                return text, None
            if fdef.length and len(text) > fdef.length:
                return None, SaveError(
                    "STRING_TOO_LONG",
                    f"{name}: data value too large: {text[:80]} (max length={fdef.length})",
                    [name],
                )
            if t == "email" and not _EMAIL.match(text):
                return None, SaveError(
                    "INVALID_EMAIL_ADDRESS", f"{name}: invalid email address: {text}", [name]
                )
            if t == "picklist" and fdef.restricted and text not in fdef.picklist:
                return None, SaveError(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"{name}: bad value for restricted picklist field: {text}",
                    [name],
                )
            return text, None
        if t == "boolean":
            if isinstance(value, bool):
                return value, None
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE, None
            return bad()
        if t in ("int", "double", "currency"):
            if isinstance(value, bool):
                return bad()
            try:
                number = float(value)
            except (TypeError, ValueError):
                return bad()
            if t == "int":
                if number != int(number):
                    return bad()
                return int(number), None
            return number, None
        if t == "date":
            try:
                return date.fromisoformat(str(value)[:10]).isoformat(), None
            except ValueError:
                return bad()
        if t == "datetime":
            try:
                return format_datetime(parse_sf_datetime(str(value))), None
            except ValueError:
                return bad()
        if t in ("reference", "id"):
            norm = normalize_id(value)
            if norm is None:
                return None, SaveError(
                    "MALFORMED_ID", f"{fdef.label or name}: id value of incorrect type: {value}", [name]
                )
            if lax:
                return norm, None
            target = BY_PREFIX.get(norm[:3])
            if target is None or target.name not in fdef.reference_to:
                return None, SaveError(
                    "FIELD_INTEGRITY_EXCEPTION", f"{name}: id value of incorrect type: {value}", [name]
                )
            rec = self.tables[target.name].get(norm)
            if rec is None:
                return None, SaveError(
                    "INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}", [name]
                )
            if rec.get("IsDeleted"):
                return None, SaveError("ENTITY_IS_DELETED", f"entity is deleted: {value}", [name])
            return norm, None
        return value, None

    def _check_unique(self, obj: ObjectDef, rid: str | None, clean: dict) -> list[SaveError]:
        for f in obj.fields:
            if f.unique and clean.get(f.name) not in (None, ""):
                others = [i for i in self.find_by(obj, f, clean[f.name]) if i != rid]
                if others:
                    return [
                        SaveError(
                            "DUPLICATE_VALUE",
                            f"duplicate value found: {f.name} duplicates value on "
                            f"record with id: {others[0]}",
                            [],
                        )
                    ]
        return []

    def _derive(self, obj: ObjectDef, rec: dict) -> None:
        if obj.name in ("Contact", "User"):
            rec["Name"] = " ".join(p for p in (rec.get("FirstName"), rec.get("LastName")) if p)
        elif obj.name == "PricebookEntry":
            product = self.get(rec["Product2Id"], include_deleted=True) or {}
            rec["Name"], rec["ProductCode"] = product.get("Name"), product.get("ProductCode")
        elif obj.name == "Order":
            rec["StatusCode"] = ORDER_STATUS_CATEGORY.get(rec.get("Status") or "", "Draft")
            if not rec.get("OrderNumber"):
                n = self.counters.get("order_number", 100) + 1
                self.counters["order_number"] = n
                rec["OrderNumber"] = f"{n:08d}"
            rec.setdefault("TotalAmount", 0.0)
            if rec["TotalAmount"] is None:
                rec["TotalAmount"] = 0.0
        elif obj.name == "OrderItem":
            rec["TotalPrice"] = round(float(rec["Quantity"] or 0) * float(rec["UnitPrice"] or 0), 2)
            if not rec.get("OrderItemNumber"):
                n = self.counters.get("order_item_number", 0) + 1
                self.counters["order_item_number"] = n
                rec["OrderItemNumber"] = f"{n:010d}"

    def _after_write(self, obj: ObjectDef, rec: dict) -> None:
        if obj.name == "OrderItem":
            order = self.tables["Order"].get(rec["OrderId"])
            if order is not None:
                order["TotalAmount"] = round(
                    sum(i["TotalPrice"] or 0 for i in self._live_items(order["Id"])), 2
                )
                order["SystemModstamp"] = self._stamp()

    def _live_items(self, order_id: str) -> list[dict]:
        items = self.tables["OrderItem"]
        return [items[i] for i in self.items_by_order.get(order_id, ()) if not items[i]["IsDeleted"]]

    def order_item_count(self, order_id: str) -> int:
        return len(self._live_items(order_id))

    def standard_pricebook_id(self) -> str | None:
        return next((r["Id"] for r in self.tables["Pricebook2"].values() if r.get("IsStandard")), None)


def _activated(order: dict) -> bool:
    return ORDER_STATUS_CATEGORY.get(order.get("Status") or "") == "Activated"


def _no_rule(org: Org, obj: ObjectDef, old: dict | None, new: dict) -> list[SaveError]:
    return []


def _pricebook_entry_rule(org: Org, obj: ObjectDef, old: dict | None, new: dict) -> list[SaveError]:
    if old is not None:
        return []
    book = org.get(new["Pricebook2Id"])
    table = org.tables["PricebookEntry"]
    entries = [
        table[i] for i in org.entries_by_product.get(new["Product2Id"], ()) if not table[i]["IsDeleted"]
    ]
    for other in entries:
        if other["Pricebook2Id"] == new["Pricebook2Id"]:
            return [
                SaveError("DUPLICATE_VALUE", "This price definition already exists in this price book", [])
            ]
    if book and not book.get("IsStandard"):
        has_standard = any(
            e.get("IsActive") and (org.get(e["Pricebook2Id"]) or {}).get("IsStandard") for e in entries
        )
        if not has_standard:
            return [SaveError("STANDARD_PRICE_NOT_DEFINED", "No standard price defined for this product", [])]
    return []


def _order_rule(org: Org, obj: ObjectDef, old: dict | None, new: dict) -> list[SaveError]:
    if old is None:
        if _activated(new):
            return [
                SaveError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    "Status: an order must be created with a Draft status",
                    ["Status"],
                )
            ]
        return []
    items = org.order_item_count(old["Id"])
    if _activated(old):
        changed = [
            k for k in new if k not in ("Status", "Description", "SystemModstamp") and new[k] != old.get(k)
        ]
        if changed and _activated(new):
            return [
                SaveError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    "You can't edit an activated order; set it back to Draft first",
                    changed,
                )
            ]
    if new.get("Pricebook2Id") != old.get("Pricebook2Id") and items:
        return [
            SaveError(
                "FIELD_INTEGRITY_EXCEPTION",
                "Pricebook2Id: you can't change the price book of an order that has products",
                ["Pricebook2Id"],
            )
        ]
    if _activated(new) and not _activated(old):
        if not items:
            return [
                SaveError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    "Status: you can't activate an order that has no products",
                    ["Status"],
                )
            ]
        new["ActivatedDate"] = org._stamp()
    return []


def _order_item_rule(org: Org, obj: ObjectDef, old: dict | None, new: dict) -> list[SaveError]:
    order = org.get(new["OrderId"])
    if order is None:
        return [SaveError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["OrderId"])]
    if _activated(order):
        return [
            SaveError(
                "FIELD_INTEGRITY_EXCEPTION",
                "You can't add or change products on an activated order",
                ["OrderId"],
            )
        ]
    if old is None:
        entry = org.get(new["PricebookEntryId"])
        if not order.get("Pricebook2Id") or entry is None or entry["Pricebook2Id"] != order["Pricebook2Id"]:
            return [
                SaveError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    "field integrity exception: PricebookEntryId (pricebook entry is in a different "
                    "pricebook than the one assigned to the Order, or Order has no pricebook assigned)",
                    ["PricebookEntryId"],
                )
            ]
        if not entry.get("IsActive"):
            return [
                SaveError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    "field integrity exception: PricebookEntryId (pricebook entry is inactive)",
                    ["PricebookEntryId"],
                )
            ]
        new["Product2Id"] = entry["Product2Id"]
        new["ListPrice"] = entry["UnitPrice"]
    return []


_RULES = {"PricebookEntry": _pricebook_entry_rule, "Order": _order_rule, "OrderItem": _order_item_rule}
