"""The Salesforce system adapter: `SystemAdapter` on top of `erpsync.hooks.salesforce.SalesforceHook`.

What the flows need from Salesforce, and how this adapter gives it:

- **Reads** (`read`, `read_by_keys`) run SOQL through the hook's streamed paging. Relationship paths
  (``Owner.FirstName``, ``BillToContact.Email``) are selected as such and flattened into dotted column
  names. A window becomes ``SystemModstamp >= start AND SystemModstamp < end``. A column the org lacks is
  a `ConfigError` naming it (unless listed in ``optional_fields``, then it comes back empty).
- **Virtual columns** where one Salesforce record is not enough:
  ``Order.OrderItems`` holds each order's lines as a list of dicts (one extra SOQL per chunk of orders,
  ``WHERE OrderId IN (...)``, never one call per order), and ``Product2`` reads and writes
  ``PricebookEntry.<field>`` columns, which stand for the product's entry in the STANDARD price book.
- **Writes** (`upsert`) go through sObject Collections (200 per call) or Bulk API 2.0 from
  ``bulk_threshold`` rows on. A row with `_target_id` (or an ``Id`` column when the identity is ``Id``)
  updates that record by Id and never creates one. Otherwise: when the identity is an External ID field
  the hook upserts by it; when it is not (``ProductCode`` is a plain field in Salesforce), the adapter
  looks the values up with one SOQL per batch and updates by Id or creates. Absent and NaN cells are not
  written, so an update never clears a field by accident.
- **Per-record refusals** (STRING_TOO_LONG, DUPLICATE_VALUE, UNABLE_TO_LOCK_ROW left after the hook's
  retries, a failed price book entry) come back as result rows with `error`, `error_code` and
  `retriable`; failures of whole calls raise the `erpsync.errors` classes the hook chose.

Every HTTP round trip the adapter makes is one entry in `call_log` (a Bulk job is one entry carrying
``api_calls``), so run reports show calls used and the slowest calls.

Options (keyword arguments of the constructor, e.g. an operator's ``adapter_kwargs``):

``filters``
    ``{"Status": ["Activated"]}`` (every object `read` reads) or ``{"Order": {"Status": [...]}}`` (per
    object): only records whose field is one of the values are read. A value may be a list or a
    comma-separated string (what a templated DAG param renders to). `read(filters=...)` overrides it.
``optional_fields``
    Fields that may be missing in the org (``["Email", "Tax_Rate__c"]``): read as empty, with a warning,
    instead of a `ConfigError`. Writes never drop a field silently.
``line_columns``
    ``{"OrderItems": ["Id", "Quantity", "Product2.ProductCode", ...]}``: the fields of each line dict.
    Default: every OrderItem field the org has, plus ``Product2.ProductCode`` and ``Product2.Name``.
``bulk_threshold``
    Writes of at least this many rows use Bulk API 2.0 (default: the connection extra, else 2000).
``standard_pricebook_id``
    Skip the lookup of the standard price book.
Any other option is passed to `SalesforceHook` (``api_version``, ``timeout``, ``max_retries``,
``retry_base_delay``, ``bulk_poll_interval``, ``bulk_timeout``, ``api_usage_slowdown``, ...).

Build it inside a task: ``get_adapter("erpsync.adapters.salesforce:SalesforceAdapter", conn_id=...)``, or
by the registry name ``salesforce`` once `erpsync.adapters.registry` lists it.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from erpsync.adapters.base import RESULT_COLUMNS, CallLog, FieldMeta, ObjectMeta, ReadWindow
from erpsync.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from erpsync.hooks.salesforce import RecordResult, SalesforceHook

__all__ = ["SalesforceAdapter"]

log = logging.getLogger(__name__)

#: Child relationships this adapter reads as a list-of-dicts column: (parent, column) -> (child, parent field).
CHILDREN: dict[tuple[str, str], tuple[str, str, str]] = {
    ("order", "orderitems"): ("OrderItem", "OrderId", "OrderItems")
}
#: Extra line fields read by default besides the child object's own fields.
DEFAULT_LINE_PATHS: dict[str, tuple[str, ...]] = {"OrderItem": ("Product2.ProductCode", "Product2.Name")}
#: Product2 columns with this prefix are the product's standard PricebookEntry fields.
PRICE_PREFIX = "PricebookEntry."
#: Raw characters of IN-list literals per SOQL statement. The REST query travels in the URL, and
#: Salesforce answers 414 above 16,384 bytes; ids URL-encode to about 1.4x, so this keeps well below it.
IN_LIST_CHARS = 8000
COLLECTION_SIZE = 200
_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_STRING_TYPES = frozenset(
    {
        "string",
        "textarea",
        "email",
        "phone",
        "url",
        "picklist",
        "multipicklist",
        "combobox",
        "encryptedstring",
    }
)
_NUMBER_TYPES = frozenset({"double", "currency", "percent", "int", "long"})
_UNQUERYABLE = frozenset({"address", "location", "base64"})
_ADAPTER_OPTIONS = frozenset(
    {"filters", "optional_fields", "line_columns", "bulk_threshold", "standard_pricebook_id", "name"}
)


def _missing(value: Any) -> bool:
    """True for None, NaN, NA and NaT (a cell the row does not carry)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if type(value).__name__ in {"NAType", "NaTType"}:
        return True
    try:
        return bool(value != value)  # numpy NaN scalars
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    """Turn numpy/pandas scalars into plain Python values."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 0) == 0:
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return value


def _soql_datetime(moment: datetime) -> str:
    """Return a SOQL datetime literal in UTC, rounded UP to the millisecond SystemModstamp carries.

    Rounding up keeps the half-open window exact: a stamp (ms precision) is >= start exactly when it is
    >= start rounded up to the next millisecond.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    extra = moment.microsecond % 1000
    if extra:
        moment += timedelta(microseconds=1000 - extra)
    # Whole seconds (what data intervals are) go out in the documented form, milliseconds only when set.
    millis = f".{moment.microsecond // 1000:03d}" if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + millis + "Z"


