"""Apply a mapping to a DataFrame chunk with column operations only, never a Python loop per row.

Each target field compiles to a `_FieldProgram` that evaluates its expression over whole columns
and returns the values plus zero or more rejections (a boolean mask with the rule that failed).
A row rejected by any field leaves `.frame` and appears in `.rejected`, once per failed rule, with
the value that failed; the other rows carry on. Order lines (a list of child records per row) are
mapped the same way on an exploded child frame and folded back into one list per row; an order
with a rejected line is rejected whole, because a partial order is worse than a late one.

pandas is imported inside functions only: this module is loaded by operators at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from erpsync.mapping._errors import MappingError, problem
from erpsync.mapping._model import FieldSpec, LinesSpec, LookupSpec, Mapping, key_str

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["REJECTED_COLUMNS", "CompiledMapping", "MappedChunk"]

REJECTED_COLUMNS = ["_source_key", "field", "rule", "value", "message"]
SKIPPED_COLUMNS = ["_source_key", "reason"]
_TRUE = {"true", "1", "yes", "y", "t", "on", "ja", "j"}
_FALSE = {"false", "0", "no", "n", "f", "off", "nee"}


@dataclass
class MappedChunk:
    """The result of mapping one chunk.

    :ivar frame: target fields of the rows that passed, same index as the input, plus `_source_key`.
    :ivar rejected: one row per (rejected row, failed rule): `_source_key, field, rule, value, message`;
        `value` is the offending value as text (None when missing) so it stores in Parquet as is.
    :ivar skipped: rows left out on purpose by the source filter: `_source_key, reason`.
    """

    frame: pd.DataFrame
    rejected: pd.DataFrame
    skipped: pd.DataFrame


@dataclass
class _Rejection:
    mask: Any  # numpy bool array aligned with the chunk
    rule: str
    message: Any  # str or Series of str
    value: Any  # Series (the offending values) or None


# -- column helpers ---------------------------------------------------------------------------------
def _dig(value: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def resolve(df: pd.DataFrame, path: str) -> pd.Series | None:
    """Return the column at a dotted path: a flattened column "Owner.FirstName", else a nested dict."""
    if path in df.columns:
        return df[path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in df.columns:
            rest = parts[cut:]
            # Salesforce returns relationships as nested dicts; flattened extracts avoid this map.
            return df[prefix].map(lambda v, rest=rest: _dig(v, rest))
    return None


def to_text(series: pd.Series) -> pd.Series:
    """Return the column as pandas strings; 21.0 becomes "21", True becomes "true", nulls stay null."""
    import pandas as pd
    from pandas.api import types

    if isinstance(series.dtype, pd.StringDtype) or series.dtype == "str":
        return series
    if types.is_bool_dtype(series.dtype):
        return series.map({True: "true", False: "false"}).astype("str")
    if types.is_integer_dtype(series.dtype):
        return series.astype("str")
    if types.is_float_dtype(series.dtype):
        whole = series.notna() & (series % 1 == 0)
        out = series.astype("str")
        if whole.any():
            out = out.where(~whole, series[whole].astype("int64").astype("str"))
        return out
    return series.map(key_str).astype("str")


def missing(series: pd.Series) -> Any:
    """Return a numpy mask of null or blank (empty or whitespace-only text) values."""
    from pandas.api import types

    mask = series.isna().to_numpy()
    if types.is_string_dtype(series.dtype) or series.dtype == object:
        text = series if series.dtype != object else series.astype("str")
        blank = text.str.strip().eq("").fillna(False).to_numpy(dtype=bool)
        mask = mask | blank
    return mask


# ASCII whitespace spelled out: pandas runs `\s` through Python's re (RE2's \s differs on \v), which
# is 3x slower than pyarrow's RE2 on a 100k chunk; _rowwise uses the same classes so both agree.
WS = r"[ \t\n\r\f\v]"
TRANSFORM_PATTERNS = {
    "collapse_whitespace": (WS + "+", " "),
    "digits_only": (r"[^0-9]+", ""),
    "single_line": (WS + r"*[\r\n]+" + WS + "*", ", "),
    "lines_after_first": (WS + r"*\n" + WS + "*", ", "),
}


def _transform(series: pd.Series, name: str) -> pd.Series:
    s = series
    if name == "strip":
        return s.str.strip()
    if name in {"upper", "lower", "title", "casefold"}:
        return getattr(s.str, name)()
    if name == "collapse_whitespace":
        # Most values have nothing to collapse: find the few that do, rewrite only those.
        pattern, repl = TRANSFORM_PATTERNS[name]
        todo = s.str.contains(r"[\t\n\r\f\v]|  ", regex=True).fillna(False).to_numpy(dtype=bool)
        if todo.any():
            s = s.copy()
            s[todo] = s[todo].str.replace(pattern, repl, regex=True)
        return s.str.strip()
    if name == "digits_only":
        return s.str.replace(*TRANSFORM_PATTERNS[name], regex=True)
    if name == "single_line":
        return s.str.strip().str.replace(*TRANSFORM_PATTERNS[name], regex=True)
    if name in LINE_TRANSFORMS and getattr(s.dtype, "storage", None) == "pyarrow":
        return _line_arrow(s, name)
    s = s.str.replace("\r", "", regex=False)
    if name in {"line1", "line2", "line3"}:
        skip = int(name[-1]) - 1
        if skip == 0:
            return s.str.replace(r"(?s)\n.*", "", regex=True).str.strip()
        has_line = (s.str.count("\n") >= skip).fillna(False).to_numpy(dtype=bool)
        pattern = "(?s)^(?:[^\n]*\n){" + str(skip) + "}([^\n]*).*"
        line = s.str.replace(pattern, r"\1", regex=True)
        return line.where(has_line, None).str.strip()
    if name == "lines_after_first":
        has_more = s.str.contains("\n", regex=False).fillna(False).to_numpy(dtype=bool)
        rest = s.str.replace(r"(?s)^[^\n]*\n", "", regex=True).where(has_more, None)
        return rest.str.replace(*TRANSFORM_PATTERNS[name], regex=True).str.strip()
    raise ValueError(f"unknown transform {name}")  # the schema refuses these before we get here


LINE_TRANSFORMS = {"line1": 0, "line2": 1, "line3": 2, "lines_after_first": 1}


def _line_arrow(s: pd.Series, name: str) -> pd.Series:
    """Pick a line with pyarrow's split (3x cheaper than a regex replace over every row).

    The wanted piece sits at position `index` of the split; a fixed-size slice makes a missing
    line a null instead of an out-of-bounds error. Same results as the regex path below, which handles other
    string storages.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    index = LINE_TRANSFORMS[name]
    text = pc.replace_substring(pa.array(s.array), "\r", "")
    # line N: split N times, the Nth piece is the line; lines_after_first: split once, take the rest
    parts = pc.split_pattern(text, "\n", max_splits=1 if name == "lines_after_first" else index + 1)
    picked = pc.list_element(pc.list_slice(parts, index, index + 1, return_fixed_size_list=True), 0)
    out = pd.Series(pd.array(picked, dtype=s.dtype), index=s.index)
    if name == "lines_after_first":
        out = out.str.replace(*TRANSFORM_PATTERNS[name], regex=True)
    return out.str.strip()


