"""The OData v2 subset Exact Online accepts: `$filter` expressions, literals, and wire formats.

Exact parses filters server side and answers a bad one with a 400 and an OData error body, so the
parser raises `ODataError` with a message that names the offending token and its position.

Supported: `eq ne gt ge lt le`, `and or not`, parentheses, `substringof`, `startswith`, `endswith`,
`trim`, `tolower`, `toupper`, `length`; literals `'text'` (a doubled quote escapes), `guid'...'`,
`datetime'...'`, Int64 `123L`, decimals `1.5M`, numbers, `true`/`false`/`null`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "Literal",
    "ODataError",
    "date_to_ms",
    "ms_to_date",
    "parse_filter",
]


class ODataError(ValueError):
    """A query option Exact would refuse with 400; the message is what goes in the error body."""


_DATE_RE = re.compile(r"^/Date\((-?\d+)\)/$")
_TOKEN_RE = re.compile(
    r"""\s*(?:
      (?P<guid>guid'(?P<g>[^']*)')
    | (?P<dt>datetime'(?P<d>[^']*)')
    | (?P<str>'(?P<s>(?:[^']|'')*)')
    | (?P<num>-?\d+(?:\.\d+)?(?P<suffix>[LlMmDdFf])?)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][A-Za-z0-9_/]*)
    )""",
    re.X,
)
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}


def ms_to_date(ms: int) -> str:
    """Render epoch milliseconds the way Exact serializes dates: `/Date(1700000000000)/`."""
    return f"/Date({int(ms)})/"


def date_to_ms(value: Any) -> int | None:
    """Return epoch ms for a `/Date(ms)/` string (or None when the value is not such a date)."""
    if isinstance(value, str):
        m = _DATE_RE.match(value)
        if m:
            return int(m.group(1))
    return None


@dataclass(frozen=True)
class Literal:
    """A typed literal from a filter; `kind` decides how a record value is coerced to compare."""

    kind: str  # string, guid, datetime, int64, number, bool, null
    value: Any


def _parse_datetime(text: str, pos: int) -> int:
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            dt = datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        return int(dt.timestamp() * 1000)
    raise ODataError(
        f"Invalid datetime literal datetime'{text}' at position {pos}; use datetime'2024-01-31T00:00:00'"
    )


def _tokenize(text: str) -> list[tuple[str, Any, int]]:
    tokens: list[tuple[str, Any, int]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        while text[pos].isspace():
            pos += 1
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise ODataError(
                f"Syntax error at position {pos} in '{text}': unexpected '{text[pos : pos + 10]}'"
            )
        start = m.start(m.lastgroup) if m.lastgroup else pos
        if m.group("guid") is not None:
            g = m.group("g")
            if not _GUID_RE.match(g):
                raise ODataError(f"Invalid guid literal guid'{g}' at position {start}")
            tokens.append(("lit", Literal("guid", g.lower()), start))
        elif m.group("dt") is not None:
            tokens.append(("lit", Literal("datetime", _parse_datetime(m.group("d"), start)), start))
        elif m.group("str") is not None:
            tokens.append(("lit", Literal("string", m.group("s").replace("''", "'")), start))
        elif m.group("num") is not None:
            raw, suffix = m.group("num"), (m.group("suffix") or "")
            body = raw[: len(raw) - len(suffix)]
            if suffix in ("L", "l"):
                tokens.append(("lit", Literal("int64", int(body)), start))
            else:
                tokens.append(
                    ("lit", Literal("number", float(body) if "." in body or suffix else int(body)), start)
                )
        elif m.group("punct") is not None:
            tokens.append((m.group("punct"), None, start))
        else:
            word = m.group("word")
            low = word.lower()
            if low in ("true", "false"):
                tokens.append(("lit", Literal("bool", low == "true"), start))
            elif low == "null":
                tokens.append(("lit", Literal("null", None), start))
            else:
                tokens.append(("word", word, start))
        pos = m.end()
    return tokens


Getter = Callable[[dict], Any]
Node = Callable[[dict], Any]


class _Parser:
    """Recursive descent over the token list; each node is a function record -> value."""

    FUNCTIONS = {"substringof", "startswith", "endswith", "trim", "tolower", "toupper", "length"}

    def __init__(self, text: str, fields: Iterable[str]):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.fields = {f.lower(): f for f in fields}

    def peek(self) -> tuple[str, Any, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, Any, int]:
        tok = self.peek()
        if tok is None:
            raise ODataError(f"Unexpected end of filter '{self.text}'")
        self.i += 1
        return tok

    def expect(self, kind: str) -> None:
        tok = self.take()
        if tok[0] != kind:
            raise ODataError(f"Expected '{kind}' at position {tok[2]} in '{self.text}'")

    def is_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "word" and tok[1].lower() in words

    def parse(self) -> Node:
        node = self.parse_or()
        tok = self.peek()
        if tok is not None:
            raise ODataError(
                f"Syntax error at position {tok[2]} in '{self.text}': unexpected '{tok[1] or tok[0]}'"
            )
        return node

    def parse_or(self) -> Node:
        node = self.parse_and()
        while self.is_word("or"):
            self.take()
            left, right = node, self.parse_and()
            node = lambda r, a=left, b=right: bool(a(r)) or bool(b(r))  # noqa: E731
        return node

    def parse_and(self) -> Node:
        node = self.parse_not()
        while self.is_word("and"):
            self.take()
            left, right = node, self.parse_not()
            node = lambda r, a=left, b=right: bool(a(r)) and bool(b(r))  # noqa: E731
        return node

    def parse_not(self) -> Node:
        if self.is_word("not"):
            self.take()
            inner = self.parse_not()
            return lambda r: not inner(r)
        return self.parse_comparison()

    def parse_comparison(self) -> Node:
        left, left_lit = self.parse_primary()
        if self.is_word(*_COMPARISONS):
            op = self.take()[1].lower()
            right, right_lit = self.parse_primary()
            return _comparison(op, left, left_lit, right, right_lit)
        return left

    def parse_primary(self) -> tuple[Node, Literal | None]:
        kind, value, pos = self.take()
        if kind == "(":
            node = self.parse_or()
            self.expect(")")
            return node, None
        if kind == "lit":
            return (lambda r, v=value.value: v), value
        if kind != "word":
            raise ODataError(f"Syntax error at position {pos} in '{self.text}': unexpected '{kind}'")
        low = value.lower()
        nxt = self.peek()
        if nxt is not None and nxt[0] == "(":
            if low not in self.FUNCTIONS:
                raise ODataError(f"Unknown function '{value}' at position {pos}")
            self.take()
            args = [self.parse_or()]
            while self.peek() is not None and self.peek()[0] == ",":
                self.take()
                args.append(self.parse_or())
            self.expect(")")
            return _function(low, args, pos), None
        if "/" in value:
            raise ODataError(
                f"Filtering on navigation properties is not supported: '{value}' at position {pos}"
            )
        field = self.fields.get(low)
        if field is None:
            raise ODataError(f"No property '{value}' exists in type (position {pos} in '{self.text}')")
        return (lambda r, f=field: r.get(f)), None


def _function(name: str, args: list[Node], pos: int) -> Node:
    arity = {"substringof": 2, "startswith": 2, "endswith": 2}.get(name, 1)
    if len(args) != arity:
        raise ODataError(f"Function '{name}' takes {arity} argument(s), got {len(args)} (position {pos})")

    def text(v: Any) -> str:
        return "" if v is None else str(v)

    if name == "substringof":
        return lambda r: text(args[0](r)).lower() in text(args[1](r)).lower()
    if name == "startswith":
        return lambda r: text(args[0](r)).startswith(text(args[1](r)))
    if name == "endswith":
        return lambda r: text(args[0](r)).endswith(text(args[1](r)))
    if name == "trim":
        return lambda r: text(args[0](r)).strip()
    if name == "tolower":
        return lambda r: text(args[0](r)).lower()
    if name == "toupper":
        return lambda r: text(args[0](r)).upper()
    return lambda r: len(text(args[0](r)))


def _coerce(value: Any, lit: Literal) -> Any:
    """Turn a record value into the literal's type so `/Date(ms)/` compares with datetime'...' etc."""
    if value is None:
        return None
    if lit.kind == "datetime":
        return date_to_ms(value)
    if lit.kind == "guid":
        return str(value).lower()
    if lit.kind in ("int64", "number"):
        if isinstance(value, int | float):
            return value
        try:
            return int(value) if str(value).lstrip("-").isdigit() else float(value)
        except (TypeError, ValueError):
            return None
    if lit.kind == "string":
        return str(value)
    return value


_OPS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and b is not None and a > b,
    "ge": lambda a, b: a is not None and b is not None and a >= b,
    "lt": lambda a, b: a is not None and b is not None and a < b,
    "le": lambda a, b: a is not None and b is not None and a <= b,
}


def _comparison(
    op: str, left: Node, left_lit: Literal | None, right: Node, right_lit: Literal | None
) -> Node:
    fn = _OPS[op]
    if right_lit is not None and left_lit is None:
        return lambda r: fn(_coerce(left(r), right_lit), right_lit.value)
    if left_lit is not None and right_lit is None:
        return lambda r: fn(left_lit.value, _coerce(right(r), left_lit))
    return lambda r: fn(left(r), right(r))


def parse_filter(text: str, fields: Iterable[str]) -> Callable[[dict], bool]:
    """Compile `$filter` text into a predicate over records; unknown properties are refused.

    :param text: the `$filter` value, already URL-decoded.
    :param fields: property names the entity exposes (case-insensitive, as Exact matches them).
    """
    node = _Parser(text, fields).parse()
    return lambda record: bool(node(record))
