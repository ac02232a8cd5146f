"""A SOQL subset: enough for incremental extracts, IN-list lookups and the flows' relationship fields.

Supported: ``SELECT`` fields, parent relationship paths (``Owner.FirstName``, ``Account.Name``),
``COUNT()``, ``FROM`` one object, ``WHERE`` with ``AND``/``OR``/``NOT``/parentheses, ``= != <> < <= > >=``,
``LIKE``, ``IN``/``NOT IN`` lists, typed literals (quoted strings with backslash escapes, unquoted
ISO datetimes with a zone, dates, numbers, ``true``/``false``/``null``, ``TODAY``, ``YESTERDAY``,
``LAST_N_DAYS:n``), ``ORDER BY`` several keys with ``ASC``/``DESC`` and ``NULLS FIRST|LAST``, ``LIMIT``
and ``OFFSET``. Errors read like Salesforce's: the statement, a caret under the offending column,
``ERROR at Row:1:Column:n`` and the reason, with the errorCode the real API uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .schema import BY_PREFIX, CHILD_RELATIONSHIPS, FieldDef, ObjectDef, get_object

__all__ = ["SoqlError", "SoqlQuery", "parse", "parse_sf_datetime"]


class SoqlError(Exception):
    """A query Salesforce would refuse; `code` is the errorCode (MALFORMED_QUERY, INVALID_FIELD...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<string>'(?:[^'\\]|\\.)*')
    |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
    |(?P<date>\d{4}-\d{2}-\d{2})
    |(?P<number>-?\d+(?:\.\d+)?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?::\d+)?)
    |(?P<op><=|>=|!=|<>|=|<|>)
    |(?P<punct>[(),])
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}
_KEYWORDS = {
    "select",
    "from",
    "where",
    "and",
    "or",
    "not",
    "in",
    "like",
    "order",
    "by",
    "asc",
    "desc",
    "nulls",
    "first",
    "last",
    "limit",
    "offset",
    "includes",
    "excludes",
}


@dataclass
class Token:
    kind: str
    text: str
    pos: int
    value: Any = None


@dataclass
class Literal:
    kind: str  # string, datetime, date, number, boolean, null, date_range
    value: Any
    pos: int


@dataclass
class Comparison:
    path: tuple[str, ...]
    fdef: FieldDef
    op: str
    value: Literal | list[Literal]


@dataclass
class BoolOp:
    op: str  # and / or / not
    items: list[Any]


@dataclass
class SoqlQuery:
    """A parsed, schema-checked query."""

    text: str
    obj: ObjectDef
    fields: list[tuple[str, ...]] = field(default_factory=list)
    count_only: bool = False
    where: Any = None
    order: list[tuple[tuple[str, ...], FieldDef, bool, bool]] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0
    #: Parent-to-child subqueries: (relationship name, the child query, the child's lookup field).
    subqueries: list[tuple[str, SoqlQuery, str]] = field(default_factory=list)

    def matches(self, record: dict, lookup: Callable[[str | None], dict | None]) -> bool:
        return self.where is None or _eval(self.where, record, lookup)

    def sort(self, rows: list[dict], lookup: Callable[[str | None], dict | None]) -> list[dict]:
        for path, fdef, desc, nulls_last in reversed(self.order):

            def key(r, path=path, fdef=fdef, nulls_last=nulls_last, desc=desc):
                v = _coerce(fdef, resolve(r, path, lookup))
                # None sorts first for ASC (NULLS FIRST is the default) and last for DESC.
                nulls_group = (1 if nulls_last else 0) if not desc else (0 if nulls_last else 1)
                return (nulls_group, _MIN) if v is None else (1 - nulls_group, v)

            rows.sort(key=key, reverse=desc)
        return rows


class _Min:
    def __lt__(self, other):
        return True

    def __gt__(self, other):
        return False

    def __eq__(self, other):
        return isinstance(other, _Min)

    def __hash__(self):
        return 0


_MIN = _Min()


def parse_sf_datetime(text: str) -> datetime:
    """Parse `2024-05-02T08:15:30.000+0000`, `...Z` or `...+00:00` into an aware datetime."""
    t = text.strip().replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", t):
        t = t[:-2] + ":" + t[-2:]
    return datetime.fromisoformat(t).astimezone(UTC)