def _round_half_up(values, precision: int):
    import numpy as np

    factor = 10.0**precision
    # 1e-9 keeps 1.005 (stored as 1.00499999...) rounding up, as a person would expect for money.
    return np.sign(values) * np.floor(np.abs(values) * factor + 0.5 + 1e-9) / factor


# -- one field --------------------------------------------------------------------------------------
class _FieldProgram:
    """The compiled form of one FieldSpec."""

    def __init__(self, spec: FieldSpec, mapping: Mapping, *, required: bool, label: str):
        self.spec, self.mapping, self.required, self.label = spec, mapping, required, label
        self.lookup: LookupSpec | None = mapping.lookups.get(spec.lookup) if spec.lookup else None

    def source(self, df: pd.DataFrame, path: str) -> pd.Series:
        column = resolve(df, path)
        if column is None:
            raise MappingError(
                problem(
                    self.mapping.path,
                    self.spec.line,
                    self.label,
                    f"source column '{path}' is missing from the extracted data "
                    + (
                        "(source.added: the flow's steps before map add it; did they run?) "
                        if path in self.mapping.source.added
                        else ""
                    )
                    + f"(columns: {', '.join(map(str, df.columns[:20]))})",
                )
            )
        return column

    # expression ----------------------------------------------------------------------------------
    def expression(self, df: pd.DataFrame, tables: dict[str, Any], out: list[_Rejection]) -> pd.Series:
        import pandas as pd

        spec = self.spec
        if spec.kind == "from":
            return self.source(df, spec.source)  # type: ignore[arg-type]
        if spec.kind == "const":
            # A scalar broadcast: building a Python list of len(df) items cost more than the rest.
            return pd.Series(spec.const, index=df.index, dtype=object if spec.const is None else None)
        if spec.kind == "template":
            import string

            result = None
            any_present = None
            for literal, name, _, _ in string.Formatter().parse(spec.template or ""):
                piece = pd.Series(literal, index=df.index, dtype="str") if literal else None
                if name is not None:
                    column = to_text(self.source(df, name))
                    present = ~missing(column)
                    any_present = present if any_present is None else (any_present | present)
                    column = column.where(present, "")
                    piece = column if piece is None else piece + column
                if piece is not None:
                    result = piece if result is None else result + piece
            result = result.str.strip()
            return result.where(any_present, None)
        if spec.kind == "concat":
            result = None
            for path in spec.concat:
                column = to_text(self.source(df, path))
                column = column.where(~missing(column), None)
                if result is None:
                    result = column
                else:
                    joined = result + spec.sep + column
                    result = joined.where(result.notna() & column.notna(), result.fillna(column))
            return result
        return self._lookup(df, tables, out)

    def _lookup(self, df: pd.DataFrame, tables: dict[str, Any], out: list[_Rejection]) -> pd.Series:
        import numpy as np
        import pandas as pd

        spec, lookup = self.spec, self.lookup
        assert lookup is not None
        table = tables[lookup.name]
        keys = [_lookup_key(self.source(df, path), lookup) for path in spec.by]
        present = np.logical_and.reduce([k.notna().to_numpy() for k in keys])
        index = table["index"]
        probe = pd.Index(keys[0]) if len(keys) == 1 else pd.MultiIndex.from_arrays(keys)
        pos = index.get_indexer(probe) if len(index) else np.full(len(df), -1)
        pos[~present] = -1
        found = pos >= 0
        result = table["values"].take(pos)  # -1 takes the null slot: no match, or an empty table
        result.index = df.index

        def shown():  # the key as the user reads it, built only when a row is rejected
            texts = [to_text(k) for k in keys]
            return texts[0] if len(texts) == 1 else texts[0].str.cat(texts[1:], sep=" | ", na_rep="")

        if len(table["ambiguous"]):
            ambiguous = probe.isin(table["ambiguous"]) & present
            if ambiguous.any():
                result = result.where(~ambiguous, None)
                out.append(
                    _Rejection(
                        ambiguous,
                        "lookup_ambiguous",
                        f"several {lookup.system} {lookup.object} records match "
                        f"{' + '.join(spec.by)}; the lookup must be unique",
                        shown(),
                    )
                )
        if spec.default is None and spec.default_lookup is None and self.required:
            unmatched = present & ~found
            if unmatched.any():
                out.append(
                    _Rejection(
                        unmatched,
                        "lookup",
                        f"no {lookup.system} {lookup.object} matches {' + '.join(spec.by)} "
                        f"(lookup '{lookup.name}') and the field has no default",
                        shown(),
                    )
                )
        return result

    # the rest of the pipeline ----------------------------------------------------------------------
    def evaluate(
        self, df: pd.DataFrame, tables: dict[str, Any], cache: dict | None = None
    ) -> tuple[pd.Series, list[_Rejection]]:
        """Return the field's values for the chunk and the rejections it raised.

        :param cache: per-chunk memo of expression + transforms results, so fields computed from the
            same source the same way (QuickBooks Name and CompanyName) pay for it once.
        """
        import numpy as np
        import pandas as pd

        spec, out = self.spec, []
        memo_key = None
        if cache is not None and spec.kind in {"from", "template", "concat"}:
            memo_key = (spec.kind, spec.source, spec.template, spec.concat, spec.sep, spec.transforms)
        if memo_key is not None and memo_key in cache:
            values = cache[memo_key]
        else:
            values = self.expression(df, tables, out)
            if spec.transforms:
                values = to_text(values)
                for name in spec.transforms:
                    values = _transform(values, name)
            if memo_key is not None:
                cache[memo_key] = values
        rejected = np.zeros(len(df), dtype=bool)
        for r in out:
            rejected |= np.asarray(r.mask, dtype=bool)

        if spec.map is not None:
            vm = spec.map
            text = to_text(values)
            keys = text.str.casefold() if vm.casefold else text
            hit, mapped = _lookup_values(keys, vm.values)
            unmapped = ~hit
            if vm.on_unmapped == "keep":
                values = mapped.where(hit, values)
            elif vm.on_unmapped == "reject":
                bad = unmapped & ~missing(text) & ~rejected
                if bad.any():
                    out.append(
                        _Rejection(bad, "unmapped", f"value is not in the value map of '{self.label}'", text)
                    )
                    rejected |= bad
                values = mapped.where(hit, None)
            else:
                values = (
                    mapped.where(hit, vm.fallback) if vm.fallback is not None else mapped.where(hit, None)
                )

        if spec.type == "string":
            values = to_text(values)
            values = values.where(~missing(values), None)

            # From here blanks are nulls, so "empty" is a plain null test (no strip per check).
            def empty(v):
                return v.isna().to_numpy()
        else:
            empty = missing
            values = self._typed(values, out, rejected)
            for r in out:
                rejected |= np.asarray(r.mask, dtype=bool)

        default = spec.default if spec.default_lookup is None else self._default_from_lookup(tables)
        if default is not None:
            values = values.where(~empty(values), default)
            if spec.type == "string" and not isinstance(default, str):
                values = to_text(values)
        elif spec.default_lookup is not None:
            bad = empty(values) & ~rejected
            if bad.any():
                name, key = spec.default_lookup
                lookup = self.mapping.lookups[name]
                out.append(
                    _Rejection(
                        bad,
                        "default_lookup",
                        f"'{self.label}' has no value and its default, the {lookup.system} {lookup.object} "
                        f"record with {' + '.join(lookup.key)} {' | '.join(map(str, key))} (lookup '{name}'), "
                        "was not found or is not unique",
                        None,
                    )
                )
                rejected |= bad

        if spec.max_length is not None:
            text = values if spec.type == "string" else to_text(values)
            lengths = text.str.len()
            over = (lengths > spec.max_length).fillna(False).to_numpy(dtype=bool)
            if over.any():
                if spec.overflow == "truncate" and spec.type == "string":
                    cut = text[over].str.slice(0, spec.max_length).str.rstrip()
                    cut = cut.where(cut.ne("").fillna(False), None)  # " a" cut to 1 is empty, not ""
                    values = values.copy()
                    values[over] = cut
                elif spec.overflow == "reject":
                    bad = over & ~rejected
                    message = (
                        f"'{self.label}' is "
                        + lengths.astype("Int64").astype("str")
                        + f" characters, longer than the {spec.max_length} the target allows"
                    )
                    out.append(_Rejection(bad, "max_length", message, text))
                    rejected |= bad

        if self.required:
            bad = empty(values) & ~rejected
            if bad.any():
                what = "identity field" if self.label == self.mapping.target.identity else "required field"
                out.append(_Rejection(bad, "required", f"{what} '{self.label}' is empty", None))
                rejected |= bad
        if spec.allowed is not None:
            allowed = pd.Series(values).isin(list(spec.allowed)).to_numpy()
            bad = ~allowed & ~empty(values) & ~rejected
            if bad.any():
                shown = ", ".join(repr(v) for v in spec.allowed[:10])
                out.append(
                    _Rejection(bad, "allowed", f"value is not one of the allowed values ({shown})", values)
                )
        return values, out

    def _default_from_lookup(self, tables: dict[str, Any]) -> Any:
        """The value the `default_lookup` lookup holds for its key; None when absent or ambiguous."""
        import pandas as pd

        name, key = self.spec.default_lookup  # type: ignore[misc]
        lookup, table = self.mapping.lookups[name], tables[name]
        parts = [_lookup_key(pd.Series([k], dtype=object), lookup) for k in key]
        if any(part.isna().iloc[0] for part in parts) or not len(table["index"]):
            return None
        probe = pd.Index(parts[0]) if len(parts) == 1 else pd.MultiIndex.from_arrays(parts)
        pos = int(table["index"].get_indexer(probe)[0])
        return None if pos < 0 else table["values"].iloc[pos]

    def _typed(self, values: pd.Series, out: list[_Rejection], rejected) -> pd.Series:
        import numpy as np
        import pandas as pd
        from pandas.api import types

        spec = self.spec
        was_missing = missing(values)
        if spec.type in {"decimal", "integer"}:
            if types.is_numeric_dtype(values.dtype) and not types.is_bool_dtype(values.dtype):
                numbers = values.astype("float64")
            else:
                text = to_text(values).str.strip().str.replace(" ", "", regex=False)
                if spec.decimal_separator == ",":
                    text = text.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
                numbers = pd.to_numeric(text, errors="coerce").astype("float64")
            bad = numbers.isna().to_numpy() & ~was_missing
            if spec.type == "integer":
                fractional = (numbers.notna() & (numbers % 1 != 0)).to_numpy()
                bad |= fractional
            self._parse_failed(bad & ~rejected, values, out, f"not a valid {spec.type}")
            numbers = numbers.where(~bad, np.nan)
            if spec.type == "integer":
                return numbers.round().astype("Int64")
            if spec.precision is not None:
                numbers = pd.Series(_round_half_up(numbers.to_numpy(), spec.precision), index=values.index)
            return numbers
        if spec.type == "boolean":
            if types.is_bool_dtype(values.dtype):
                flags = values.astype("boolean")
            else:
                text = to_text(values).str.strip().str.casefold()
                flags = pd.Series(pd.NA, index=values.index, dtype="boolean")
                flags = flags.mask(text.isin(_TRUE).to_numpy(), True).mask(
                    text.isin(_FALSE).to_numpy(), False
                )
            bad = flags.isna().to_numpy() & ~was_missing
            self._parse_failed(bad & ~rejected, values, out, "not a valid boolean (true/false, yes/no, 1/0)")
            if spec.true_value is True and spec.false_value is False:
                return flags
            result = pd.Series(None, index=values.index, dtype=object)
            result = result.mask(flags.fillna(False).to_numpy(dtype=bool), spec.true_value)
            return result.mask((~flags.fillna(True)).to_numpy(dtype=bool), spec.false_value)
        # date / datetime
        if types.is_datetime64_any_dtype(values.dtype):
            stamps = values if getattr(values.dt, "tz", None) else values.dt.tz_localize("UTC")
        else:
            text = to_text(values).str.strip()
            stamps = pd.to_datetime(text, format=spec.parse or "ISO8601", utc=True, errors="coerce")
        bad = stamps.isna().to_numpy() & ~was_missing
        expected = f"format {spec.parse!r}" if spec.parse else "ISO 8601"
        self._parse_failed(bad & ~rejected, values, out, f"not a valid {spec.type} ({expected} expected)")
        if spec.timezone:
            stamps = stamps.dt.tz_convert(spec.timezone)
        fmt = spec.format or ("%Y-%m-%d" if spec.type == "date" else None)
        if fmt is None:
            fmt = "%Y-%m-%dT%H:%M:%S%z" if spec.timezone else "%Y-%m-%dT%H:%M:%SZ"
        return _format_stamps(stamps, fmt)

    def _parse_failed(self, bad, values, out: list[_Rejection], text: str) -> None:
        if bad.any():
            out.append(_Rejection(bad, "format", f"'{self.label}': value is {text}", to_text(values)))


