"""A plain row-by-row interpreter of a mapping: the baseline and the cross-check of the compiler.

This is how a mapping would be applied without pandas: one dict in, one dict out, field after
field. It is deliberately simple and slow. It exists for two reasons: the benchmark measures the
vectorized compiler against it in the same run (bench/bench_mapping.py), and the property tests
check that both give the same rows, values and rejections on generated data, which pins the
compiler's semantics to code a reader can follow line by line. Order lines are not supported here.
"""

from __future__ import annotations

import math
import re
import string
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from erpsync.mapping._compile import TRANSFORM_PATTERNS
from erpsync.mapping._model import FieldSpec, LookupSpec, Mapping, key_str

__all__ = ["apply_rowwise"]

_TRUE = {"true", "1", "yes", "y", "t", "on", "ja", "j"}
_FALSE = {"false", "0", "no", "n", "f", "off", "nee"}


def _null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _missing(value: Any) -> bool:
    return _null(value) or (isinstance(value, str) and value.strip() == "")


def _text(value: Any) -> str | None:
    return None if _null(value) else key_str(value)


def _get(record: dict[str, Any], path: str) -> Any:
    if path in record:
        return record[path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in record:
            value = record[prefix]
            for part in parts[cut:]:
                value = value.get(part) if isinstance(value, dict) else None
            return value
    raise KeyError(path)


def _transform(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if name == "strip":
        return value.strip()
    if name in {"upper", "lower", "title", "casefold"}:
        return getattr(value, name)()
    if name in TRANSFORM_PATTERNS and name != "lines_after_first":
        pattern, repl = TRANSFORM_PATTERNS[name]
        text = value.strip() if name == "single_line" else value
        text = re.sub(pattern, repl, text)
        return text.strip() if name == "collapse_whitespace" else text
    lines = value.replace("\r", "").split("\n")
    if name in {"line1", "line2", "line3"}:
        index = int(name[-1]) - 1
        return lines[index].strip() if index < len(lines) else None
    if name == "lines_after_first":
        if len(lines) < 2:
            return None
        pattern, repl = TRANSFORM_PATTERNS[name]
        return re.sub(pattern, repl, "\n".join(lines[1:])).strip()
    raise ValueError(name)


def _lookup_key(value: Any, lookup: LookupSpec) -> Any:
    text = _text(value)
    if lookup.key_type == "number":
        try:
            return round(float((text or "").replace(",", ".")), 6)
        except ValueError:
            return None
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    return text.casefold() if lookup.casefold else text


def _index(lookup: LookupSpec, rows: list[dict[str, Any]]) -> tuple[dict, set]:
    found: dict[tuple, Any] = {}
    ambiguous: set[tuple] = set()
    for row in rows:
        if any(row.get(c) not in allowed for c, allowed in lookup.filter.items()):
            continue
        key = tuple(_lookup_key(row.get(c), lookup) for c in lookup.key)
        if any(k is None for k in key):
            continue
        if key in found:
            ambiguous.add(key)
        found[key] = row.get(lookup.value)
    return found, ambiguous


def _default_from_lookup(spec: FieldSpec, mapping: Mapping, tables: dict) -> Any:
    name, key = spec.default_lookup  # type: ignore[misc]
    lookup = mapping.lookups[name]
    found, ambiguous = tables[name]
    probe = tuple(_lookup_key(k, lookup) for k in key)
    return None if probe in ambiguous else found.get(probe)


def _field(spec: FieldSpec, record: dict, mapping: Mapping, tables: dict, required: bool):
    """Return (value, [(rule, message, value)]) for one field of one record."""
    rejections: list[tuple[str, str, Any]] = []
    kind = spec.kind
    if kind == "from":
        value = _get(record, spec.source)  # type: ignore[arg-type]
    elif kind == "const":
        value = spec.const
    elif kind == "template":
        out, present = "", False
        for literal, name, _, _ in string.Formatter().parse(spec.template or ""):
            out += literal
            if name is not None:
                part = _text(_get(record, name))
                if not _missing(part):
                    present, out = True, out + part  # type: ignore[operator]
        value = out.strip() if present else None
    elif kind == "concat":
        parts = [_text(_get(record, p)) for p in spec.concat]
        kept = [p for p in parts if not _missing(p)]
        value = spec.sep.join(kept) if kept else None  # type: ignore[arg-type]
    else:
        lookup = mapping.lookups[spec.lookup]  # type: ignore[index]
        found, ambiguous = tables[lookup.name]
        key = tuple(_lookup_key(_get(record, p), lookup) for p in spec.by)
        value = None
        if all(k is not None for k in key):
            shown = " | ".join("" if k is None else key_str(k) for k in key)
            if key in ambiguous:
                rejections.append(("lookup_ambiguous", "ambiguous", shown))
            elif key in found:
                value = found[key]
            elif spec.default is None and spec.default_lookup is None and required:
                rejections.append(("lookup", "no match", shown))
    rejected = bool(rejections)

    if spec.transforms:
        value = _text(value)
        for name in spec.transforms:
            value = _transform(value, name)
    if spec.map is not None:
        vm, text = spec.map, _text(value)
        key = text.casefold() if (vm.casefold and text is not None) else text
        if key is not None and key in vm.values:
            value = vm.values[key]
        elif vm.on_unmapped == "keep":
            pass
        elif vm.on_unmapped == "reject":
            if not _missing(text) and not rejected:
                rejections.append(("unmapped", "unmapped", text))
                rejected = True
            value = None
        else:
            value = vm.fallback
    if spec.type == "string":
        value = _text(value)
        value = None if _missing(value) else value
    else:
        raw = value
        value, problem = _typed(spec, raw)
        if problem and not rejected:
            rejections.append(("format", problem, _text(raw)))
            rejected = True
    default = spec.default if spec.default_lookup is None else _default_from_lookup(spec, mapping, tables)
    if _missing(value) and default is not None:
        value = default if spec.type != "string" or isinstance(default, str) else key_str(default)
    elif _missing(value) and spec.default_lookup is not None and not rejected:
        rejections.append(("default_lookup", "default not found", None))
        rejected = True
    if spec.max_length is not None and value is not None:
        text = value if spec.type == "string" else _text(value)
        if len(text) > spec.max_length:
            if spec.overflow == "truncate":
                value = (text[: spec.max_length].rstrip() or None) if spec.type == "string" else value
            elif not rejected:
                rejections.append(("max_length", "too long", text))
                rejected = True
    if required and _missing(value) and not rejected:
        rejections.append(("required", "empty", None))
        rejected = True
    if spec.allowed is not None and not _missing(value) and value not in spec.allowed and not rejected:
        rejections.append(("allowed", "not allowed", value))
    return value, rejections


def _typed(spec: FieldSpec, value: Any) -> tuple[Any, str | None]:
    if _missing(value):
        return None, None
    if spec.type in {"decimal", "integer"}:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = Decimal(repr(float(value)))
        else:
            text = _text(value).strip().replace(" ", "")  # type: ignore[union-attr]
            if spec.decimal_separator == ",":
                text = text.replace(".", "").replace(",", ".")
            try:
                number = Decimal(text)
            except InvalidOperation:
                return None, "not a number"
        if not number.is_finite():
            return None, "not a number"
        if spec.type == "integer":
            return (int(number), None) if number == number.to_integral_value() else (None, "not whole")
        if spec.precision is not None:
            number = number.quantize(Decimal(1).scaleb(-spec.precision), rounding=ROUND_HALF_UP)
        return float(number), None
    if spec.type == "boolean":
        if isinstance(value, bool):
            flag = value
        else:
            text = _text(value).strip().casefold()  # type: ignore[union-attr]
            if text not in _TRUE | _FALSE:
                return None, "not a boolean"
            flag = text in _TRUE
        if spec.true_value is True and spec.false_value is False:
            return flag, None
        return (spec.true_value if flag else spec.false_value), None
    text = _text(value).strip()  # type: ignore[union-attr]
    try:
        stamp = datetime.strptime(text, spec.parse) if spec.parse else datetime.fromisoformat(text)
    except ValueError:
        return None, "not a date"
    stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    if spec.timezone:
        from zoneinfo import ZoneInfo

        stamp = stamp.astimezone(ZoneInfo(spec.timezone))
    fmt = spec.format or ("%Y-%m-%d" if spec.type == "date" else None)
    if fmt is None:
        fmt = "%Y-%m-%dT%H:%M:%S%z" if spec.timezone else "%Y-%m-%dT%H:%M:%SZ"
    return stamp.strftime(fmt), None


def apply_rowwise(
    mapping: Mapping, records: list[dict[str, Any]], lookups: dict[str, list[dict[str, Any]]] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Map records one at a time; return (mapped rows, rejections) like CompiledMapping.apply.

    :param records: source rows as dicts (flattened dotted keys or nested dicts).
    :param lookups: one list of row dicts per declared lookup.
    """
    if mapping.lines is not None:
        raise ValueError(f"{mapping.flow}: the row-by-row interpreter does not map order lines")
    tables = {name: _index(spec, (lookups or {})[name]) for name, spec in mapping.lookups.items()}
    identity = mapping.target.identity
    mapped: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for record in records:
        if any(_get(record, c) not in allowed for c, allowed in mapping.source.filter.items()):
            continue
        key = _text(_get(record, mapping.source.key))
        row: dict[str, Any] = {}
        bad = []
        for name, spec in mapping.fields.items():
            value, problems = _field(spec, record, mapping, tables, spec.required or name == identity)
            row[name] = value
            bad.extend(
                {"_source_key": key, "field": name, "rule": rule, "value": shown, "message": text}
                for rule, text, shown in problems
            )
        if bad:
            rejected.extend(bad)
        else:
            row["_source_key"] = key
            mapped.append(row)
    return mapped, rejected