def _tokenize(text: str) -> list[Token]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise _error(
                text, pos, "MALFORMED_QUERY", f"unexpected token: '{text[pos : pos + 10].split()[0]}'"
            )
        kind = m.lastgroup
        if kind != "ws":
            tok = Token(kind, m.group(), pos)
            if kind == "string":
                tok.value = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1), e.group(1)), m.group()[1:-1])
            out.append(tok)
        pos = m.end()
    out.append(Token("eof", "", len(text)))
    return out


def _error(text: str, pos: int, code: str, reason: str) -> SoqlError:
    line_start = text.rfind("\n", 0, pos) + 1
    row = text.count("\n", 0, pos) + 1
    col = pos - line_start + 1
    line = text.splitlines()[row - 1] if text else ""
    return SoqlError(code, f"\n{line}\n{' ' * (col - 1)}^\nERROR at Row:{row}:Column:{col}\n{reason}")


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def kw(self, *words: str) -> bool:
        return self.tok.kind == "ident" and self.tok.text.lower() in words

    def take(self) -> Token:
        t = self.tok
        self.i += 1
        return t

    def expect_kw(self, word: str) -> Token:
        if not self.kw(word):
            found = self.tok.text or "EOF"
            raise _error(self.text, self.tok.pos, "MALFORMED_QUERY", f"unexpected token: '{found}'")
        return self.take()

    def expect(self, text: str) -> Token:
        if self.tok.text != text:
            found = self.tok.text or "EOF"
            raise _error(self.text, self.tok.pos, "MALFORMED_QUERY", f"unexpected token: '{found}'")
        return self.take()

    def parse(self, parent: ObjectDef | None = None) -> SoqlQuery:
        """Parse one SELECT; with `parent`, a subquery whose FROM names a child relationship of it."""
        self.expect_kw("select")
        items: list[Token] = []
        subquery_starts: list[int] = []
        count_only = False
        while True:
            t = self.tok
            if t.text == "(" and parent is None:
                subquery_starts.append(self.i)
                self.skip_parens()
                if self.tok.text != ",":
                    break
                self.take()
                continue
            if t.kind != "ident" or t.text.lower() in _KEYWORDS:
                reason = (
                    "nested subqueries are not supported"
                    if t.text == "("
                    else f"unexpected token: '{t.text or 'EOF'}'"
                )
                raise _error(self.text, t.pos, "MALFORMED_QUERY", reason)
            self.take()
            if t.text.lower() == "count" and self.tok.text == "(":
                self.take()
                self.expect(")")
                count_only = True
            else:
                items.append(t)
            if self.tok.text != ",":
                break
            self.take()
        self.expect_kw("from")
        obj_tok = self.take()
        fk = None
        if parent is not None:
            child = CHILD_RELATIONSHIPS.get((parent.name.lower(), obj_tok.text.lower()))
            if child is None:
                raise _error(
                    self.text,
                    obj_tok.pos,
                    "INVALID_TYPE",
                    f"Didn't understand relationship '{obj_tok.text}' in FROM part of query call. If you "
                    "are attempting to use a custom relationship, be sure to append the '__r' after the "
                    "custom relationship name. Please reference your WSDL or the describe call for the "
                    "appropriate names.",
                )
            rel_name, child_name, fk = child
            obj = get_object(child_name)
        else:
            obj = get_object(obj_tok.text) if obj_tok.kind == "ident" else None
        if obj is None:
            raise _error(
                self.text,
                obj_tok.pos,
                "INVALID_TYPE",
                f"sObject type '{obj_tok.text}' is not supported. If you are attempting to use a "
                "custom object, be sure to append the '__c' after the entity name.",
            )
        q = SoqlQuery(self.text, obj, count_only=count_only)
        seen = set()
        for t in items:
            path, _ = self.resolve_path(obj, t)
            if path not in seen:
                seen.add(path)
                q.fields.append(path)
        if count_only and items:
            raise _error(self.text, items[0].pos, "MALFORMED_QUERY", "COUNT() cannot be combined with fields")
        if self.kw("where"):
            self.take()
            q.where = self.parse_or(obj)
        if self.kw("order"):
            self.take()
            self.expect_kw("by")
            while True:
                t = self.take()
                path, fdef = self.resolve_path(obj, t)
                desc = False
                if self.kw("asc", "desc"):
                    desc = self.take().text.lower() == "desc"
                nulls_last = desc
                if self.kw("nulls"):
                    self.take()
                    if not self.kw("first", "last"):
                        raise _error(
                            self.text,
                            self.tok.pos,
                            "MALFORMED_QUERY",
                            f"unexpected token: '{self.tok.text or 'EOF'}'",
                        )
                    nulls_last = self.take().text.lower() == "last"
                q.order.append((path, fdef, desc, nulls_last))
                if self.tok.text != ",":
                    break
                self.take()
        if self.kw("limit"):
            self.take()
            q.limit = self.int_value()
        if self.kw("offset"):
            self.take()
            q.offset = self.int_value()
            if q.offset > 2000:
                raise _error(
                    self.text,
                    self.toks[self.i - 1].pos,
                    "NUMBER_OUTSIDE_VALID_RANGE",
                    "Maximum SOQL offset allowed is 2000",
                )
        if parent is not None:
            q.subqueries = [(rel_name, q, fk)]  # the caller unpacks this marker
            return q
        if self.tok.kind != "eof":
            raise _error(self.text, self.tok.pos, "MALFORMED_QUERY", f"unexpected token: '{self.tok.text}'")
        end = self.i
        for start in subquery_starts:
            self.i = start + 1
            sub = self.parse(parent=obj)
            self.expect(")")
            rel_name, _, fk = sub.subqueries.pop()
            q.subqueries.append((rel_name, sub, fk))
        self.i = end
        return q

    def skip_parens(self) -> None:
        """Step over a balanced ( ... ) group; its content is parsed once FROM names the parent."""
        depth = 0
        while True:
            t = self.take()
            if t.kind == "eof":
                raise _error(self.text, t.pos, "MALFORMED_QUERY", "unexpected token: 'EOF'")
            depth += {"(": 1, ")": -1}.get(t.text, 0)
            if depth == 0:
                return

    def int_value(self) -> int:
        t = self.take()
        if t.kind != "number" or "." in t.text or t.text.startswith("-"):
            raise _error(self.text, t.pos, "MALFORMED_QUERY", f"unexpected token: '{t.text or 'EOF'}'")
        return int(t.text)

    def resolve_path(self, obj: ObjectDef, tok: Token) -> tuple[tuple[str, ...], FieldDef]:
        if tok.kind != "ident" or tok.text.lower() in _KEYWORDS:
            raise _error(self.text, tok.pos, "MALFORMED_QUERY", f"unexpected token: '{tok.text or 'EOF'}'")
        parts = tok.text.split(".")
        if len(parts) > 1 and parts[0].lower() == obj.name.lower():
            parts = parts[1:]  # "Account.Name FROM Account" is allowed
        current = obj
        names: list[str] = []
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            if last:
                fdef = current.field(part)
                if fdef is None:
                    raise _error(
                        self.text,
                        tok.pos,
                        "INVALID_FIELD",
                        f"No such column '{part}' on entity '{current.name}'. If you are attempting "
                        "to use a custom field, be sure to append the '__c' after the custom field "
                        "name. Please reference your WSDL or the describe call for the appropriate "
                        "names.",
                    )
                names.append(fdef.name)
                return tuple(names), fdef
            rel = current.relationship(part)
            if rel is None:
                raise _error(
                    self.text,
                    tok.pos,
                    "INVALID_FIELD",
                    f"Didn't understand relationship '{part}' in field path. If you are attempting "
                    "to use a custom relationship, be sure to append the '__r' after the custom "
                    "relationship name. Please reference your WSDL or the describe call for the "
                    "appropriate names.",
                )
            names.append(rel.relationship_name or part)
            current = get_object(rel.reference_to[0])  # type: ignore[assignment]
        raise AssertionError("unreachable")

    def parse_or(self, obj: ObjectDef):
        items = [self.parse_and(obj)]
        while self.kw("or"):
            self.take()
            items.append(self.parse_and(obj))
        return items[0] if len(items) == 1 else BoolOp("or", items)

    def parse_and(self, obj: ObjectDef):
        items = [self.parse_not(obj)]
        while self.kw("and"):
            self.take()
            items.append(self.parse_not(obj))
        return items[0] if len(items) == 1 else BoolOp("and", items)

    def parse_not(self, obj: ObjectDef):
        if self.kw("not"):
            self.take()
            return BoolOp("not", [self.parse_not(obj)])
        if self.tok.text == "(":
            self.take()
            inner = self.parse_or(obj)
            self.expect(")")
            return inner
        return self.parse_comparison(obj)

    def parse_comparison(self, obj: ObjectDef) -> Comparison:
        ftok = self.take()
        path, fdef = self.resolve_path(obj, ftok)
        if self.kw("not"):
            self.take()
            self.expect_kw("in")
            return Comparison(path, fdef, "not in", self.literal_list(fdef))
        if self.kw("in"):
            self.take()
            return Comparison(path, fdef, "in", self.literal_list(fdef))
        if self.kw("like"):
            self.take()
            lit = self.literal(fdef)
            if lit.kind != "string":
                raise _error(self.text, lit.pos, "MALFORMED_QUERY", "LIKE needs a quoted string")
            return Comparison(path, fdef, "like", lit)
        op_tok = self.take()
        if op_tok.kind != "op":
            raise _error(
                self.text, op_tok.pos, "MALFORMED_QUERY", f"unexpected token: '{op_tok.text or 'EOF'}'"
            )
        lit = self.literal(fdef)
        op = "!=" if op_tok.text == "<>" else op_tok.text
        if lit.kind == "null" and op not in ("=", "!="):
            raise _error(self.text, lit.pos, "MALFORMED_QUERY", "null can only be compared with = or !=")
        return Comparison(path, fdef, op, lit)

    def literal_list(self, fdef: FieldDef) -> list[Literal]:
        self.expect("(")
        out = [self.literal(fdef)]
        while self.tok.text == ",":
            self.take()
            out.append(self.literal(fdef))
        self.expect(")")
        return out

    def literal(self, fdef: FieldDef) -> Literal:
        t = self.take()
        lit = _literal(t)
        if lit is None:
            raise _error(self.text, t.pos, "MALFORMED_QUERY", f"unexpected token: '{t.text or 'EOF'}'")
        expected = _LITERAL_KINDS.get(fdef.type, {"string"})
        if lit.kind != "null" and lit.kind not in expected:
            if fdef.type == "datetime" and lit.kind == "string":
                reason = (
                    f"value of filter criterion for field '{fdef.name}' must be of type dateTime and "
                    "should not be enclosed in quotes"
                )
            elif fdef.type in ("date",) and lit.kind == "string":
                reason = (
                    f"value of filter criterion for field '{fdef.name}' must be of type date and "
                    "should not be enclosed in quotes"
                )
            else:
                reason = f"value of filter criterion for field '{fdef.name}' must be of type {fdef.type}"
            raise _error(self.text, t.pos, "INVALID_FIELD", reason)
        if lit.kind == "string" and fdef.type in ("id", "reference"):
            from .ids import normalize_id

            norm = normalize_id(lit.value)
            if norm is None:
                raise _error(
                    self.text, t.pos, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {lit.value}"
                )
            lit.value = norm
        return lit