def _quote(value: str) -> str:
    escaped = (
        value.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f"'{escaped}'"


def _get(record: dict | None, name: str) -> Any:
    """Read `name` from a Salesforce JSON record, case-insensitively (Salesforce answers in its own case)."""
    if not isinstance(record, dict):
        return None
    if name in record:
        return record[name]
    low = name.lower()
    for key, value in record.items():
        if key.lower() == low:
            return value
    return None


def _walk(record: dict, path: str) -> Any:
    current: Any = record
    for part in path.split("."):
        current = _get(current, part)
        if current is None:
            return None
    return current


def _split_options(value: Any, where: str) -> list[Any]:
    """Return a list from a list, a JSON or Python list literal, or a comma-separated string.

    A DAG param rendered by a (non-native) Jinja template arrives as ``"['Activated', 'Paid']"``.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("["):
            return [v.strip() for v in text.split(",") if v.strip()]
        import ast
        import json

        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError) as exc:
                raise ConfigError(f"cannot read {text!r} as a list: {exc}", where=where) from exc
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


class SalesforceAdapter:
    """Salesforce as a `SystemAdapter` (source and target), through a ``salesforce`` connection.

    :param conn_id: the Airflow connection id (type ``salesforce``).
    :param options: see the module docstring (``filters``, ``optional_fields``, ``line_columns``,
        ``bulk_threshold``, ``standard_pricebook_id``; anything else goes to `SalesforceHook`).
    """

    def __init__(self, conn_id: str | None = "salesforce_default", **options: Any) -> None:
        from erpsync.hooks.salesforce import SalesforceHook

        self.conn_id = conn_id or "salesforce_default"
        self.name = str(options.pop("name", "salesforce"))
        self.call_log = CallLog()
        self.filters = self._check_filters(options.pop("filters", None) or {})
        self.optional_fields = {
            str(f).lower() for f in _split_options(options.pop("optional_fields", []), "")
        }
        line_columns = options.pop("line_columns", None) or {}
        if not isinstance(line_columns, dict):
            raise ConfigError(
                "line_columns must map a child column (OrderItems) to a list of fields",
                where=f"adapter {self.name}",
            )
        self.line_columns = {
            str(k).lower(): _split_options(v, "line_columns") for k, v in line_columns.items()
        }
        self._bulk_threshold = options.pop("bulk_threshold", None)
        self._standard_pricebook = options.pop("standard_pricebook_id", None)
        try:
            self.hook: SalesforceHook = SalesforceHook(self.conn_id, **options)
        except TypeError as exc:
            known = sorted(_ADAPTER_OPTIONS | {"api_version", "timeout", "max_retries", "retry_base_delay"})
            raise ConfigError(
                f"unknown SalesforceAdapter option: {exc}; options are {', '.join(known)} and the hook's "
                "(bulk_poll_interval, bulk_timeout, api_usage_slowdown, api_usage_stop, throttle_seconds)",
                where=f"adapter {self.name}",
            ) from exc
        self._raw: dict[str, dict] = {}
        self._meta: dict[str, ObjectMeta] = {}

    def _check_filters(self, filters: Any) -> dict[str, Any]:
        if not isinstance(filters, dict):
            raise ConfigError(
                f"filters must be a dict such as {{'Status': ['Activated']}}, got {type(filters).__name__}",
                where=f"adapter {self.name}",
            )
        return filters

    def close(self) -> None:
        """Close the hook's HTTP connections."""
        self.hook.close()

    # ---- metadata --------------------------------------------------------------------------------

    def _describe_raw(self, obj: str) -> dict:
        key = obj.lower()
        if key not in self._raw:
            with self.call_log.timed("describe", obj) as entry:
                self._raw[key] = self.hook.describe(obj)
                entry["rows"] = len(self._raw[key].get("fields", []))
        return self._raw[key]

    def _fields(self, obj: str) -> dict[str, dict]:
        """Field describes of `obj` by lower-case name."""
        return {f["name"].lower(): f for f in self._describe_raw(obj)["fields"]}

    def _relationships(self, obj: str) -> dict[str, dict]:
        return {
            f["relationshipName"].lower(): f
            for f in self._describe_raw(obj)["fields"]
            if f.get("relationshipName")
        }

    def check_connection(self) -> tuple[bool, str]:
        with self.call_log.timed("check_connection", "-"):
            ok, message = self.hook.test_connection()
        return ok, f"{self.name}: {message}"

    def describe(self, obj: str) -> ObjectMeta:
        """Return `obj`'s fields as Salesforce describes them, plus this adapter's virtual columns.

        Relationship names (``Owner``) appear as read-only fields of type ``relationship`` so dotted source
        columns validate; ``Order`` gains ``OrderItems`` (type ``children``) and ``Product2`` gains the
        standard price book entry's fields as ``PricebookEntry.<field>``.
        """
        key = obj.lower()
        if key in self._meta:
            return self._meta[key]
        raw = self._describe_raw(obj)
        fields: dict[str, FieldMeta] = {}
        for f in raw["fields"]:
            fields[f["name"]] = _field_meta(f["name"], f)
        for f in raw["fields"]:
            rel = f.get("relationshipName")
            if rel and rel not in fields:
                fields[rel] = FieldMeta(rel, "relationship", None, False, False, False, False)
        for (parent, _column), (_child, _parent_field, name) in CHILDREN.items():
            if parent == key:
                fields[name] = FieldMeta(name, "children", None, False, False, False, False)
        if key == "product2":
            for f in self._describe_raw("PricebookEntry")["fields"]:
                if f["createable"] or f["updateable"] or f["name"] == "Id":
                    if f["name"] in ("Pricebook2Id", "Product2Id"):
                        continue  # the adapter sets these itself
                    meta = _field_meta(PRICE_PREFIX + f["name"], f)
                    # The entry is created with the product: its price is only required when a price is given.
                    fields[meta.name] = FieldMeta(
                        meta.name, meta.type, meta.length, False, meta.createable, meta.updateable, False
                    )
        names = {f["name"] for f in raw["fields"]}
        modified = (
            "SystemModstamp"
            if "SystemModstamp" in names
            else ("LastModifiedDate" if "LastModifiedDate" in names else None)
        )
        meta = ObjectMeta(raw.get("name", obj), fields, id_field="Id", modified_field=modified)
        self._meta[key] = meta
        return meta

    # ---- column planning -------------------------------------------------------------------------

    def _plan_columns(self, obj: str, columns: list[str] | None) -> tuple[list[str], dict[str, Any]]:
        """Split requested columns into SOQL paths and virtual columns; return (soql_fields, plan).

        `plan` maps each requested column to how it is filled: ("field", path), ("null", None),
        ("children", child spec) or ("price", entry field).
        """
        fields = self._fields(obj)
        rels = self._relationships(obj)
        if columns is None:
            columns = [f["name"] for f in fields.values() if f["type"] not in _UNQUERYABLE]
        soql: list[str] = ["Id"]
        plan: dict[str, Any] = {}
        unknown = []
        for col in dict.fromkeys(columns):
            low = col.lower()
            child = CHILDREN.get((obj.lower(), low))
            if child is not None:
                plan[col] = ("children", child)
                continue
            if obj.lower() == "product2" and col.startswith(PRICE_PREFIX):
                entry_field = col[len(PRICE_PREFIX) :]
                if entry_field.lower() not in self._fields("PricebookEntry"):
                    unknown.append(col)
                    continue
                plan[col] = ("price", self._fields("PricebookEntry")[entry_field.lower()]["name"])
                continue
            if "." in col:
                head, _, rest = col.partition(".")
                rel = rels.get(head.lower())
                if rel is None:
                    unknown.append(col)
                    continue
                path = f"{rel['relationshipName']}.{rest}"
                soql.append(path)
                plan[col] = ("field", path)
                continue
            fdef = fields.get(low)
            if fdef is None:
                if low in self.optional_fields:
                    log.warning("%s has no field %s; reading it as empty (optional_fields)", obj, col)
                    plan[col] = ("null", None)
                    continue
                unknown.append(col)
                continue
            soql.append(fdef["name"])
            plan[col] = ("field", fdef["name"])
        if unknown:
            raise ConfigError(
                f"Salesforce {obj} has no field(s) {', '.join(unknown)} (not in its describe; add the field "
                "to the org, or list it in the adapter's optional_fields to read it as empty)",
                where=f"{self.name}.{obj}",
                details={"fields": unknown},
            )
        return list(dict.fromkeys(soql)), plan

    def _where_filters(self, obj: str, filters: dict[str, Any] | None) -> list[str]:
        """Return SOQL conditions for `filters` ({field: values} or {object: {field: values}})."""
        if not filters:
            return []
        flat: dict[str, Any] = {}
        for k, v in filters.items():
            if isinstance(v, dict):
                if k.lower() == obj.lower():
                    flat.update(v)
            else:
                flat[k] = v
        fields = self._fields(obj)
        out = []
        for name, values in flat.items():
            fdef = fields.get(str(name).lower())
            if fdef is None:
                raise ConfigError(
                    f"filter on {name!r}: Salesforce {obj} has no such field",
                    where=f"{self.name}.{obj} filters",
                )
            wanted = _split_options(values, f"{self.name}.{obj} filters.{name}")
            if not wanted:
                raise ConfigError(
                    f"filter on {name!r} lists no values (would read nothing)",
                    where=f"{self.name}.{obj} filters",
                )
            literals = [_literal(fdef, v) for v in wanted if not _missing(v)]
            parts = [f"{fdef['name']} IN ({', '.join(literals)})"] if literals else []
            if any(_missing(v) for v in wanted):
                parts.append(f"{fdef['name']} = null")
            out.append(parts[0] if len(parts) == 1 else f"({' OR '.join(parts)})")
        return out

    # ---- reads -----------------------------------------------------------------------------------

    def _pages(self, soql: str, method: str, obj: str, batch_size: int | None = None) -> Iterator[list[dict]]:
        """Yield the query's pages, with one call-log entry per HTTP round trip.

        The hook's generator skips empty pages and ends without a call, so a round trip is logged when
        the hook's call counter moved, not per page.
        """
        pages = self.hook.query_batches(soql, batch_size=batch_size)
        while True:
            before = sum(self.hook.calls.values())
            started = time.perf_counter()
            page: list[dict] | None = None
            try:
                page = next(pages, None)
            finally:
                # Logged in `finally` so a call that raised still shows in the report (with its time).
                calls = sum(self.hook.calls.values()) - before
                if calls:
                    self.call_log.calls.append(
                        {
                            "method": method,
                            "object": obj,
                            "rows": 0 if page is None else len(page),
                            "seconds": round(time.perf_counter() - started, 6),
                            "api_calls": calls,
                        }
                    )
            if page is None:
                return
            yield page

    def read(
        self,
        obj: str,
        *,
        window: ReadWindow | None = None,
        columns: list[str] | None = None,
        chunk_rows: int = 50_000,
        filters: dict[str, Any] | None = None,
    ) -> Iterator[pd.DataFrame]:
        """Yield `obj`'s records modified in `window` (all when None), at most `chunk_rows` per frame.

        :param filters: ``{field: [values]}``; overrides the adapter's ``filters`` option.
        """
        if chunk_rows < 1:
            raise ConfigError(f"chunk_rows must be at least 1, got {chunk_rows}")
        meta = self.describe(obj)
        soql_fields, plan = self._plan_columns(obj, columns)
        where = []
        mod = meta.modified_field
        if window is not None and (window.start or window.end):
            if mod is None:
                raise ConfigError(
                    f"Salesforce {obj} has no SystemModstamp to window on", where=f"{self.name}.{obj}"
                )
            if window.start:
                where.append(f"{mod} >= {_soql_datetime(window.start)}")
            if window.end:
                where.append(f"{mod} < {_soql_datetime(window.end)}")
        where += self._where_filters(obj, self.filters if filters is None else filters)
        soql = f"SELECT {', '.join(soql_fields)} FROM {meta.name}"
        if where:
            soql += " WHERE " + " AND ".join(where)
        soql += f" ORDER BY {mod}, Id" if mod else " ORDER BY Id"
        out_columns = list(plan)
        buffer: list[dict] = []
        batch = max(200, min(2000, chunk_rows)) if chunk_rows < 2000 else None
        for page in self._pages(soql, "read", obj, batch):
            buffer.extend(page)
            while len(buffer) >= chunk_rows:
                head, buffer = buffer[:chunk_rows], buffer[chunk_rows:]
                yield self._frame(obj, head, plan, out_columns)
        if buffer:
            yield self._frame(obj, buffer, plan, out_columns)

    def read_by_keys(
        self,
        obj: str,
        field: str,
        keys: Iterable[Any],
        *,
        columns: list[str] | None = None,
        casefold: bool = False,
    ) -> pd.DataFrame:
        """Return the records whose `field` is one of `keys`, the Id always included.

        SOQL compares text case-insensitively, so the query returns a superset; the rows are then kept by
        exact value, or with `casefold` by trimmed, case-insensitive value. Keys that cannot be valid Ids
        are dropped for Id fields (Salesforce would fail the whole query on one of them).
        """
        import pandas as pd

        fields = self._fields(obj)
        fdef = fields.get(field.lower())
        if fdef is None:
            raise ConfigError(
                f"Salesforce {obj} has no field {field!r} to look records up by", where=f"{self.name}.{obj}"
            )
        wanted_cols = None if columns is None else list(dict.fromkeys(["Id", field, *columns]))
        soql_fields, plan = self._plan_columns(obj, wanted_cols)
        if wanted_cols is None:
            plan = {"Id": ("field", "Id"), **plan}

        numeric = fdef["type"] in _NUMBER_TYPES

        def norm(v: Any) -> str:
            v = _plain(v)
            if numeric:
                try:
                    return repr(float(v))  # 5, 5.0 and "5" are one key
                except (TypeError, ValueError):
                    return str(v)
            text = str(v)
            return " ".join(text.split()).casefold() if casefold else text

        values: list[Any] = []
        seen: set[str] = set()
        for k in keys:
            if _missing(k):
                continue
            k = _plain(k)
            text = " ".join(str(k).split()) if casefold and isinstance(k, str) else k
            if fdef["type"] in ("id", "reference") and not _ID.match(str(text)):
                log.warning("%s.%s: %r is not a Salesforce Id; it cannot match", obj, field, k)
                continue
            marker = norm(text).casefold()
            if marker not in seen:
                seen.add(marker)
                values.append(text)
        wanted = {norm(v) for v in values}
        records: list[dict] = []
        for group in _in_batches([_literal(fdef, v) for v in values]):
            soql = f"SELECT {', '.join(soql_fields)} FROM {self._describe_raw(obj).get('name', obj)}"
            soql += f" WHERE {fdef['name']} IN ({', '.join(group)})"
            for page in self._pages(soql, "read_by_keys", obj):
                records.extend(
                    r
                    for r in page
                    if not _missing(_get(r, fdef["name"])) and norm(_get(r, fdef["name"])) in wanted
                )
        out_columns = list(plan)
        if not records:
            return pd.DataFrame(columns=out_columns)
        return self._frame(obj, records, plan, out_columns, method="read_by_keys")

    def _frame(
        self, obj: str, records: list[dict], plan: dict[str, Any], columns: list[str], method: str = "read"
    ) -> pd.DataFrame:
        """Flatten records into the requested columns, filling virtual columns with extra queries."""
        import pandas as pd

        rows = [
            {col: _walk(rec, spec[1]) if spec[0] == "field" else None for col, spec in plan.items()}
            for rec in records
        ]
        ids = [str(_get(rec, "Id")) for rec in records]
        for col, (kind, spec) in plan.items():
            if kind == "children":
                lines = self._children(obj, col, spec, ids, method)
                for row, rid in zip(rows, ids, strict=True):
                    row[col] = lines.get(rid, [])
        price_cols = {col: spec for col, (kind, spec) in plan.items() if kind == "price"}
        if price_cols:
            entries = self._standard_entries(ids, method)
            for row, rid in zip(rows, ids, strict=True):
                entry = entries.get(rid)
                for col, entry_field in price_cols.items():
                    row[col] = None if entry is None else _get(entry, entry_field)
        return pd.DataFrame(rows, columns=columns)

    def _children(
        self, obj: str, column: str, spec: tuple[str, str, str], parent_ids: list[str], method: str
    ) -> dict[str, list[dict]]:
        """Read the child records of `parent_ids`, one SOQL per IN-list batch; return lists by parent id."""
        child, parent_field, _ = spec
        line_cols = self.line_columns.get(column.lower())
        if line_cols is None:
            child_fields = self._fields(child)
            line_cols = [f["name"] for f in child_fields.values() if f["type"] not in _UNQUERYABLE] + [
                p
                for p in DEFAULT_LINE_PATHS.get(child, ())
                if p.split(".")[0].lower() in self._relationships(child)
            ]
        soql_fields, plan = self._plan_columns(child, list(dict.fromkeys(line_cols)))
        soql_fields = list(dict.fromkeys([*soql_fields, parent_field]))
        out: dict[str, list[dict]] = {}
        for group in _in_batches([_quote(i) for i in parent_ids]):
            soql = f"SELECT {', '.join(soql_fields)} FROM {child} WHERE {parent_field} IN ({', '.join(group)}) ORDER BY {parent_field}, Id"
            for page in self._pages(soql, method, child):
                for rec in page:
                    line = {
                        col: _walk(rec, p) if kind == "field" else None for col, (kind, p) in plan.items()
                    }
                    out.setdefault(str(_get(rec, parent_field)), []).append(line)
        return out

    def _standard_pricebook_id(self) -> str:
        if self._standard_pricebook is None:
            soql = "SELECT Id FROM Pricebook2 WHERE IsStandard = true LIMIT 1"
            found = [r for page in self._pages(soql, "read", "Pricebook2") for r in page]
            if not found:
                raise ConfigError(
                    "the org has no standard price book (Pricebook2 with IsStandard = true)",
                    where=f"{self.name}.Pricebook2",
                )
            self._standard_pricebook = str(_get(found[0], "Id"))
        return str(self._standard_pricebook)

    def _standard_entries(self, product_ids: list[str], method: str) -> dict[str, dict]:
        """Return each product's standard PricebookEntry (Id, UnitPrice, IsActive, ...) by product id."""
        entry_fields = [
            f["name"] for f in self._fields("PricebookEntry").values() if f["type"] not in _UNQUERYABLE
        ]
        book = self._standard_pricebook_id()
        out: dict[str, dict] = {}
        ids = [i for i in dict.fromkeys(product_ids) if i and _ID.match(i)]
        for group in _in_batches([_quote(i) for i in ids]):
            soql = (
                f"SELECT {', '.join(entry_fields)} FROM PricebookEntry WHERE Pricebook2Id = {_quote(book)} "
                f"AND Product2Id IN ({', '.join(group)})"
            )
            for page in self._pages(soql, method, "PricebookEntry"):
                for rec in page:
                    out[str(_get(rec, "Product2Id"))] = rec
        return out

    # ---- writes ----------------------------------------------------------------------------------

    def upsert(self, obj: str, rows: pd.DataFrame, *, identity: str) -> pd.DataFrame:
        """Create or update `rows` in `obj`; return one result per row, in input order (`RESULT_COLUMNS`).

        Updates go by Id (`_target_id`, or the ``Id`` column when `identity` is ``Id``, which never
        creates). Other rows go by `identity`: an External ID field is upserted on; a plain field is looked
        up first, then updated by Id or created. On ``Product2``, ``PricebookEntry.*`` columns keep the
        product's standard price book entry in step afterwards.
        """
        import pandas as pd

        meta = self.describe(obj)
        fields = self._fields(obj)
        if identity.lower() not in fields:
            raise ConfigError(
                f"identity {identity!r}: Salesforce {obj} has no such field", where=f"{self.name}.{obj}"
            )
        ident = fields[identity.lower()]["name"]
        by_id = ident == "Id"
        is_product = obj.lower() == "product2"
        n = len(rows)
        results: list[dict | None] = [None] * n
        keys: list[Any] = [None] * n
        values: list[dict[str, Any]] = [{} for _ in range(n)]
        prices: list[dict[str, Any]] = [{} for _ in range(n)]
        target: list[str | None] = [None] * n
        for i, row in enumerate(rows.to_dict("records")):
            keys[i] = None if _missing(row.get("_source_key")) else _plain(row.get("_source_key"))
            tid = row.get("_target_id")
            target[i] = None if _missing(tid) or str(tid) == "" else str(_plain(tid))
            for col, val in row.items():
                if col.startswith("_") or _missing(val):
                    continue
                if is_product and col.startswith(PRICE_PREFIX):
                    prices[i][col[len(PRICE_PREFIX) :]] = _json_value(val, None)
                    continue
                fdef = fields.get(col.lower())
                values[i][fdef["name"] if fdef else col] = _json_value(val, fdef)
            if target[i] is None and values[i].get("Id"):
                target[i] = str(values[i]["Id"])  # an Id column names the record to update
            values[i].pop("Id", None)
            if by_id and target[i] is None:
                results[i] = _failed(
                    keys[i], None, "MISSING_ARGUMENT", f"{obj}: no Id to update (identity Id never creates)"
                )

        updates = [i for i in range(n) if results[i] is None and target[i] is not None]
        rest = [i for i in range(n) if results[i] is None and target[i] is None]
        creates: list[int] = []
        upserts: list[int] = []
        if rest:
            if fields[ident.lower()].get("externalId"):
                upserts = rest
            else:
                creates = self._resolve_by_identity(
                    obj, ident, fields[ident.lower()], rest, values, target, keys, results
                )
                updates += [i for i in rest if target[i] is not None and results[i] is None]
        written: dict[int, RecordResult] = {}
        for op, idx in (("update", updates), ("insert", creates), ("upsert", upserts)):
            if not idx:
                continue
            records = [{**values[i], "Id": target[i]} if op == "update" else dict(values[i]) for i in idx]
            for i, res in zip(
                idx, self._write(meta.name, op, records, ident if op == "upsert" else None), strict=True
            ):
                written[i] = res
        for i, res in written.items():
            if res.success:
                action = "created" if res.created else "updated"
                results[i] = _ok(keys[i], res.id or target[i], action)
            else:
                results[i] = _failed(keys[i], res.id or target[i], *_error_of(res))
        if is_product:
            self._keep_prices(
                meta.name,
                [i for i in range(n) if results[i] and results[i]["action"] != "failed" and prices[i]],
                prices,
                results,
            )
        return pd.DataFrame(results, columns=RESULT_COLUMNS)

    def _resolve_by_identity(
        self,
        obj: str,
        ident: str,
        fdef: dict,
        rows: list[int],
        values: list[dict],
        target: list[str | None],
        keys: list[Any],
        results: list[dict | None],
    ) -> list[int]:
        """Find existing records by a non-External-ID `ident`; set `target` for hits, return rows to create.

        A value two existing records share is refused for its row (DUPLICATES_DETECTED), as is a value two
        rows of this batch would both create; Salesforce would otherwise get a duplicate.
        """
        wanted = [values[i].get(ident) for i in rows]
        found: dict[str, list[str]] = {}
        literals = [_literal(fdef, v) for v in dict.fromkeys(str(w) for w in wanted if not _missing(w))]
        for group in _in_batches(literals):
            soql = f"SELECT Id, {ident} FROM {obj} WHERE {ident} IN ({', '.join(group)})"
            for page in self._pages(soql, "read_by_keys", obj):
                for rec in page:
                    found.setdefault(str(_get(rec, ident)).casefold(), []).append(str(_get(rec, "Id")))
        creates: list[int] = []
        claimed: dict[str, int] = {}
        for i in rows:
            value = values[i].get(ident)
            if _missing(value) or value == "":
                results[i] = _failed(
                    keys[i], None, "MISSING_ARGUMENT", f"{obj}.{ident} is empty: cannot match or create"
                )
                continue
            hits = found.get(str(value).casefold(), [])
            if len(hits) > 1:
                results[i] = _failed(
                    keys[i],
                    None,
                    "DUPLICATES_DETECTED",
                    f"{obj}.{ident} {value!r} is held by {len(hits)} records ({', '.join(sorted(hits))})",
                )
            elif hits:
                target[i] = hits[0]
            elif str(value).casefold() in claimed:
                results[i] = _failed(
                    keys[i],
                    None,
                    "DUPLICATE_VALUE",
                    f"{obj}.{ident} {value!r} appears twice in one batch (also source key {keys[claimed[str(value).casefold()]]})",
                )
            else:
                claimed[str(value).casefold()] = i
                creates.append(i)
        return creates

    def _threshold(self) -> int:
        value = (
            self._bulk_threshold
            if self._bulk_threshold is not None
            else self.hook.extras.get("bulk_threshold")
        )
        try:
            return int(value) if value is not None else 2000
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"bulk_threshold must be an integer, got {value!r}", where=f"adapter {self.name}"
            ) from exc

    def _write(self, obj: str, operation: str, records: list[dict], ext: str | None) -> list[RecordResult]:
        """Send `records` through the hook: one collections call per 200 (one log entry each), or one Bulk job."""
        # Inserts stay on collections: a Bulk insert's failures cannot be matched back to rows (no key).
        if operation != "insert" and len(records) >= self._threshold():
            return self._logged_write(obj, operation, records, ext, "bulk")
        out: list[RecordResult] = []
        for start in range(0, len(records), COLLECTION_SIZE):
            out += self._logged_write(
                obj, operation, records[start : start + COLLECTION_SIZE], ext, "collections"
            )
        return out

    def _logged_write(
        self, obj: str, operation: str, records: list[dict], ext: str | None, mode: str
    ) -> list[RecordResult]:
        """Write through the hook; log the call unless the hook's pre-flight refused every record."""
        before = sum(self.hook.calls.values())
        started = time.perf_counter()
        try:
            return self.hook.write(obj, records, operation=operation, external_id_field=ext, mode=mode)
        finally:
            calls = sum(self.hook.calls.values()) - before
            if calls:
                self.call_log.calls.append(
                    {
                        "method": operation,
                        "object": obj,
                        "rows": len(records),
                        "seconds": round(time.perf_counter() - started, 6),
                        "via": mode,
                        "api_calls": calls,
                    }
                )

    def _keep_prices(self, obj: str, rows: list[int], prices: list[dict], results: list[dict | None]) -> None:
        """Create or update each written product's standard PricebookEntry; a failure fails its row."""
        if not rows:
            return
        book = self._standard_pricebook_id()
        product_of = {i: str(results[i]["target_id"]) for i in rows}  # type: ignore[index]
        existing = self._standard_entries(list(product_of.values()), "upsert")
        entry_fields = self._fields("PricebookEntry")
        inserts: list[tuple[int, dict]] = []
        updates: list[tuple[int, dict]] = []
        for i in rows:
            want = {}
            for name, value in prices[i].items():
                fdef = entry_fields.get(name.lower())
                if fdef is None:
                    raise ConfigError(f"PricebookEntry has no field {name!r}", where=f"{self.name}.{obj}")
                want[fdef["name"]] = _json_value(value, fdef)
            entry = existing.get(product_of[i])
            if entry is None:
                if want.get("UnitPrice") is None:
                    results[i] = _failed(
                        results[i]["_source_key"],
                        product_of[i],
                        "REQUIRED_FIELD_MISSING",  # type: ignore[index]
                        f"{obj} {product_of[i]} has no standard price yet and the row gives no PricebookEntry.UnitPrice",
                    )
                    continue
                inserts.append((i, {"Pricebook2Id": book, "Product2Id": product_of[i], **want}))
            else:
                changed = {k: v for k, v in want.items() if not _same(v, _get(entry, k))}
                if changed:
                    updates.append((i, {"Id": str(_get(entry, "Id")), **changed}))
        for op, items in (("insert", inserts), ("update", updates)):
            if not items:
                continue
            for (i, _), res in zip(
                items, self._write("PricebookEntry", op, [r for _, r in items], None), strict=True
            ):
                if not res.success:
                    code, message, retriable = _error_of(res)
                    results[i] = _failed(
                        results[i]["_source_key"],
                        product_of[i],
                        code,  # type: ignore[index]
                        f"{obj} {product_of[i]} was written but its standard PricebookEntry was not: {message}",
                        retriable,
                    )


