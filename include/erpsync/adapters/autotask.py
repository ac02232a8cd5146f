"""Autotask PSA as a `SystemAdapter`: Companies and Contacts, with Salesforce identity in two UDFs.

Built on `erpsync.hooks.autotask.AutotaskHook` (zone discovery, auth headers, filters, paging, the
tenant's request budget); this module adds frames in and out, the UDF and reference columns a mapping
writes, and the rules of the retired Autotask-Salesforce extension (seed 004). Registry name "autotask".

Rules this module keeps:

1. **Identity lives in Autotask.** The Salesforce ids are kept in the UDFs "Salesforce Company ID" and
   "Salesforce Contact ID" (columns ``udf.SalesforceCompanyID`` / ``udf.SalesforceContactID``; any
   other UDF is ``udf.<Name>`` when its name has no spaces, or add an alias with ``udfs=``). The first
   `describe` of Companies or Contacts creates the flow's UDF through ``UserDefinedFieldDefinitions``
   when it is missing (the extension's setup: "two UDFs are created when you click Save").
2. **References resolve through the referenced record's identity.** ``parent.SalesforceCompanyID``
   (Companies) and ``company.SalesforceCompanyID`` (Contacts) hold the *Salesforce* id of the parent
   company; the adapter writes ``parentCompanyID`` / ``companyID`` with the Autotask company whose UDF
   holds it, and reads them back the same way, so verify and the plan compare like with like. A
   reference no Autotask company holds yet is refused for that row (``PARENT_NOT_FOUND``,
   ``COMPANY_NOT_FOUND``: quarantined, retried next run), never written as empty.
3. **Parents before children; cycles refused.** Within one `upsert` call rows are written parents
   first (a child whose parent is in the same call waits for it); rows whose parents form a cycle are
   refused with ``PARENT_CYCLE``.
4. **Never posted twice.** Before creating, the call's identity values are looked up (one query per 500);
   a record that already holds the identity is updated instead. A create that fails in transit raises
   (the hook never resends it); the retried task looks the identity up first.
5. **Few calls.** Reads by key are ``in`` queries of 500 values (`AutotaskHook.query_in`), reference
   resolution is one query per 500 distinct ids, and created companies are remembered for the rest of
   the call; each record written is one call (Autotask has no batch write), a PATCH of the given fields.
   The upsert resolves references the run's plan read minutes before from the ledger (`recall_ids`,
   5 minutes; verify reads them back fresh); lookups read Resources once per task and Countries (Autotask's
   own list) from the ledger's day-long cache. Reads by identity before a create are always fresh.
6. **Picklists are lookups.** ``<Entity>.<picklistField>`` (e.g. ``Companies.companyType``) reads as a
   table of the *active* values (``value``, ``label``), so a mapping resolves labels against the
   tenant's own picklist (an inactive value cannot be set on a record).

7. **Clearing the UDF un-maps.** ``unmap_on_cleared_identity``: a company or contact whose Salesforce
   UDF a user cleared stays un-linked (`erpsync.plan`: neither re-linked by name nor created again)
   until the id is typed back into the UDF or `erpsync remap` is run (include/mappings/README.md).

Empty values are not sent (an update leaves the record's value alone; a create leaves it unset).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from erpsync.adapters.base import RESULT_COLUMNS, CallLog, FieldMeta, ObjectMeta, ReadWindow
from erpsync.errors import ConfigError, RecordError

if TYPE_CHECKING:
    import pandas as pd

    from erpsync.hooks.autotask import AutotaskHook

__all__ = ["COMPANY_UDF", "CONTACT_UDF", "ENTITIES", "AutotaskAdapter"]

COMPANY_UDF = "Salesforce Company ID"
CONTACT_UDF = "Salesforce Contact ID"
#: Column aliases for UDF names with spaces (mapping paths cannot hold spaces).
UDF_ALIASES = {"SalesforceCompanyID": COMPANY_UDF, "SalesforceContactID": CONTACT_UDF}
#: Batch size of key reads: Autotask allows 500 OR conditions per query (§4.1).
KEY_BATCH = 500


@dataclass(frozen=True)
class _Reference:
    """A column holding the identity (UDF value) of another record instead of its Autotask id."""

    column: str
    wire: str  # the id field written, e.g. parentCompanyID
    entity: str  # the referenced entity
    udf: str  # the referenced entity's identity UDF
    missing_code: str


@dataclass(frozen=True)
class _Entity:
    path: str
    modified: str
    udf_type: int  # UserDefinedFieldDefinitions.udfType (1 Company, 2 Contact)
    own_udf: str  # the identity UDF this flow creates when missing
    references: tuple[_Reference, ...] = ()


ENTITIES: dict[str, _Entity] = {
    "Companies": _Entity(
        "Companies",
        "lastTrackedModifiedDateTime",
        1,
        COMPANY_UDF,
        (
            _Reference(
                "parent.SalesforceCompanyID", "parentCompanyID", "Companies", COMPANY_UDF, "PARENT_NOT_FOUND"
            ),
        ),
    ),
    "Contacts": _Entity(
        "Contacts",
        "lastModifiedDate",
        2,
        CONTACT_UDF,
        (
            _Reference(
                "company.SalesforceCompanyID", "companyID", "Companies", COMPANY_UDF, "COMPANY_NOT_FOUND"
            ),
        ),
    ),
}
#: Read-only entities a mapping's lookups read whole.
READ_ONLY = {"Resources": None, "Countries": None}


def _clean(value: Any) -> Any:
    """Turn pandas/numpy scalars into plain values; NaN/NA become None."""
    if value is None:
        return None
    if type(value).__name__ in {"NAType", "NaTType"}:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 0) == 0:
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _blank(value: Any) -> bool:
    value = _clean(value)
    return value is None or (isinstance(value, str) and not value.strip())


def _udf_values(record: dict) -> dict[str, Any]:
    raw = record.get("userDefinedFields") or []
    if isinstance(raw, dict):
        return dict(raw)
    return {u.get("name"): u.get("value") for u in raw if isinstance(u, dict)}


class AutotaskAdapter:
    """Companies, Contacts, Resources, Countries and picklists of one Autotask tenant.

    :param conn_id: the ``autotask`` Airflow connection.
    :param udfs: extra column aliases, ``{"LeadSource": "Lead Source"}`` for ``udf.LeadSource``.
    :param create_udfs: create the flow's identity UDF when missing (default True).
    :param hook: an `AutotaskHook` to use instead of building one (tests, the demo).
    """

    name = "autotask"
    #: The extension's un-mapping: a cleared Salesforce UDF disassociates the pair for good (rule 7).
    unmap_on_cleared_identity = True

    def __init__(
        self,
        conn_id: str | None = "autotask_default",
        *,
        udfs: dict[str, str] | None = None,
        create_udfs: bool = True,
        hook: AutotaskHook | None = None,
    ) -> None:
        self.conn_id = conn_id or "autotask_default"
        self.aliases = {**UDF_ALIASES, **(udfs or {})}
        self.create_udfs = create_udfs
        self._hook = hook
        self.call_log = _UsageCallLog(self)
        self._meta: dict[str, ObjectMeta] = {}
        self._udf_names: dict[str, set[str]] = {}
        #: (entity, udf, value) -> Autotask id, learned from reads and creates in this adapter's life.
        self._ids: dict[tuple[str, str, str], int] = {}
        #: Whole read-only entities read in this adapter's life (Resources for several lookups).
        self._rows: dict[str, list[dict]] = {}
        #: What this adapter repaired in the tenant (`erpsync validate --fix` prints it).
        self.fixed: list[str] = []

    def usage(self) -> dict[str, Any]:
        """Every Autotask call this adapter's hook sent and the budget figures (`AutotaskHook.usage`)."""
        hook = self._hook if self._hook is not None else self.__dict__.get("hook")
        if hook is None:
            return {"system": "autotask", "calls": 0, "by_kind": {}}
        return hook.usage()

    @cached_property
    def hook(self) -> AutotaskHook:
        if self._hook is not None:
            return self._hook
        from erpsync.hooks.autotask import AutotaskHook

        return AutotaskHook(self.conn_id)

    # ---- columns ---------------------------------------------------------------------------------

    def udf_name(self, column: str) -> str | None:
        """Return the UDF a column names (``udf.SalesforceCompanyID`` -> "Salesforce Company ID"), else None."""
        if not column.startswith("udf."):
            return None
        alias = column[4:]
        return self.aliases.get(alias, alias)

    @staticmethod
    def _reference(obj: str, column: str) -> _Reference | None:
        entity = ENTITIES.get(obj)
        return next((r for r in entity.references if r.column == column), None) if entity else None

    # ---- metadata --------------------------------------------------------------------------------

    def check_connection(self) -> tuple[bool, str]:
        return self.hook.test_connection()

    def ensure_udfs(self, obj: str) -> list[str]:
        """Create the entity's identity UDF when the tenant lacks it; return the UDF names it has."""
        entity = ENTITIES[obj]
        with self.call_log.timed("udf_definitions", obj):
            names = {d.get("name") for d in self.hook.udf_definitions(obj)}
        if entity.own_udf not in names and self.create_udfs:
            with self.call_log.timed("create_udf", obj, rows=1):
                self.hook.create(
                    "UserDefinedFieldDefinitions",
                    {
                        "name": entity.own_udf,
                        "udfType": entity.udf_type,
                        "dataType": 1,  # String: Salesforce ids are 18 characters of text
                        "description": "Set by erpsync (sf_accounts_to_autotask); clear it to un-link the record",
                        "isActive": True,
                        "isRequired": False,
                    },
                )
            names.add(entity.own_udf)
            self.fixed.append(f"created the {obj} UDF {entity.own_udf!r}")
        self._udf_names[obj] = {n for n in names if n}
        return sorted(self._udf_names[obj])

    def describe(self, obj: str) -> ObjectMeta:
        if obj in self._meta:
            return self._meta[obj]
        _entity, picklist = self._split_picklist(obj)
        if picklist is not None:
            meta = ObjectMeta(
                obj,
                {
                    "value": FieldMeta("value", type="int", createable=False, updateable=False),
                    "label": FieldMeta("label", createable=False, updateable=False),
                },
                id_field="value",
            )
            self._meta[obj] = meta
            return meta
        if obj not in ENTITIES and obj not in READ_ONLY:
            raise ConfigError(
                f"the Autotask adapter knows {sorted([*ENTITIES, *READ_ONLY])} and '<Entity>.<picklist>', not {obj!r}"
            )
        with self.call_log.timed("describe", obj):
            raw = self.hook.entity_fields(obj)
        writable = obj in ENTITIES
        fields: dict[str, FieldMeta] = {}
        for f in raw:
            ro = bool(f.get("isReadOnly")) or not writable
            fields[f["name"]] = FieldMeta(
                f["name"],
                type=str(f.get("dataType") or "string"),
                length=int(f["length"]) if f.get("length") else None,
                required=bool(f.get("isRequired")) and writable,
                createable=not ro,
                updateable=not ro,
            )
        if obj in ENTITIES:
            known = self._udf_names.get(obj) or set(self.ensure_udfs(obj))
            for alias, name in self.aliases.items():
                if name in known:
                    fields[f"udf.{alias}"] = FieldMeta(f"udf.{alias}")
            for name in known:
                if " " not in name:
                    fields.setdefault(f"udf.{name}", FieldMeta(f"udf.{name}"))
            for ref in ENTITIES[obj].references:
                wire = fields.get(ref.wire)
                fields[ref.column] = FieldMeta(ref.column, required=bool(wire and wire.required))
                if wire is not None:
                    # Written through the reference column; required-ness moves there.
                    fields[ref.wire] = FieldMeta(ref.wire, type=wire.type, required=False)
        meta = ObjectMeta(
            obj, fields, id_field="id", modified_field=ENTITIES[obj].modified if obj in ENTITIES else None
        )
        self._meta[obj] = meta
        return meta

    @staticmethod
    def _split_picklist(obj: str) -> tuple[str, str | None]:
        entity, _, field = obj.partition(".")
        return (entity, field) if field else (obj, None)

    # ---- reading ---------------------------------------------------------------------------------

    def _wire_fields(self, obj: str, columns: Iterable[str] | None) -> list[str] | None:
        if columns is None:
            return None
        out = ["id"]
        for c in columns:
            ref = self._reference(obj, c)
            if self.udf_name(c) is not None:
                out.append("userDefinedFields")
            elif ref is not None:
                out.append(ref.wire)
            else:
                out.append(c)
        return list(dict.fromkeys(out))

    def _frame(self, obj: str, records: list[dict], columns: list[str] | None) -> pd.DataFrame:
        import pandas as pd

        refs = ENTITIES[obj].references if obj in ENTITIES else ()
        wanted_refs = [r for r in refs if columns is None or r.column in columns]
        back: dict[str, dict[int, Any]] = {}
        for ref in wanted_refs:
            ids = {int(r[ref.wire]) for r in records if not _blank(r.get(ref.wire))}
            back[ref.column] = self._identity_of(ref.entity, ref.udf, ids)
        rows = []
        for rec in records:
            udfs = _udf_values(rec)
            row = {k: v for k, v in rec.items() if k != "userDefinedFields"}
            for alias, name in self.aliases.items():
                if name in udfs:
                    row[f"udf.{alias}"] = udfs[name]
            for name, value in udfs.items():
                if name and " " not in name:
                    row[f"udf.{name}"] = value
            for ref in wanted_refs:
                rid = rec.get(ref.wire)
                row[ref.column] = None if _blank(rid) else back[ref.column].get(int(rid))
            rows.append(row)
        frame = pd.DataFrame(rows)
        if columns is not None:
            keep = list(dict.fromkeys(["id", *columns]))
            for c in keep:
                if c not in frame.columns:
                    frame[c] = None
            frame = frame[keep]
        return frame

    def _identity_of(self, entity: str, udf: str, ids: set[int]) -> dict[int, Any]:
        """Return Autotask id -> the record's `udf` value for `ids` (one query per 500)."""
        out: dict[int, Any] = {}
        if not ids:
            return out
        with self.call_log.timed("resolve", entity, rows=len(ids)):
            for rec in self.hook.query_in(entity, "id", sorted(ids), fields=["id", "userDefinedFields"]):
                value = _udf_values(rec).get(udf)
                out[int(rec["id"])] = value
                if not _blank(value):
                    self._ids[(entity, udf, str(value))] = int(rec["id"])
        self.hook.remember_ids(entity, udf, {str(v): i for i, v in out.items() if not _blank(v)})
        return out

    def _ids_by_identity(self, entity: str, udf: str, values: Iterable[Any]) -> dict[str, list[int]]:
        """Return identity value -> Autotask ids holding it in `udf` (one query per 500 values)."""
        from erpsync.hooks.autotask import in_

        wanted = sorted({str(_clean(v)) for v in values if not _blank(v)})
        found: dict[str, list[int]] = {}
        for start in range(0, len(wanted), KEY_BATCH):
            part = wanted[start : start + KEY_BATCH]
            with self.call_log.timed("read_by_identity", entity, rows=len(part)):
                for rec in self.hook.query(
                    entity, [{**in_(udf, part), "udf": True}], fields=["id", "userDefinedFields"]
                ):
                    value = _udf_values(rec).get(udf)
                    if not _blank(value):
                        found.setdefault(str(value), []).append(int(rec["id"]))
        unique = {value: ids[0] for value, ids in found.items() if len(ids) == 1}
        for value, rid in unique.items():
            self._ids[(entity, udf, value)] = rid
        self.hook.remember_ids(entity, udf, unique)
        return found

    def read(
        self,
        obj: str,
        *,
        window: ReadWindow | None = None,
        columns: list[str] | None = None,
        chunk_rows: int = 50_000,
    ) -> Iterator[pd.DataFrame]:
        import pandas as pd

        from erpsync.hooks.autotask import gte, lt

        entity, picklist = self._split_picklist(obj)
        if picklist is not None:
            with self.call_log.timed("picklist", obj):
                values = self.hook.picklist(entity, picklist, active_only=True)
            frame = pd.DataFrame({"value": list(values.values()), "label": list(values)})
            yield frame[list(dict.fromkeys(["value", *(columns or ["label"])]))]
            return
        meta = self.describe(obj)
        if obj in READ_ONLY and window is None:
            yield self._read_reference(obj, meta, columns)
            return
        flt = []
        if window is not None and meta.modified_field:
            if window.start is not None:
                flt.append(gte(meta.modified_field, window.start))
            if window.end is not None:
                flt.append(lt(meta.modified_field, window.end))
        batch: list[dict] = []
        with self.call_log.timed("read", obj) as entry:
            for page in self.hook.query_pages(obj, flt or None, fields=self._wire_fields(obj, columns)):
                batch.extend(page)
                entry["rows"] += len(page)
                if len(batch) >= chunk_rows:
                    yield self._frame(obj, batch[:chunk_rows], columns)
                    batch = batch[chunk_rows:]
        if batch or not entry["rows"]:
            yield self._frame(obj, batch, columns)

    def _read_reference(self, obj: str, meta: ObjectMeta, columns: list[str] | None) -> pd.DataFrame:
        """A lookup's read of a read-only entity: Countries from the ledger's day-long cache (Autotask's
        own list), Resources once per task whatever the columns (people change: never across runs)."""
        wanted = list(dict.fromkeys(["id", *(columns or [])]))
        unknown = [c for c in wanted if c not in meta.fields and c != "id"]
        if columns is not None and unknown:
            raise ConfigError(f"Autotask {obj} has no field(s) {', '.join(unknown)}")
        with self.call_log.timed("read", obj) as entry:
            if obj == "Countries":
                records = self.hook.reference_rows(obj, wanted if columns is not None else list(meta.fields))
            else:
                if obj not in self._rows:
                    self._rows[obj] = [r for page in self.hook.query_pages(obj) for r in page]
                records = self._rows[obj]
            entry["rows"] = len(records)
        return self._frame(obj, records, columns)

    def read_by_keys(
        self,
        obj: str,
        field: str,
        keys: Iterable[Any],
        *,
        columns: list[str] | None = None,
        casefold: bool = False,
    ) -> pd.DataFrame:
        """Return the records whose `field` is one of `keys`; UDF and reference columns work too.

        Autotask compares text case-insensitively, so `casefold` needs nothing more here (the planner
        compares again anyway).
        """
        from erpsync.hooks.autotask import in_

        wanted = list(dict.fromkeys(str(_clean(k)).strip() for k in keys if not _blank(k)))
        cols = list(dict.fromkeys([*(columns or []), field]))
        fields = self._wire_fields(obj, cols)
        records: list[dict] = []
        udf = self.udf_name(field)
        ref = self._reference(obj, field)
        with self.call_log.timed("read_by_keys", obj, rows=len(wanted)):
            if ref is not None:
                targets = self._ids_by_identity(ref.entity, ref.udf, wanted)
                ids = sorted({i for v in targets.values() for i in v})
                records = list(self.hook.query_in(obj, ref.wire, ids, fields=fields, chunk=KEY_BATCH))
            elif udf is not None:
                for start in range(0, len(wanted), KEY_BATCH):
                    part = wanted[start : start + KEY_BATCH]
                    records.extend(self.hook.query(obj, [{**in_(udf, part), "udf": True}], fields=fields))
            else:
                values: list[Any] = wanted
                if field == "id" or field.endswith("ID"):
                    values = [int(float(v)) for v in wanted]
                records = list(self.hook.query_in(obj, field, values, fields=fields, chunk=KEY_BATCH))
        return self._frame(obj, records, cols)

    # ---- writing ---------------------------------------------------------------------------------

    def upsert(self, obj: str, rows: pd.DataFrame, *, identity: str) -> pd.DataFrame:
        """Create or update each row (one call each), parents first; see the module docstring."""
        import pandas as pd

        if obj not in ENTITIES:
            raise ConfigError(f"the Autotask adapter writes {sorted(ENTITIES)}, not {obj!r}")
        self.describe(obj)
        entity = ENTITIES[obj]
        id_udf = self.udf_name(identity)
        if id_udf is None:
            raise ConfigError(
                f"the identity of Autotask {obj} must be a UDF column (udf.<Name>), got {identity!r}"
            )
        records = [{k: _clean(v) for k, v in r.items()} for r in rows.to_dict("records")]
        results: list[dict | None] = [None] * len(records)
        # Who already holds each identity (a record linked earlier, or written by an interrupted try).
        unresolved = [r.get(identity) for r in records if _blank(r.get("_target_id"))]
        holders = self._ids_by_identity(obj, id_udf, unresolved)
        # References known up front; rows of this call that create a parent are resolved as they go.
        # Pairs the run's plan read minutes ago are used as they are (`AutotaskHook.recall_ids`): verify
        # reads every written reference back, fresh.
        for ref in entity.references:
            values = {str(r[ref.column]) for r in records if not _blank(r.get(ref.column))}
            unknown = [v for v in values if (ref.entity, ref.udf, v) not in self._ids]
            for value, rid in self.hook.recall_ids(ref.entity, ref.udf, unknown).items():
                self._ids[(ref.entity, ref.udf, value)] = rid
            unknown = [v for v in unknown if (ref.entity, ref.udf, v) not in self._ids]
            self._ids_by_identity(ref.entity, ref.udf, unknown)
        with self.call_log.timed("upsert", obj, rows=len(records)):
            for i in self._order(obj, records, identity, results):
                results[i] = self._write_one(obj, records[i], identity, id_udf, holders)
        return pd.DataFrame(results, columns=RESULT_COLUMNS)

    def _order(self, obj: str, records: list[dict], identity: str, results: list) -> list[int]:
        """Return row positions parents first; refuse (in `results`) the rows caught in a parent cycle."""
        refs = [r for r in ENTITIES[obj].references if r.entity == obj]
        if not refs:
            return list(range(len(records)))
        ref = refs[0]
        position = {str(r.get(identity)): i for i, r in enumerate(records) if not _blank(r.get(identity))}
        parent_of = {
            i: position.get(str(r.get(ref.column)))
            for i, r in enumerate(records)
            if not _blank(r.get(ref.column))
        }
        order: list[int] = []
        state: dict[int, int] = {}  # 1 visiting, 2 done

        def visit(i: int) -> None:
            chain = []
            while i is not None and state.get(i) is None:
                state[i] = 1
                chain.append(i)
                i = parent_of.get(i)
            if i is not None and state.get(i) == 1:  # back to a row of this chain: a cycle
                cycle = chain[chain.index(i) :]
                names = " -> ".join(str(records[c].get(identity)) for c in [*cycle, i])
                for c in cycle:
                    results[c] = _result(
                        records[c].get("_source_key"),
                        None,
                        "failed",
                        f"parent companies form a cycle ({names}); break it in Salesforce",
                        "PARENT_CYCLE",
                    )
            for c in reversed(chain):
                state[c] = 2
                if results[c] is None and (parent_of.get(c) is None or results[parent_of[c]] is None):
                    order.append(c)
                elif results[c] is None:
                    results[c] = _result(
                        records[c].get("_source_key"),
                        None,
                        "failed",
                        f"its parent company ({records[c].get(ref.column)}) could not be written in this run",
                        "PARENT_NOT_WRITTEN",
                    )

        for i in range(len(records)):
            visit(i)
        return order

    def _write_one(
        self, obj: str, row: dict, identity: str, id_udf: str, holders: dict[str, list[int]]
    ) -> dict:
        key = row.get("_source_key")
        target_id = row.get("_target_id")
        ident = None if _blank(row.get(identity)) else str(row.get(identity))
        if _blank(target_id) and ident is not None:
            held = holders.get(ident, [])
            if len(held) > 1:
                return _result(
                    key,
                    None,
                    "failed",
                    f"{len(held)} Autotask {obj} hold {id_udf} {ident}: {held}",
                    "DUPLICATE_IDENTITY",
                )
            target_id = held[0] if held else None
        record: dict[str, Any] = {}
        udfs: dict[str, Any] = {}
        for column, value in row.items():
            if column.startswith("_") or _blank(value):
                continue
            ref = self._reference(obj, column)
            udf = self.udf_name(column)
            if ref is not None:
                rid = self._ids.get((ref.entity, ref.udf, str(value)))
                if rid is None:
                    what = "parent company" if ref.entity == obj else "company"
                    return _result(
                        key,
                        None,
                        "failed",
                        f"its {what} (Salesforce id {value}) is not in Autotask yet; retried next run",
                        ref.missing_code,
                    )
                record[ref.wire] = rid
            elif udf is not None:
                udfs[udf] = value
            else:
                record[column] = value
        if udfs:
            record["userDefinedFields"] = udfs
        try:
            if _blank(target_id):
                new_id = self.hook.create(obj, record)
                if ident is not None:
                    self._ids[(obj, id_udf, ident)] = new_id
                return _result(key, new_id, "created")
            record["id"] = int(float(target_id))
            self.hook.update(obj, record)
            if ident is not None:
                self._ids[(obj, id_udf, ident)] = record["id"]
            return _result(key, record["id"], "updated")
        except RecordError as exc:
            return _result(
                key, None if _blank(target_id) else target_id, "failed", exc.message, _code(exc.message)
            )