_LITERAL_KINDS = {
    "datetime": {"datetime", "date_range"},
    "date": {"date", "date_range"},
    "boolean": {"boolean"},
    "int": {"number"},
    "double": {"number"},
    "currency": {"number"},
}


def _literal(t: Token) -> Literal | None:
    if t.kind == "string":
        return Literal("string", t.value, t.pos)
    if t.kind == "datetime":
        return Literal("datetime", parse_sf_datetime(t.text), t.pos)
    if t.kind == "date":
        return Literal("date", date.fromisoformat(t.text), t.pos)
    if t.kind == "number":
        return Literal("number", float(t.text), t.pos)
    if t.kind == "ident":
        low = t.text.lower()
        if low in ("true", "false"):
            return Literal("boolean", low == "true", t.pos)
        if low == "null":
            return Literal("null", None, t.pos)
        today = datetime.now(UTC).date()
        if low == "today":
            return Literal("date_range", (today, today + timedelta(days=1)), t.pos)
        if low == "yesterday":
            return Literal("date_range", (today - timedelta(days=1), today), t.pos)
        m = re.fullmatch(r"last_n_days:(\d+)", low)
        if m:
            return Literal(
                "date_range", (today - timedelta(days=int(m.group(1))), today + timedelta(days=1)), t.pos
            )
    return None