# ---- helpers -----------------------------------------------------------------------------------------


def _field_meta(name: str, f: dict) -> FieldMeta:
    required = (
        not f.get("nillable", True)
        and not f.get("defaultedOnCreate", False)
        and f.get("createable", False)
        and f.get("type") != "boolean"
    )
    length = f.get("length") or None
    return FieldMeta(
        name=name,
        type=f.get("type", "string"),
        length=length if f.get("type") in _STRING_TYPES or f.get("type") in ("id", "reference") else None,
        required=bool(required),
        createable=bool(f.get("createable")),
        updateable=bool(f.get("updateable")),
        external_id=bool(f.get("externalId")),
    )


def _literal(fdef: dict, value: Any) -> str:
    """Return a SOQL literal of `value` for a field of `fdef`'s type."""
    value = _plain(value)
    t = fdef.get("type")
    if t == "boolean":
        if isinstance(value, str):
            return "true" if value.strip().lower() in ("true", "1", "yes") else "false"
        return "true" if value else "false"
    if t in _NUMBER_TYPES:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{fdef.get('name')}: {value!r} is not a number") from None
        return str(int(number)) if number.is_integer() else repr(number)
    if t == "datetime" and isinstance(value, datetime):
        return _soql_datetime(value)
    if t == "date" and isinstance(value, (date, datetime)):
        return value.isoformat()[:10]
    if isinstance(value, (datetime, date)) and t not in _STRING_TYPES:
        return value.isoformat()
    return _quote(str(value))


