"""The builders' own schema rules: child order, cardinality, choices, lengths and simple types.

Shared by the builders (which check a dict before emitting it) and by the fallback validator (which
checks a parsed document when no schema directory is configured). The facts come from `_rules.py`,
generated from the XSD; the patterns below are the simple types of qbxmltypes130.xsd.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from erpsync.qbwc_bridge.qbxml import _rules
from erpsync.qbwc_bridge.qbxml.errors import QbxmlValidationError

__all__ = ["Child", "check_content", "children", "format_leaf"]

# XML 1.0 forbids most control characters; QuickBooks rejects the whole document (0x80040400).
_BAD_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_PATTERNS: dict[str, re.Pattern[str]] = {
    "AMTTYPE": re.compile(r"([+\-]?[0-9]{1,13}(\.[0-9]{2})?)?"),
    "PRICETYPE": re.compile(r"([+\-]?[0-9]{1,10}(\.[0-9]{1,5})?)?"),
    "QUANTYPE": re.compile(r"([+\-]?[0-9]{1,10}(\.[0-9]{1,5})?)?"),
    "PERCENTTYPE": re.compile(r"([+\-]?[0-9]{1,10}(\.[0-9]{1,5})?)?"),
    "GUIDTYPE": re.compile(r"0|(\{[0-9a-fA-F]{8}(\-([0-9a-fA-F]{4})){3}\-[0-9a-fA-F]{12}\})"),
    "DATETIMETYPE": re.compile(
        r"([0-9]{4}\-[0-9]{1,2}\-[0-9]{1,2}(T[0-9]{1,2}(:[0-9]{1,2}(:[0-9]{1,2}([+\-]{1}[0-9]{1,2}:[0-9]{1,2})?)?)?)?)?"
    ),
    "DATETYPE": re.compile(r"(-?[0-9]{4,}-[0-9]{2}-[0-9]{2}(Z|[+\-][0-9]{2}:[0-9]{2})?)?"),
    "BOOLTYPE": re.compile(r"(true|false|1|0)?"),
    "INTTYPE": re.compile(r"[+\-]?[0-9]+"),
    "FLOATTYPE": re.compile(r"([+\-]?([0-9]+(\.[0-9]*)?|\.[0-9]+))?"),
}
_RULE_TEXT = {
    "AMTTYPE": "an amount with up to 13 digits and 0 or 2 decimals",
    "PRICETYPE": "a price with up to 10 digits and 5 decimals",
    "QUANTYPE": "a quantity with up to 10 digits and 5 decimals",
    "PERCENTTYPE": "a percentage with up to 10 digits and 5 decimals",
    "GUIDTYPE": "0 or a GUID in braces, e.g. {3F2504E0-4F89-11D3-9A0C-0305E82C3301}",
    "DATETIMETYPE": "a date-time YYYY-MM-DDThh:mm:ss with an optional +hh:mm offset",
    "DATETYPE": "a date YYYY-MM-DD",
    "BOOLTYPE": "true or false",
    "INTTYPE": "an integer",
    "FLOATTYPE": "a decimal number",
}


class Child:
    """One child slot of an aggregate, as the XSD declares it."""

    __slots__ = ("facts", "index", "key", "max", "min", "name", "path", "rank", "repeating")

    def __init__(self, index: int, spec: tuple):
        self.index = index
        self.name, self.key, self.min, self.max, self.facts, self.path = spec
        #: Choices that repeat (``<xsd:choice maxOccurs="unbounded">``, e.g. invoice lines and line
        #: groups) let their members interleave, so they share one rank for the order check and
        #: are not exclusive alternatives.
        self.repeating = frozenset(cid for cid, _ in self.path if _rules.CHOICES[cid].get("max") != 1)
        self.rank = index


_CACHE: dict[str, dict[str, Child]] = {}


def children(key: str) -> dict[str, Child]:
    """Return the children of aggregate `key` by name, each knowing its schema position."""
    found = _CACHE.get(key)
    if found is None:
        specs = _rules.AGGREGATES.get(key)
        if specs is None:
            raise KeyError(key)
        found = {spec[0]: Child(i, spec) for i, spec in enumerate(specs)}
        first_of: dict[str, int] = {}
        for child in found.values():
            for cid in sorted(child.repeating):
                first_of.setdefault(cid, child.index)
            if child.repeating:
                child.rank = min(first_of[cid] for cid in child.repeating)
        _CACHE[key] = found
    return found


def _decimal_text(value: Decimal, places: int | None) -> str:
    if places is not None:
        return str(value.quantize(Decimal(1).scaleb(-places)))
    text = format(value.normalize(), "f")
    return text


def format_leaf(value: Any, child: Child, field: str) -> str:
    """Turn a Python value into the element text the schema expects, or raise naming `field`."""
    base = child.facts.get("base", "STRTYPE")
    if isinstance(value, bool):
        if base != "BOOLTYPE":
            raise QbxmlValidationError(field, f"expects {_RULE_TEXT.get(base, 'text')}, not a boolean", value)
        text = "true" if value else "false"
    elif isinstance(value, int | float | Decimal):
        try:
            number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        except InvalidOperation:
            raise QbxmlValidationError(field, "is not a number", value) from None
        if not number.is_finite():
            raise QbxmlValidationError(field, "must be a finite number", value)
        if base == "AMTTYPE":
            text = _decimal_text(number, 2)
        elif base in ("PRICETYPE", "QUANTYPE", "PERCENTTYPE", "FLOATTYPE"):
            text = _decimal_text(number, None)
        elif base == "INTTYPE":
            if number != number.to_integral_value():
                raise QbxmlValidationError(field, "expects an integer", value)
            text = str(int(number))
        else:
            text = str(value)
    elif isinstance(value, dt.datetime):
        if base == "DATETYPE":
            raise QbxmlValidationError(field, "expects a date (YYYY-MM-DD), not a date-time", value)
        text = value.isoformat(timespec="seconds")
    elif isinstance(value, dt.date):
        text = value.isoformat()
    elif isinstance(value, str):
        text = value
    else:
        raise QbxmlValidationError(field, f"cannot hold a {type(value).__name__}", value)
    check_text(text, child, field)
    return text


def check_text(text: str, child: Child, field: str) -> None:
    """Check element text against the slot's length, enumeration and simple-type pattern."""
    bad = _BAD_CHARS.search(text)
    if bad:
        raise QbxmlValidationError(
            field, f"contains the control character U+{ord(bad.group()):04X}, not allowed in XML", text
        )
    facts = child.facts
    maxlen = facts.get("maxlen")
    if maxlen is not None and len(text) > maxlen:
        raise QbxmlValidationError(field, f"is {len(text)} characters long; maxLength is {maxlen}", text)
    enum = facts.get("enum")
    if enum is not None and text not in enum:
        shown = ", ".join(enum[:12]) + (", ..." if len(enum) > 12 else "")
        raise QbxmlValidationError(field, f"must be one of: {shown}", text)
    base = facts.get("base", "STRTYPE")
    pattern = _PATTERNS.get(base)
    if pattern is not None:
        stripped = (
            text if base in ("AMTTYPE", "PRICETYPE", "QUANTYPE", "PERCENTTYPE", "GUIDTYPE") else text.strip()
        )
        if not pattern.fullmatch(stripped):
            raise QbxmlValidationError(field, f"must be {_RULE_TEXT[base]}", text)
        if base == "DATETYPE" and stripped:
            _check_calendar(stripped[:10] if not stripped.startswith("-") else stripped, field, text)