def parse(text: str) -> SoqlQuery:
    """Parse and schema-check a SOQL statement; raise SoqlError the way Salesforce would refuse it."""
    if not text or not text.strip():
        raise SoqlError("MALFORMED_QUERY", "A query string has to be specified")
    return _Parser(text).parse()


def resolve(record: dict | None, path: tuple[str, ...], lookup: Callable[[str | None], dict | None]) -> Any:
    """Follow a relationship path (`Owner`, `FirstName`) from a record, using `lookup(id)` for parents."""
    current = record
    for part in path[:-1]:
        if current is None:
            return None
        obj = BY_PREFIX.get(str(current.get("Id", ""))[:3])
        ref_id = None
        for f in obj.fields if obj else ():
            if f.relationship_name == part:
                ref_id = current.get(f.name)
                break
        current = lookup(ref_id)
    return None if current is None else current.get(path[-1])


def _coerce(fdef: FieldDef, value: Any) -> Any:
    if value is None:
        return None
    t = fdef.type
    if t == "datetime":
        return parse_sf_datetime(value) if isinstance(value, str) else value
    if t == "date":
        return date.fromisoformat(value) if isinstance(value, str) else value
    if t in ("int", "double", "currency"):
        return float(value)
    if t == "boolean":
        return bool(value)
    if t in ("id", "reference"):
        return value
    return str(value).lower()


