"""Autotask's query language: parse a query document and turn its filter into a predicate over records.

Rules, from reference/autotask.md §4.1 (each pinned by a test in test_autotask_simulator.py):

- ``filter`` is a non-empty list whose entries are AND-ed; ``{"op": "and"|"or", "items": [...]}`` nests.
- Operators: eq, noteq, gt, gte, lt, lte, beginsWith, endsWith, contains, exist, notExist, in, notIn
  (any casing). ``in``/``notIn`` take an array; ``exist``/``notExist`` take no value.
- ``"udf": true`` makes ``field`` a UDF name; one UDF condition per query at most.
- At most 500 OR conditions: the items of every ``or`` group plus the values of every ``in``/``notIn``
  (an ``in`` is a disjunction; counting it keeps clients from building a query real Autotask may refuse).
- An unknown field is HTTP 500 "Unable to find {field} in the {Entity} Entity" (observed, §4.1); a field
  that is not queryable is 500 too. An unknown operator is a 400 here; the silent drop seen on the real
  service (§4.1, §12 #3) is available behind the ``drop_unknown_operators`` option.
- String comparisons are case-insensitive (observed on Resources, §5.3). A condition on an empty field
  matches only ``notExist`` (SQL semantics: ``noteq`` does not match null either).
- ``MaxRecords`` 1-500 (default 500); ``IncludeFields`` names fields (unknown ones are 500) and limits
  the columns; ``userDefinedFields`` is returned only when named there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._schema import EntitySpec, FieldSpec

__all__ = ["MAX_OR_CONDITIONS", "MAX_RECORDS", "Query", "QueryError", "parse_datetime", "parse_query"]

MAX_RECORDS = 500
MAX_OR_CONDITIONS = 500
OPERATORS = {
    op.lower(): op
    for op in (
        "eq",
        "noteq",
        "gt",
        "gte",
        "lt",
        "lte",
        "beginsWith",
        "endsWith",
        "contains",
        "exist",
        "notExist",
        "in",
        "notIn",
    )
}
GROUPS = {"and", "or"}

Predicate = Callable[[dict], bool]


class QueryError(Exception):
    """A query the service refuses: HTTP `status` with Autotask's ``{"errors": [message]}`` body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Query:
    predicate: Predicate
    max_records: int
    include_fields: list[str] | None  # canonical names; None = every field
    include_udfs: bool