def _check_calendar(day: str, field: str, text: str) -> None:
    try:
        dt.date.fromisoformat(day[:10])
    except ValueError:
        raise QbxmlValidationError(field, "is not a real calendar date", text) from None


def check_content(key: str, used: Iterable[tuple[str, int]], where: str) -> None:
    """Check that the children `used` ((name, count) in document order) fit aggregate `key`.

    Order, unknown names, maxOccurs, alternatives of a choice and required elements are checked;
    errors name the element path (`where/Name`) and the rule.
    """
    slots = children(key)
    selected: dict[str, dict[int, str]] = {}  # choice id -> {branch: first element used in it}
    last: Child | None = None
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for name, count in used:
        child = slots.get(name)
        if child is None:
            allowed = ", ".join(list(slots)[:15]) + (", ..." if len(slots) > 15 else "")
            raise QbxmlValidationError(
                f"{where}/{name}", f"is not an element of {_label(key)} (allowed: {allowed})"
            )
        if last is not None and (child.rank < last.rank or (name in seen and child.rank != last.rank)):
            raise QbxmlValidationError(
                f"{where}/{name}", f"is out of schema order: it must come before {last.name}"
            )
        last = child
        seen.add(name)
        counts[name] = counts.get(name, 0) + count
        if child.max is not None and counts[name] > child.max:
            raise QbxmlValidationError(
                f"{where}/{name}", f"occurs {counts[name]} times; maxOccurs is {child.max}"
            )
        for cid, branch in child.path:
            branches = selected.setdefault(cid, {})
            if branches and branch not in branches and cid not in child.repeating:
                other = next(iter(branches.values()))
                raise QbxmlValidationError(
                    f"{where}/{name}", f"cannot be combined with {other}: the schema allows only one of them"
                )
            branches.setdefault(branch, name)
    for name, child in slots.items():
        if child.min >= 1 and name not in seen and _active(child.path, selected):
            raise QbxmlValidationError(f"{where}/{name}", f"is required in {_label(key)}")
    for cid, facts in _choices_of(key).items():
        if facts["min"] >= 1 and not selected.get(cid):
            parent = facts["parent"]
            if parent is None or parent[1] in selected.get(parent[0], {}):
                options = [n for n, c in slots.items() if any(p[0] == cid for p in c.path)]
                raise QbxmlValidationError(
                    f"{where}", f"needs one of {', '.join(options[:8])} ({_label(key)})"
                )


def _active(path: tuple, selected: dict[str, dict[int, str]]) -> bool:
    return all(branch in selected.get(cid, {}) for cid, branch in path)


_CHOICES_BY_KEY: dict[str, dict[str, dict[str, Any]]] = {}


def _choices_of(key: str) -> dict[str, dict[str, Any]]:
    found = _CHOICES_BY_KEY.get(key)
    if found is None:
        ids = {cid for child in children(key).values() for cid, _ in child.path}
        found = {cid: _rules.CHOICES[cid] for cid in sorted(ids)}
        _CHOICES_BY_KEY[key] = found
    return found


def _label(key: str) -> str:
    return key.rsplit("/", 1)[-1]
