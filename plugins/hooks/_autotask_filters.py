"""Autotask query filters (reference `autotask.md` §4.1, §12 #3): builders and the check before sending.

Only the documented operators go out: an unknown one is silently dropped by the service, which then
returns unfiltered rows. `check_filter` also refuses more than one UDF condition and more than 500 OR
conditions. Re-exported by `erpsync.hooks.autotask`, where callers import them from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from erpsync.errors import ConfigError

__all__ = [
    "GROUP_OPERATORS",
    "MAX_OR_CONDITIONS",
    "OPERATORS",
    "and_",
    "as_filter",
    "begins_with",
    "check_filter",
    "contains",
    "ends_with",
    "eq",
    "everything",
    "exist",
    "gt",
    "gte",
    "in_",
    "lt",
    "lte",
    "not_exist",
    "not_in",
    "noteq",
    "or_",
    "udf",
    "wire_value",
]

#: The operators Autotask documents (§4.1); an unknown one is silently dropped by the service (§12 #3).
OPERATORS = frozenset(
    {
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
    }
)
GROUP_OPERATORS = frozenset({"and", "or"})
#: OR conditions per query (§4.1, §8); `in` values count too, to be safe.
MAX_OR_CONDITIONS = 500


def wire_value(value: Any) -> Any:
    """Dates go out as UTC `yyyy-mm-ddThh:mm:ss.fff` (§3); booleans stay literal true/false."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    if isinstance(value, date):
        return value.strftime("%Y-%m-%dT00:00:00.000")
    return value


def _cond(op: str, field_name: str, value: Any = None, *, has_value: bool = True) -> dict[str, Any]:
    if not field_name or not isinstance(field_name, str):
        raise ConfigError(f"filter condition '{op}' needs a field name, got {field_name!r}")
    cond: dict[str, Any] = {"op": op, "field": field_name}
    if has_value:
        cond["value"] = wire_value(value)
    return cond


def eq(field_name: str, value: Any) -> dict[str, Any]:
    """Return the condition `field = value`."""
    return _cond("eq", field_name, value)


def noteq(field_name: str, value: Any) -> dict[str, Any]:
    """Return `field <> value` (Autotask spells it `noteq`; `ne` would be ignored, §12 #3)."""
    return _cond("noteq", field_name, value)


def gt(field_name: str, value: Any) -> dict[str, Any]:
    """Return `field > value`."""
    return _cond("gt", field_name, value)


def gte(field_name: str, value: Any) -> dict[str, Any]:
    """Return `field >= value`."""
    return _cond("gte", field_name, value)


def lt(field_name: str, value: Any) -> dict[str, Any]:
    """Return `field < value`."""
    return _cond("lt", field_name, value)


def lte(field_name: str, value: Any) -> dict[str, Any]:
    """Return `field <= value`."""
    return _cond("lte", field_name, value)


def begins_with(field_name: str, value: str) -> dict[str, Any]:
    """Return `field LIKE 'value%'`."""
    return _cond("beginsWith", field_name, value)


def ends_with(field_name: str, value: str) -> dict[str, Any]:
    """Return `field LIKE '%value'`."""
    return _cond("endsWith", field_name, value)


def contains(field_name: str, value: str) -> dict[str, Any]:
    """Return `field LIKE '%value%'`."""
    return _cond("contains", field_name, value)


def exist(field_name: str) -> dict[str, Any]:
    """Return `field IS NOT NULL` (no value on the wire)."""
    return _cond("exist", field_name, has_value=False)


def not_exist(field_name: str) -> dict[str, Any]:
    """Return `field IS NULL`."""
    return _cond("notExist", field_name, has_value=False)


def in_(field_name: str, values: Iterable[Any]) -> dict[str, Any]:
    """Return `field IN (values)`; at most 500 values (`AutotaskHook.query_in` splits longer lists)."""
    return _cond("in", field_name, [wire_value(v) for v in values])


def not_in(field_name: str, values: Iterable[Any]) -> dict[str, Any]:
    """Return `field NOT IN (values)`."""
    return _cond("notIn", field_name, [wire_value(v) for v in values])


def udf(name: str, value: Any = None, op: str = "eq") -> dict[str, Any]:
    """Return a condition on a user-defined field by its name (only one per query, §4.1).

    :param name: the UDF's name exactly as defined, e.g. ``"Salesforce Company ID"``.
    :param op: any operator; ``exist``/``notExist`` take no value.
    """
    if op not in OPERATORS:
        raise ConfigError(f"unknown Autotask filter operator {op!r}; use one of {sorted(OPERATORS)}")
    cond = _cond(op, name, value, has_value=op not in ("exist", "notExist"))
    cond["udf"] = True
    return cond


def and_(*items: Mapping[str, Any]) -> dict[str, Any]:
    """Return a group whose conditions must all hold."""
    return {"op": "and", "items": [dict(i) for i in items]}


def or_(*items: Mapping[str, Any]) -> dict[str, Any]:
    """Return a group of which one condition must hold."""
    return {"op": "or", "items": [dict(i) for i in items]}


def everything() -> dict[str, Any]:
    """Return the condition that matches every record (Autotask needs at least one, §4.1)."""
    return gte("id", 0)


def as_filter(flt: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    if flt is None:
        return [everything()]
    if isinstance(flt, Mapping):
        return [dict(flt)]
    items = [dict(i) for i in flt]
    return items or [everything()]


def check_filter(flt: Sequence[Mapping[str, Any]], *, where: str = "filter") -> None:
    """Refuse a filter Autotask would reject or, worse, misread (§4.1, §12 #3).

    Checks: documented operators only, a field on each condition, a list value for `in`/`notIn`,
    no value for `exist`/`notExist`, at most one UDF condition, at most 500 OR conditions.
    """
    udfs = 0
    ors = 0

    def walk(node: Any, path: str) -> None:
        nonlocal udfs, ors
        if not isinstance(node, Mapping):
            raise ConfigError(f"filter item {node!r} is not an object", where=path)
        op = node.get("op")
        if op in GROUP_OPERATORS:
            items = node.get("items")
            if not isinstance(items, list) or not items:
                raise ConfigError(f"'{op}' group needs a non-empty 'items' list", where=path)
            if op == "or":
                ors += len(items)
            for i, item in enumerate(items):
                walk(item, f"{path}.{op}[{i}]")
            return
        if op not in OPERATORS:
            raise ConfigError(
                f"unknown Autotask filter operator {op!r} (Autotask would ignore it and return unfiltered "
                f"rows); use one of {sorted(OPERATORS)}",
                where=path,
            )
        if not node.get("field"):
            raise ConfigError(f"'{op}' condition without a field", where=path)
        if op in ("in", "notIn"):
            if not isinstance(node.get("value"), list):
                raise ConfigError(f"'{op}' on {node['field']} needs a list value", where=path)
            if op == "in":
                ors += len(node["value"])
        elif op in ("exist", "notExist"):
            if "value" in node:
                raise ConfigError(f"'{op}' on {node['field']} takes no value", where=path)
        elif "value" not in node:
            raise ConfigError(f"'{op}' on {node['field']} needs a value", where=path)
        if node.get("udf"):
            udfs += 1

    for i, node in enumerate(flt):
        walk(node, f"{where}[{i}]")
    if udfs > 1:
        raise ConfigError(f"{udfs} UDF conditions in one query; Autotask supports only one", where=where)
    if ors > MAX_OR_CONDITIONS:
        raise ConfigError(
            f"{ors} OR conditions in one query; Autotask allows {MAX_OR_CONDITIONS} (split the query)",
            where=where,
        )
