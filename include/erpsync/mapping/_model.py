"""What a mapping file says, as frozen dataclasses, and the checks a JSON schema cannot express.

The schema checks shapes; this module checks meaning: each field has exactly one source
expression, a template's placeholders are paths, a lookup that a field uses is declared, options
fit the field's type, a default obeys the field's own constraints, and match keys are mapped fields.
Every problem is collected (not raised at the first) so the user sees them all with their lines.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erpsync.mapping._errors import Problem, problem
from erpsync.mapping._yaml import PathT, YamlDoc, dotted, load_yaml

if TYPE_CHECKING:
    from erpsync.mapping._compile import CompiledMapping

__all__ = [
    "EXPRESSION_KINDS",
    "FieldSpec",
    "LinesSpec",
    "LookupSpec",
    "Mapping",
    "QualitySpec",
    "SourceSpec",
    "TargetSpec",
    "ValueMap",
    "build_mapping",
    "key_str",
]

EXPRESSION_KINDS = ("from", "template", "concat", "const", "lookup")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_TYPE_OPTIONS = {
    "parse": {"date", "datetime"},
    "format": {"date", "datetime"},
    "timezone": {"date", "datetime"},
    "precision": {"decimal"},
    "decimal_separator": {"decimal", "integer"},
    "true_value": {"boolean"},
    "false_value": {"boolean"},
}
_RULE_NEEDS = {
    "not_null": ("column",),
    "unique": (),
    "regex": ("column", "pattern"),
    "not_regex": ("column", "pattern"),
    "in_set": ("column", "values"),
    "not_in_set": ("column", "values"),
    "length_between": ("column",),
    "between": ("column",),
}


def key_str(value: Any) -> str | None:
    """Return the text form used to compare map keys and source values (21, 21.0 and "21" agree)."""
    if value is None or type(value).__name__ == "NAType":
        return None
    if isinstance(value, float) and value != value:  # NaN: pandas' null in float and object columns
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class SourceSpec:
    """The object a flow reads and the columns its expressions need."""

    system: str
    object: str
    cursor: str | None
    key: str
    fields: list[str]
    filter: dict[str, list[Any]] = field(default_factory=dict)
    #: columns the flow's steps before map add to the staged rows (e.g. an Exact address ID); the
    #: expressions may read them, the extract does not ask the source for them
    added: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TargetSpec:
    """The object a flow writes, the field holding the source identity, and the match rules."""

    system: str
    object: str
    identity: str
    match: list[list[str]]
    requires: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ValueMap:
    """A value map with its fallback for values it does not list (the Autotask seed's rule)."""

    values: dict[str, Any]
    fallback: Any = None
    on_unmapped: str = "fallback"
    casefold: bool = False
    file: Path | None = None


@dataclass(frozen=True)
class LookupSpec:
    """A table of another system's ids (e.g. account managers by first and last name)."""

    name: str
    system: str
    object: str
    key: list[str]
    value: str
    casefold: bool = False
    key_type: str = "string"
    filter: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """Columns the lookup table must have: its key columns and its value column."""
        return [*self.key, self.value] if self.value not in self.key else list(self.key)


@dataclass(frozen=True)
class FieldSpec:
    """How one target field is computed and constrained, in evaluation order.

    expression (from / template / concat / const / lookup) -> transforms -> value map ->
    type parse and format -> default -> length policy -> required and allowed values.
    """

    target: str
    kind: str
    line: int | None = None
    source: str | None = None
    template: str | None = None
    concat: tuple[str, ...] = ()
    sep: str = " "
    const: Any = None
    lookup: str | None = None
    by: tuple[str, ...] = ()
    transforms: tuple[str, ...] = ()
    map: ValueMap | None = None
    type: str = "string"
    parse: str | None = None
    format: str | None = None
    timezone: str | None = None
    precision: int | None = None
    decimal_separator: str = "."
    true_value: Any = True
    false_value: Any = False
    default: Any = None
    #: (lookup name, key values): the default is that lookup's value for that key, found at run time
    default_lookup: tuple[str, tuple[Any, ...]] | None = None
    required: bool = False
    allowed: tuple[Any, ...] | None = None
    max_length: int | None = None
    overflow: str = "reject"
    on: frozenset[str] = frozenset({"create", "update"})

    @property
    def source_paths(self) -> list[str]:
        """Source columns this field reads."""
        if self.kind == "from":
            return [self.source]  # type: ignore[list-item]
        if self.kind == "template":
            return template_paths(self.template or "")
        if self.kind == "concat":
            return list(self.concat)
        if self.kind == "lookup":
            return list(self.by)
        return []

    @property
    def create_only(self) -> bool:
        """True when the field is written on create only (never overwritten by an update)."""
        return self.on == frozenset({"create"})


@dataclass(frozen=True)
class LinesSpec:
    """Child records (order lines) nested in a source column and mapped into a target list."""

    source: str
    target: str
    key: str
    fields: dict[str, FieldSpec]
    min_lines: int = 1

    @property
    def source_fields(self) -> list[str]:
        """Columns each child record must carry."""
        return _unique([self.key, *(p for f in self.fields.values() for p in f.source_paths)])


@dataclass(frozen=True)
class QualitySpec:
    """Quality rules on the extracted rows (source) and the mapped rows (target), and the threshold."""

    source: list[dict[str, Any]] = field(default_factory=list)
    target: list[dict[str, Any]] = field(default_factory=list)
    threshold: float | None = None


@dataclass(frozen=True)
class Mapping:
    """One validated flow mapping; `compile()` turns it into vectorized code over DataFrames."""

    flow: str
    enabled: bool
    description: str
    source: SourceSpec
    target: TargetSpec
    fields: dict[str, FieldSpec]
    lookups: dict[str, LookupSpec]
    quality: QualitySpec
    path: Path
    lines: LinesSpec | None = None

    @property
    def create_only_fields(self) -> list[str]:
        """Target fields written only when the record is created (e.g. an enriched description)."""
        return [name for name, spec in self.fields.items() if spec.create_only]

    @property
    def update_fields(self) -> list[str]:
        """Target fields written on every update."""
        return [name for name, spec in self.fields.items() if "update" in spec.on]

    def compile(self) -> CompiledMapping:
        """Compile once; the result applies the mapping to any number of DataFrame chunks."""
        from erpsync.mapping._compile import CompiledMapping

        return CompiledMapping(self)


def _unique(items) -> list:
    return list(dict.fromkeys(items))


def template_paths(template: str) -> list[str]:
    """Return the placeholder paths of a "{FirstName} {LastName}" template (assumes it is valid)."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError:  # reported by template_problems
        return []


def template_problems(template: str) -> str | None:
    """Return why a template is unusable, or None."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"bad template {template!r}: {exc} (write literal braces as {{{{ and }}}})"
    names = [name for _, name, _, _ in parts if name is not None]
    if not names:
        return f"template {template!r} has no {{placeholders}}; use const for a fixed value"
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not _PATH.match(name):
            return f"template placeholder {{{name}}} is not a dotted source path"
        if spec or conversion:
            return f"template placeholder {{{name}}} may not carry a format or conversion; use type/format"
    return None


class _Builder:
    """Collect problems while turning a YamlDoc into a Mapping."""

    def __init__(self, doc: YamlDoc):
        self.doc = doc
        self.problems: list[Problem] = []

    def add(self, where: PathT, text: str) -> None:
        self.problems.append(problem(self.doc.path, self.doc.line(where), dotted(where), text))

    # -- fields ---------------------------------------------------------------------------------
    def field_spec(self, where: PathT, name: str, raw: dict[str, Any], lookups: dict[str, Any]) -> FieldSpec:
        kinds = [k for k in EXPRESSION_KINDS if k in raw]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            self.add(
                where,
                f"needs exactly one source expression out of {', '.join(EXPRESSION_KINDS)} (found: {found})",
            )
        kind = kinds[0] if kinds else "const"
        if kind == "template":
            why = template_problems(raw["template"])
            if why:
                self.add((*where, "template"), why)
        if "sep" in raw and kind != "concat":
            self.add((*where, "sep"), "sep only applies to concat")
        if kind == "lookup":
            lookup = lookups.get(raw["lookup"])
            if lookup is None:
                known = ", ".join(sorted(lookups)) or "none declared"
                self.add((*where, "lookup"), f"unknown lookup '{raw['lookup']}' (declared: {known})")
            if "by" not in raw:
                self.add(where, "a lookup needs 'by': the source fields to match the lookup key with")
            elif lookup is not None and len(raw["by"]) != len(lookup.get("key", [])):
                self.add(
                    (*where, "by"),
                    f"lookup '{raw['lookup']}' has {len(lookup.get('key', []))} key column(s) "
                    f"but 'by' lists {len(raw['by'])}",
                )
        elif "by" in raw:
            self.add((*where, "by"), "'by' only applies to a lookup")
        default_lookup = self.default_lookup((*where, "default_lookup"), raw, lookups)

        ftype = raw.get("type", "string")
        for option, types in _TYPE_OPTIONS.items():
            if option in raw and ftype not in types:
                self.add((*where, option), f"'{option}' only applies to type {' or '.join(sorted(types))}")
        if "timezone" in raw:
            self._check_timezone((*where, "timezone"), raw["timezone"])

        max_length, overflow = raw.get("max_length"), raw.get("overflow", "reject")
        if "truncate" in raw:
            if "max_length" in raw or "overflow" in raw:
                self.add((*where, "truncate"), "use either truncate: N or max_length + overflow, not both")
            max_length, overflow = raw["truncate"], "truncate"
        elif "overflow" in raw and "max_length" not in raw:
            self.add((*where, "overflow"), "overflow needs max_length")

        value_map = self.value_map((*where, "map"), raw["map"]) if "map" in raw else None
        transforms = raw.get("transform", ())
        transforms = (transforms,) if isinstance(transforms, str) else tuple(transforms)
        spec = FieldSpec(
            target=name,
            kind=kind,
            line=self.doc.line(where),
            source=raw.get("from"),
            template=raw.get("template"),
            concat=tuple(raw.get("concat", ())),
            sep=raw.get("sep", " "),
            const=raw.get("const"),
            lookup=raw.get("lookup"),
            by=tuple(raw.get("by", ())),
            transforms=transforms,
            map=value_map,
            type=ftype,
            parse=raw.get("parse"),
            format=raw.get("format"),
            timezone=raw.get("timezone"),
            precision=raw.get("precision"),
            decimal_separator=raw.get("decimal_separator", "."),
            true_value=raw.get("true_value", True),
            false_value=raw.get("false_value", False),
            default=raw.get("default"),
            default_lookup=default_lookup,
            required=bool(raw.get("required", False)),
            allowed=tuple(raw["allowed"]) if "allowed" in raw else None,
            max_length=max_length,
            overflow=overflow,
            on=frozenset(raw.get("on", ("create", "update"))),
        )
        for label, value in (("default", spec.default), ("const", spec.const)):
            if value is None or (label == "const" and kind != "const"):
                continue
            if spec.max_length and len(str(value)) > spec.max_length and spec.overflow == "reject":
                self.add((*where, label), f"{label} {value!r} is longer than max_length {spec.max_length}")
            if spec.allowed is not None and value not in spec.allowed:
                self.add((*where, label), f"{label} {value!r} is not among the allowed values")
        return spec

    def _check_timezone(self, where: PathT, name: str) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.add(where, f"unknown time zone {name!r} (use an IANA name such as Europe/Amsterdam)")

    def value_map(self, where: PathT, raw: dict[str, Any]) -> ValueMap | None:
        if ("values" in raw) == ("file" in raw):
            self.add(where, "a map needs exactly one of 'values' (inline) or 'file' (a value map file)")
            return None
        values, fallback, file = raw.get("values"), raw.get("fallback"), None
        if "file" in raw:
            file = (self.doc.path.parent / raw["file"]).resolve()
            loaded = self._map_file(where, file)
            if loaded is None:
                return None
            values = loaded.get("values", {})
            fallback = raw.get("fallback", loaded.get("fallback"))
        casefold = bool(raw.get("casefold", False))
        normalized: dict[str, Any] = {}
        for key, value in (values or {}).items():
            text = key_str(key)
            normalized[text.casefold() if casefold and text is not None else text] = value
        return ValueMap(
            values=normalized,
            fallback=fallback,
            on_unmapped=raw.get("on_unmapped", "fallback"),
            casefold=casefold,
            file=file,
        )

    def _map_file(self, where: PathT, file: Path) -> dict[str, Any] | None:
        from erpsync.mapping._errors import MappingError

        if not file.is_file():
            self.add((*where, "file"), f"value map file {file} does not exist")
            return None
        found: list[Problem] = []
        data: Any = None
        try:
            doc = load_yaml(file)
            data = doc.data
        except MappingError as exc:
            found.extend(exc.problems)
        if not found and (not isinstance(data, dict) or not isinstance(data.get("values"), dict)):
            found.append(problem(file, 1, "values", "a value map file needs a 'values' mapping"))
        if not found:
            for key in data:
                if key not in {"values", "fallback", "description"}:
                    line = doc.line((key,))
                    text = f"unknown key '{key}' (allowed: description, fallback, values)"
                    found.append(problem(file, line, str(key), text))
            for key, value in data["values"].items():
                if isinstance(value, dict | list):
                    line = doc.line(("values", key))
                    found.append(problem(file, line, f"values.{key}", "a mapped value must be a scalar"))
        if found:
            self.add((*where, "file"), f"value map file {file.name} is invalid (its problems are listed too)")
            self.problems.extend(found)
            return None
        return data

    def default_lookup(
        self, where: PathT, raw: dict[str, Any], lookups: dict[str, Any]
    ) -> tuple[str, tuple[Any, ...]] | None:
        """Check `default_lookup: {lookup, key}`: a declared lookup, one key value per key column."""
        spec = raw.get("default_lookup")
        if not isinstance(spec, dict):
            return None
        if "default" in raw:
            self.add(where, "use either default or default_lookup, not both")
        name, key = spec.get("lookup"), spec.get("key")
        key = tuple(key) if isinstance(key, list) else (key,)
        lookup = lookups.get(name)
        if lookup is None:
            known = ", ".join(sorted(lookups)) or "none declared"
            self.add((*where, "lookup"), f"unknown lookup '{name}' (declared: {known})")
        elif len(key) != len(lookup.get("key", [])):
            self.add(
                (*where, "key"),
                f"lookup '{name}' has {len(lookup.get('key', []))} key column(s) but the key has {len(key)} value(s)",
            )
        return name, key

    def fields(self, where: PathT, raw: dict[str, Any], lookups: dict[str, Any]) -> dict[str, FieldSpec]:
        return {
            name: self.field_spec((*where, name), name, spec, lookups)
            for name, spec in raw.items()
            if isinstance(spec, dict)
        }

    # -- quality ---------------------------------------------------------------------------------
    def rules(
        self,
        where: PathT,
        rules: list[dict[str, Any]],
        columns: set[str] | None,
        types: dict[str, str] | None = None,
    ) -> None:
        names: dict[str, int] = {}
        for index, rule in enumerate(rules):
            here = (*where, index)
            kind = rule.get("rule")
            for needed in _RULE_NEEDS.get(kind, ()):
                if needed not in rule:
                    self.add(here, f"rule {kind} needs '{needed}'")
            if kind == "unique" and ("column" in rule) == ("columns" in rule):
                self.add(here, "rule unique needs exactly one of 'column' or 'columns' (compound key)")
            elif kind != "unique" and "columns" in rule:
                self.add((*here, "columns"), f"rule {kind} checks one column; 'columns' is only for unique")
            if kind in {"length_between", "between"}:
                if "min" not in rule and "max" not in rule:
                    self.add(here, f"rule {kind} needs min, max or both")
                elif "min" in rule and "max" in rule and rule["min"] > rule["max"]:
                    self.add(here, f"min {rule['min']} is greater than max {rule['max']}")
            for option in ("pattern", "values", "min", "max"):
                if (
                    option in rule
                    and option not in _RULE_NEEDS.get(kind, ())
                    and not (option in {"min", "max"} and kind in {"length_between", "between"})
                ):
                    self.add((*here, option), f"'{option}' does not apply to rule {kind}")
            if "pattern" in rule:
                try:
                    re.compile(rule["pattern"])
                except re.error as exc:
                    self.add((*here, "pattern"), f"bad regular expression {rule['pattern']!r}: {exc}")
            if columns is not None:
                for column in [rule.get("column"), *rule.get("columns", [])]:
                    if column and column not in columns:
                        self.add(here, f"rule checks column '{column}', which this mapping does not produce")
            # Great Expectations cannot compare text with numbers nor measure numbers' length: say so
            # at load time instead of failing the check step of a run.
            column_type = (types or {}).get(rule.get("column") or "")
            if kind == "between" and column_type and column_type not in {"decimal", "integer"}:
                self.add(here, f"rule between needs a number field; '{rule['column']}' is {column_type}")
            texts = {"string", "date", "datetime"}  # dates leave the mapping as formatted text
            if kind in {"length_between", "regex", "not_regex"} and column_type and column_type not in texts:
                self.add(here, f"rule {kind} needs a text field; '{rule['column']}' is {column_type}")
            name = rule_name(rule)
            if name in names:
                self.add(here, f"two rules are both named '{name}' (first at item {names[name]}); add a name")
            names[name] = index


def rule_name(rule: dict[str, Any]) -> str:
    """Return the rule's name: its `name`, else `<rule>:<column>` (columns joined by +)."""
    if rule.get("name"):
        return str(rule["name"])
    column = rule.get("column") or "+".join(rule.get("columns", []))
    return f"{rule.get('rule')}:{column}"


def build_mapping(doc: YamlDoc) -> tuple[Mapping | None, list[Problem]]:
    """Build the Mapping from a schema-valid document; return it with every semantic problem found."""
    data, builder = doc.data, _Builder(doc)
    if data["flow"] != doc.path.stem:
        builder.add(("flow",), f"flow '{data['flow']}' must equal the file name '{doc.path.stem}'")

    raw_lookups = data.get("lookups", {})
    lookups = {
        name: LookupSpec(
            name=name,
            system=raw["system"],
            object=raw["object"],
            key=list(raw["key"]),
            value=raw["value"],
            casefold=bool(raw.get("casefold", False)),
            key_type=raw.get("key_type", "string"),
            filter=dict(raw.get("filter", {})),
        )
        for name, raw in raw_lookups.items()
    }
    fields = builder.fields(("fields",), data["fields"], raw_lookups)

    lines = None
    if "lines" in data:
        raw = data["lines"]
        if raw["target"] in fields:
            builder.add(("lines", "target"), f"'{raw['target']}' is also a header field")
        lines = LinesSpec(
            source=raw["source"],
            target=raw["target"],
            key=raw["key"],
            fields=builder.fields(("lines", "fields"), raw["fields"], raw_lookups),
            min_lines=raw.get("min_lines", 1),
        )

    every_field = [*fields.values(), *(lines.fields.values() if lines else ())]
    used = {spec.lookup for spec in every_field} | {
        spec.default_lookup[0] for spec in every_field if spec.default_lookup
    }
    for name in raw_lookups:
        if name not in used:
            builder.add(("lookups", name), f"lookup '{name}' is declared but no field uses it")

    src, tgt = data["source"], data["target"]
    if tgt["identity"] not in fields:
        builder.add(("target", "identity"), f"identity '{tgt['identity']}' is not one of the mapped fields")
    match = [[m] if isinstance(m, str) else list(m) for m in tgt.get("match", [])]
    for index, rule in enumerate(match):
        for column in rule:
            if column not in fields:
                builder.add(
                    ("target", "match", index), f"match key '{column}' is not one of the mapped fields"
                )

    quality_raw = data.get("quality", {})
    builder.rules(("quality", "source"), quality_raw.get("source", []), None)
    produced = {*fields, "_source_key"} | ({lines.target} if lines else set())
    builder.rules(
        ("quality", "target"),
        quality_raw.get("target", []),
        produced,
        {name: spec.type for name, spec in fields.items()},
    )

    key = src.get("key", "Id")
    needed = [key, *(p for spec in fields.values() for p in spec.source_paths), *src.get("filter", {})]
    if lines:
        needed.append(lines.source)
    needed.extend(src.get("fields", []))
    # Columns the source quality rules check must be extracted too, or the check step cannot run.
    for rule in quality_raw.get("source", []):
        needed.extend([c for c in [rule.get("column"), *rule.get("columns", [])] if c])
    added = list(src.get("added", []))
    source = SourceSpec(
        system=src["system"],
        object=src["object"],
        cursor=src.get("cursor"),
        key=key,
        fields=[c for c in _unique(needed) if c not in added],
        filter=dict(src.get("filter", {})),
        added=added,
    )
    for index, column in enumerate(tgt.get("requires", [])):
        if column not in fields:
            builder.add(("target", "requires", index), f"required target field '{column}' is not mapped")
    target = TargetSpec(
        system=tgt["system"],
        object=tgt["object"],
        identity=tgt["identity"],
        match=match,
        requires=list(tgt.get("requires", [])),
    )
    quality = QualitySpec(
        source=list(quality_raw.get("source", [])),
        target=list(quality_raw.get("target", [])),
        threshold=quality_raw.get("threshold"),
    )
    if builder.problems:
        return None, builder.problems
    mapping = Mapping(
        flow=data["flow"],
        enabled=bool(data.get("enabled", True)),
        description=data.get("description", ""),
        source=source,
        target=target,
        fields=fields,
        lookups=lookups,
        quality=quality,
        path=doc.path,
        lines=lines,
    )
    return mapping, []