def _in_batches(literals: list[str], budget: int = IN_LIST_CHARS) -> Iterator[list[str]]:
    """Group SOQL literals so each IN list stays within `budget` characters."""
    group: list[str] = []
    size = 0
    for lit in literals:
        if group and size + len(lit) + 2 > budget:
            yield group
            group, size = [], 0
        group.append(lit)
        size += len(lit) + 2
    if group:
        yield group


def _json_value(value: Any, fdef: dict | None) -> Any:
    """Turn a frame cell into what the REST API takes for the field."""
    value = _plain(value)
    if isinstance(value, Decimal):
        value = float(value)
    t = fdef.get("type") if fdef else None
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        if t == "date":
            return value.date().isoformat()
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if t == "boolean" and isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "false"):
            return low == "true"
    return value


def _same(want: Any, have: Any) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return bool(want) == bool(have) if have is not None else False
    if isinstance(want, (int, float)) and isinstance(have, (int, float)):
        return abs(float(want) - float(have)) < 1e-9
    return want == have


def _error_of(res: RecordResult) -> tuple[str, str, bool]:
    errors = res.errors or []
    code = errors[0].code if errors else "UNKNOWN"
    message = (
        "; ".join(
            f"{e.code}: {e.message}" + (f" ({', '.join(e.fields)})" if e.fields else "") for e in errors
        )
        or f"Salesforce refused the record without a reason (via {res.via})"
    )
    return code, message, res.retryable


def _ok(key: Any, target_id: Any, action: str) -> dict:
    return {
        "_source_key": key,
        "target_id": target_id,
        "action": action,
        "error": None,
        "error_code": None,
        "retriable": False,
    }


def _failed(key: Any, target_id: Any, code: str, message: str, retriable: bool = False) -> dict:
    return {
        "_source_key": key,
        "target_id": target_id,
        "action": "failed",
        "error": message,
        "error_code": code,
        "retriable": bool(retriable),
    }