def parse_datetime(value: Any) -> datetime | None:
    """Parse Autotask's ``yyyy-mm-ddThh:mm:ss[.fff][Z]`` (naive values are UTC, §3)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    text = value.strip().replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _lower_keys(node: dict) -> dict:
    return {str(k).lower(): v for k, v in node.items()}


def parse_query(
    entity: EntitySpec,
    body: Any,
    udf_names: dict[str, str],
    *,
    drop_unknown_operators: bool = False,
) -> Query:
    """Validate a query document for `entity` and compile its filter.

    :param udf_names: the entity's UDFs, lower-cased name -> exact name.
    """
    if not isinstance(body, dict):
        raise QueryError(400, "The query must be a JSON object with a 'filter' array.")
    doc = _lower_keys(body)
    raw_filter = doc.get("filter")
    if not isinstance(raw_filter, list) or not raw_filter:
        raise QueryError(
            400, 'A query needs a non-empty \'filter\' array, e.g. [{"op":"exist","field":"id"}].'
        )
    max_records = doc.get("maxrecords", MAX_RECORDS)
    if (
        isinstance(max_records, bool)
        or not isinstance(max_records, int)
        or not 1 <= max_records <= MAX_RECORDS
    ):
        raise QueryError(400, f"MaxRecords must be an integer from 1 to {MAX_RECORDS}, got {max_records!r}.")
    include_fields, include_udfs = None, False
    raw_include = doc.get("includefields")
    if raw_include:  # an empty list means every field, as omitting it does
        if not isinstance(raw_include, list) or not all(isinstance(n, str) for n in raw_include):
            raise QueryError(400, "IncludeFields must be an array of field names.")
        include_fields = []
        for name in raw_include:
            if name.lower() == "userdefinedfields":
                include_udfs = True
                continue
            spec = entity.field(name)
            if spec is None:
                raise QueryError(500, f"Unable to find {name} in the {entity.label} Entity.")
            include_fields.append(spec.name)
    else:
        include_udfs = entity.has_udfs
    compiler = _Compiler(entity, udf_names, drop_unknown_operators)
    predicate = compiler.group("and", raw_filter)
    if compiler.or_conditions > MAX_OR_CONDITIONS:
        raise QueryError(
            400,
            f"The query has {compiler.or_conditions} OR conditions; at most {MAX_OR_CONDITIONS} are allowed.",
        )
    return Query(predicate, max_records, include_fields, include_udfs)


class _Compiler:
    def __init__(self, entity: EntitySpec, udf_names: dict[str, str], drop_unknown: bool):
        self.entity, self.udf_names, self.drop_unknown = entity, udf_names, drop_unknown
        self.or_conditions = 0
        self.udf_conditions = 0

    def node(self, raw: Any) -> Predicate:
        if not isinstance(raw, dict):
            raise QueryError(400, f"A filter condition must be a JSON object, got {raw!r}.")
        node = _lower_keys(raw)
        op = node.get("op")
        if not isinstance(op, str) or not op:
            raise QueryError(400, f"A filter condition needs an 'op': {raw!r}.")
        op_l = op.lower()
        if op_l in GROUPS:
            return self.group(op_l, node.get("items"))
        if op_l not in OPERATORS:
            if self.drop_unknown:
                return lambda record: True  # what the real service has been seen to do (§4.1)
            raise QueryError(
                400, f"Unknown filter operator '{op}'. Use one of: {', '.join(OPERATORS.values())}, and, or."
            )
        return self.leaf(OPERATORS[op_l], node, raw)

    def group(self, op: str, items: Any) -> Predicate:
        if not isinstance(items, list) or not items:
            raise QueryError(400, f"An '{op}' group needs a non-empty 'items' array.")
        preds = [self.node(item) for item in items]
        if op == "or":
            self.or_conditions += len(items)
            return lambda record: any(p(record) for p in preds)
        return lambda record: all(p(record) for p in preds)

    def leaf(self, op: str, node: dict, raw: dict) -> Predicate:
        name = node.get("field")
        if not isinstance(name, str) or not name:
            raise QueryError(400, f"A filter condition needs a 'field': {raw!r}.")
        if node.get("udf") is True:
            self.udf_conditions += 1
            if self.udf_conditions > 1:
                raise QueryError(400, "Only one user-defined field condition is allowed per query.")
            exact = self.udf_names.get(name.lower())
            if exact is None:
                raise QueryError(
                    500, f"Unable to find the user-defined field {name} in the {self.entity.label} Entity."
                )
            spec = FieldSpec(exact, "string")

            def get(record: dict, _n: str = exact) -> Any:
                return (record.get("userDefinedFields") or {}).get(_n)
        else:
            spec = self.entity.field(name)
            if spec is None:
                raise QueryError(500, f"Unable to find {name} in the {self.entity.label} Entity.")
            if not spec.queryable:
                raise QueryError(
                    500, f"The field {spec.name} of the {self.entity.label} Entity cannot be queried."
                )

            def get(record: dict, _n: str = spec.name) -> Any:
                return record.get(_n)

        if op in {"exist", "notExist"}:
            want = op == "exist"
            return lambda record: (get(record) not in (None, "")) == want
        if "value" not in node:
            raise QueryError(400, f"The '{op}' condition on {name} needs a 'value'.")
        value = node["value"]
        if op in {"in", "notIn"}:
            if not isinstance(value, list) or not value:
                raise QueryError(400, f"The '{op}' condition on {name} needs a non-empty array 'value'.")
            self.or_conditions += len(value)
            keys = {self.coerce(spec, v, name) for v in value}
            keys.discard(None)
            if op == "in":
                return lambda record: (k := self.key(spec, get(record))) is not None and k in keys
            return lambda record: (k := self.key(spec, get(record))) is not None and k not in keys
        target = self.coerce(spec, value, name)
        if op in {"beginsWith", "endsWith", "contains"}:
            text = str(value).lower()
            test = {
                "beginsWith": str.startswith,
                "endsWith": str.endswith,
                "contains": str.__contains__,
            }[op]
            return lambda record: (v := get(record)) not in (None, "") and test(str(v).lower(), text)
        compare = {
            "eq": lambda a, b: a == b,
            "noteq": lambda a, b: a != b,
            "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b,
        }[op]
        if target is None:  # eq null: nothing matches; use notExist
            return lambda record: False
        return lambda record: (k := self.key(spec, get(record))) is not None and compare(k, target)

    def coerce(self, spec: FieldSpec, value: Any, name: str) -> Any:
        """Turn a filter value into the comparable key of `spec`'s type, or refuse it (HTTP 500)."""
        if value is None:
            return None
        try:
            return self.key(spec, value, strict=True)
        except (TypeError, ValueError):
            raise QueryError(
                500,
                f"Invalid value {value!r} for the {spec.data_type} field {name} in the {self.entity.label} Entity.",
            ) from None

    @staticmethod
    def key(spec: FieldSpec, value: Any, strict: bool = False) -> Any:
        if value is None or value == "":
            return None
        kind = spec.data_type
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"true", "false"}:
                return value.lower() == "true"
            raise ValueError(value)
        if kind in {"integer", "long", "double"}:
            if isinstance(value, bool):
                if spec.name == "isActive":  # Contacts.isActive is 1/0; clients send true/false too
                    return float(value)
                raise ValueError(value)
            return float(value)
        if kind == "datetime":
            return parse_datetime(value)
        if strict and isinstance(value, dict | list):
            raise ValueError(value)
        return str(value).lower()