def _lit_value(fdef: FieldDef, lit: Literal) -> Any:
    if lit.kind == "string" and fdef.type not in ("id", "reference"):
        return lit.value.lower()
    if lit.kind == "date" and fdef.type == "datetime":
        return datetime(lit.value.year, lit.value.month, lit.value.day, tzinfo=UTC)
    return lit.value


def _compare(fdef: FieldDef, op: str, value: Any, lit: Literal) -> bool:
    if lit.kind == "date_range":
        lo, hi = lit.value
        if fdef.type == "datetime":
            lo = datetime(lo.year, lo.month, lo.day, tzinfo=UTC)
            hi = datetime(hi.year, hi.month, hi.day, tzinfo=UTC)
        if value is None:
            return op == "!="
        return {
            "=": lo <= value < hi,
            "!=": not lo <= value < hi,
            "<": value < lo,
            "<=": value < hi,
            ">": value >= hi,
            ">=": value >= lo,
        }[op]
    other = _lit_value(fdef, lit)
    if op == "=":
        return value == other
    if op == "!=":
        return value != other
    if value is None or other is None:
        return False
    try:
        return {"<": value < other, "<=": value <= other, ">": value > other, ">=": value >= other}[op]
    except TypeError:
        return False


def _eval(node: Any, record: dict, lookup: Callable[[str | None], dict | None]) -> bool:
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(_eval(n, record, lookup) for n in node.items)
        if node.op == "or":
            return any(_eval(n, record, lookup) for n in node.items)
        return not _eval(node.items[0], record, lookup)
    value = _coerce(node.fdef, resolve(record, node.path, lookup))
    if node.op in ("in", "not in"):
        hit = any(_compare(node.fdef, "=", value, lit) for lit in node.value)
        return hit if node.op == "in" else (not hit and value is not None)
    if node.op == "like":
        if value is None:
            return False
        pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in node.value.value)
        return re.fullmatch(pattern, str(value), re.IGNORECASE | re.DOTALL) is not None
    return _compare(node.fdef, node.op, value, node.value)