_ABSENT = object()


def _lookup_values(keys: pd.Series, table: dict[str, Any]) -> tuple[Any, pd.Series]:
    """Return (hit mask, mapped values) for a value map, looking up each distinct key once.

    Factorizing first makes the Python work proportional to the distinct values (a handful of
    picklist entries), not to the rows; the codes then spread the answers back with numpy.
    """
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(keys)
    answers = [table.get(u, _ABSENT) for u in uniques]
    found = np.array([a is not _ABSENT for a in answers] + [False], dtype=bool)
    # code -1 (a null key) points at the extra last slot: not found, None. Taking from a small
    # typed Series keeps text answers in pyarrow (no million Python strings to convert back).
    small = pd.Series([None if a is _ABSENT else a for a in answers] + [None])
    hit = found[codes]
    values = small.take(codes)
    values.index = keys.index
    return hit, values


def _format_stamps(stamps: pd.Series, fmt: str) -> pd.Series:
    """Format timestamps; the two common formats use numpy's C formatter instead of strftime."""
    import numpy as np
    import pandas as pd

    if fmt in {"%Y-%m-%d", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S"}:
        local = stamps.dt.tz_localize(None)
        unit = "D" if fmt == "%Y-%m-%d" else "s"
        raw = local.to_numpy(dtype=f"datetime64[{unit}]")
        text = np.datetime_as_string(raw, unit=unit)
        if fmt.endswith("Z"):
            text = np.char.add(text, "Z")
        result = pd.Series(text, index=stamps.index, dtype="str")
        return result.where(stamps.notna().to_numpy(), None)
    return stamps.dt.strftime(fmt)


def _lookup_key(series: pd.Series, lookup: LookupSpec) -> pd.Series:
    """Normalize a key column the same way on both sides of a lookup."""
    import pandas as pd

    if lookup.key_type == "number":
        numbers = pd.to_numeric(to_text(series).str.replace(",", ".", regex=False), errors="coerce")
        return numbers.astype("float64").round(6)
    text = to_text(series).str.strip()
    text = text.where(text.str.len().gt(0).fillna(False).to_numpy(dtype=bool), None)
    return text.str.casefold() if lookup.casefold else text


def _prepare_table(lookup: LookupSpec, table: pd.DataFrame, mapping: Mapping) -> dict[str, Any]:
    """Index one lookup table once per chunk: unique keys to values, and the ambiguous keys."""
    import pandas as pd

    absent = [c for c in lookup.columns if c not in table.columns]
    if absent:
        raise MappingError(
            problem(
                mapping.path,
                None,
                f"lookups.{lookup.name}",
                f"the {lookup.system} {lookup.object} table lacks column(s) {', '.join(absent)}",
            )
        )
    for column, allowed in lookup.filter.items():
        table = table[table[column].isin(allowed)]
    keys = [_lookup_key(table[c], lookup) for c in lookup.key]
    frame = pd.concat([*keys, table[lookup.value].rename("__value")], axis=1, keys=[*range(len(keys)), "v"])
    frame = frame.dropna(subset=list(range(len(keys))))
    dup = frame.duplicated(subset=list(range(len(keys))), keep=False)
    unique, ambiguous = frame[~dup], frame[dup]

    def make_index(part: pd.DataFrame):
        if len(keys) == 1:
            return pd.Index(part[0])
        return pd.MultiIndex.from_arrays([part[i] for i in range(len(keys))])

    return {
        "index": make_index(unique),
        # Typed values plus one null slot at the end, which position -1 (no match) takes: text ids
        # stay pyarrow strings instead of a column of Python objects to convert back row by row.
        "values": unique["v"].reset_index(drop=True).reindex(range(len(unique) + 1)),
        "ambiguous": make_index(ambiguous.drop_duplicates(subset=list(range(len(keys))))),
    }


# -- the whole mapping ------------------------------------------------------------------------------
class _FieldSet:
    """Compiled programs for a dict of FieldSpecs (the header fields, or the line fields)."""

    def __init__(self, mapping: Mapping, fields: dict[str, FieldSpec], *, identity: str | None, prefix: str):
        self.mapping = mapping
        self.programs = {
            name: _FieldProgram(
                spec, mapping, required=spec.required or name == identity, label=f"{prefix}{name}"
            )
            for name, spec in fields.items()
        }

    def run(self, df: pd.DataFrame, keys: pd.Series, tables: dict[str, Any]):
        """Return (columns dict, rejected frames list, rejected mask)."""
        import numpy as np
        import pandas as pd

        columns: dict[str, pd.Series] = {}
        parts: list[pd.DataFrame] = []
        rejected = np.zeros(len(df), dtype=bool)
        cache: dict = {}
        key_values = None  # the keys as objects, built once and only when some row is rejected
        for name, program in self.programs.items():
            values, rejections = program.evaluate(df, tables, cache)
            columns[name] = values
            for r in rejections:
                mask = np.asarray(r.mask, dtype=bool)
                if not mask.any():
                    continue
                rejected |= mask
                if key_values is None:
                    key_values = keys.to_numpy(dtype=object)
                value = (
                    None
                    if r.value is None
                    else _none_for_null(to_text(pd.Series(r.value)[mask]).to_numpy(dtype=object))
                )  # only the rejected rows are converted to Python objects
                message = r.message if isinstance(r.message, str) else r.message[mask].to_numpy(dtype=object)
                parts.append(
                    pd.DataFrame(
                        {
                            "_source_key": key_values[mask],
                            "field": program.label,
                            "rule": r.rule,
                            "value": value,
                            "message": message,
                        },
                        index=df.index[mask],
                    )
                )
        return columns, parts, rejected


def empty_rejected() -> pd.DataFrame:
    """Return an empty frame with the rejected columns."""
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype=object) for c in REJECTED_COLUMNS})