class _UsageCallLog(CallLog):
    """The adapter's call log; its summary also carries the hook's real HTTP calls (``api``).

    The log's own entries are adapter operations (an upsert of 500 rows is one entry, but 500 calls),
    so run reports count Autotask calls from ``api``, which every task's step summary carries.
    """

    def __init__(self, adapter: AutotaskAdapter) -> None:
        super().__init__()
        self._adapter = adapter

    def summary(self, slowest: int = 5) -> dict[str, Any]:
        return {**super().summary(slowest), "api": self._adapter.usage()}


def _code(message: str) -> str:
    text = message.lower()
    for needle, code in (
        ("required", "REQUIRED_FIELD_MISSING"),
        ("maximum length", "STRING_TOO_LONG"),
        ("exceeds", "STRING_TOO_LONG"),
        ("picklist", "INVALID_PICKLIST_VALUE"),
        ("unable to find", "INVALID_FIELD"),
        ("permission", "INSUFFICIENT_ACCESS"),
    ):
        if needle in text:
            return code
    return "REJECTED"


def _result(
    key: Any, target_id: Any, action: str, error: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {
        "_source_key": key,
        "target_id": None if target_id is None else str(target_id),
        "action": action,
        "error": error,
        "error_code": code,
        "retriable": False,
    }