class CompiledMapping:
    """A mapping ready to apply to chunks; build it once with `Mapping.compile()`."""

    def __init__(self, mapping: Mapping):
        self.mapping = mapping
        self.header = _FieldSet(mapping, mapping.fields, identity=mapping.target.identity, prefix="")
        lines = mapping.lines
        self.lines: _FieldSet | None = (
            _FieldSet(mapping, lines.fields, identity=None, prefix=f"{lines.target}.") if lines else None
        )
        self.columns = [*mapping.fields, *([lines.target] if lines else []), "_source_key"]

    def _tables(self, lookups: dict[str, pd.DataFrame] | None) -> dict[str, Any]:
        lookups = lookups or {}
        tables = {}
        for name, spec in self.mapping.lookups.items():
            if name not in lookups:
                raise MappingError(
                    problem(
                        self.mapping.path,
                        None,
                        f"lookups.{name}",
                        f"lookup table '{name}' ({spec.system} {spec.object}) was not supplied to apply()",
                    )
                )
            tables[name] = _prepare_table(spec, lookups[name], self.mapping)
        return tables

    def apply(self, df: pd.DataFrame, lookups: dict[str, pd.DataFrame] | None = None) -> MappedChunk:
        """Map one chunk.

        :param df: extracted source rows (flattened dotted columns, or nested dicts).
        :param lookups: one DataFrame per declared lookup, holding its key and value columns.
        :returns: the mapped rows, the rejected (row, rule) pairs and the rows the filter skipped.
        """
        import pandas as pd

        mapping = self.mapping
        tables = self._tables(lookups)
        key_column = resolve(df, mapping.source.key)
        if key_column is None:
            raise MappingError(
                problem(mapping.path, None, "source.key", f"key column '{mapping.source.key}' is missing")
            )
        keys = to_text(key_column)

        skipped = pd.DataFrame({c: pd.Series(dtype=object) for c in SKIPPED_COLUMNS})
        if mapping.source.filter:
            keep = pd.Series(True, index=df.index)
            for column, allowed in mapping.source.filter.items():
                source = resolve(df, column)
                if source is None:
                    raise MappingError(
                        problem(
                            mapping.path, None, f"source.filter.{column}", f"column '{column}' is missing"
                        )
                    )
                keep &= source.isin(allowed)
            if not keep.all():
                dropped = ~keep
                skipped = pd.DataFrame(
                    {
                        "_source_key": keys[dropped].to_numpy(dtype=object),
                        "reason": "source filter "
                        + ", ".join(f"{c} in {v}" for c, v in mapping.source.filter.items()),
                    },
                    index=df.index[dropped.to_numpy()],
                )
                df, keys = df[keep], keys[keep]

        columns, parts, rejected = self.header.run(df, keys, tables)
        if self.lines is not None:
            line_lists, line_parts, line_rejected = self._map_lines(df, keys, tables)
            columns[mapping.lines.target] = line_lists  # type: ignore[union-attr]
            parts.extend(line_parts)
            rejected |= line_rejected
        columns["_source_key"] = keys
        frame = pd.DataFrame(columns, index=df.index)  # dict order is self.columns
        if rejected.any():
            frame = frame[~rejected]
        rejected_frame = pd.concat(parts) if parts else empty_rejected()
        rejected_frame["value"] = object_texts(rejected_frame["value"])
        rejected_frame["_source_key"] = object_texts(rejected_frame["_source_key"])
        return MappedChunk(frame=frame, rejected=rejected_frame[REJECTED_COLUMNS], skipped=skipped)

    def _map_lines(self, df: pd.DataFrame, keys: pd.Series, tables: dict[str, Any]):
        import numpy as np
        import pandas as pd

        spec: LinesSpec = self.mapping.lines  # type: ignore[assignment]
        assert self.lines is not None
        column = resolve(df, spec.source)
        if column is None:
            raise MappingError(
                problem(self.mapping.path, None, "lines.source", f"column '{spec.source}' is missing")
            )
        # Salesforce nests child records as {"records": [...]}; plain lists (or the arrays Parquet
        # gives back) are taken as they are; anything else rejects its order instead of the chunk.
        records = column.map(_child_records)
        malformed = records.map(lambda v: v is _MALFORMED).to_numpy(dtype=bool)
        parts: list[pd.DataFrame] = []
        rejected = np.zeros(len(df), dtype=bool)
        if malformed.any():
            shown = column[malformed].map(lambda v: f"{type(v).__name__}: {str(v)[:60]}")
            parts.append(
                pd.DataFrame(
                    {
                        "_source_key": keys.to_numpy(dtype=object)[malformed],
                        "field": spec.target,
                        "rule": "malformed_lines",
                        "value": shown.to_numpy(dtype=object),
                        "message": f"{spec.source} must be a list of records (dicts)",
                    },
                    index=df.index[malformed],
                )
            )
            rejected |= malformed
            records = records.where(~malformed, None)
        exploded = records.explode().dropna()
        counts = exploded.groupby(level=0).size().reindex(df.index, fill_value=0)
        lists = pd.Series([[] for _ in range(len(df))], index=df.index, dtype=object)
        if len(exploded):
            parent = np.asarray(exploded.index)
            child = pd.json_normalize(exploded.tolist(), sep=".")
            child.index = pd.RangeIndex(len(child))
            line_keys = to_text(resolve(child, spec.key)) if resolve(child, spec.key) is not None else None
            if line_keys is None:
                raise MappingError(
                    problem(self.mapping.path, None, "lines.key", f"line key '{spec.key}' is missing")
                )
            parent_keys = pd.Series(keys.reindex(parent).to_numpy(dtype=object), index=child.index)
            columns, line_parts, line_rejected = self.lines.run(child, parent_keys, tables)
            for part in line_parts:
                rows = part.index.to_numpy()
                part = part.copy()
                part["message"] = "line " + line_keys.to_numpy(dtype=object)[rows] + ": " + part["message"]
                part.index = parent[rows]
                parts.append(part)
            bad_parents = pd.Index(parent[line_rejected]).unique()
            rejected |= df.index.isin(bad_parents)
            good = pd.DataFrame(columns, index=child.index)[~line_rejected]
            folded: dict[Any, list] = {}
            for label, record in zip(parent[~line_rejected], good.to_dict("records"), strict=True):
                folded.setdefault(label, []).append(
                    {k: (None if _is_null(v) else v) for k, v in record.items()}
                )
            lists = pd.Series([folded.get(label, []) for label in df.index], index=df.index, dtype=object)
        too_few = (counts.to_numpy() < spec.min_lines) & ~rejected
        if too_few.any():
            parts.append(
                pd.DataFrame(
                    {
                        "_source_key": keys.to_numpy(dtype=object)[too_few],
                        "field": spec.target,
                        "rule": "min_lines",
                        "value": counts.to_numpy()[too_few].astype(str),
                        "message": f"needs at least {spec.min_lines} line(s) in {spec.source}",
                    },
                    index=df.index[too_few],
                )
            )
            rejected |= too_few
        return lists, parts, rejected


_MALFORMED = object()


def _child_records(value: Any) -> Any:
    """Return the list of child records in one cell, [] for none, or _MALFORMED."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    if isinstance(value, dict):
        if "records" not in value:
            return _MALFORMED
        value = value["records"]
        if value is None:
            return []
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays from Parquet
        value = value.tolist()
    if isinstance(value, list | tuple) and all(isinstance(item, dict) for item in value):
        return list(value)
    return _MALFORMED


def object_texts(series: pd.Series) -> pd.Series:
    """Return the column as object dtype holding str or None (pandas 3 would infer str with NaN)."""
    import pandas as pd

    return pd.Series([None if _is_null(v) else str(v) for v in series], index=series.index, dtype=object)


def _none_for_null(values):
    """Return an object array with None for every null, so stored values are text or None."""
    import numpy as np

    return np.array([None if _is_null(v) else v for v in values], dtype=object)


def _is_null(value: Any) -> bool:
    try:
        return value is None or value != value  # NaN and NA are not equal to themselves
    except TypeError:
        return False
