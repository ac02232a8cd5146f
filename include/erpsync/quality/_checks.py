"""Run a flow's quality rules with Great Expectations and split a chunk into good and bad rows.

Rules are the small dicts of a mapping file's `quality:` section (`{rule: regex, column: Email,
pattern: ...}`); each becomes one GX 1.x expectation. GX is imported inside `run_checks` (about
3.6 s, once per process; `erpsync.quality.preload` loads it in the process tasks are forked from) and runs on an ephemeral context, so nothing is written to disk.

Notes from running GX 1.24 on pandas 3 (reference/airflow.md section 9):
- result_format COMPLETE returns DataFrame index labels in `unexpected_index_list`; the chunk is
  checked on a fresh RangeIndex so labels are positions, then mapped back to the caller's index.
- only not_null reports nulls; regex/length/set rules skip them. Blank strings count as null here,
  as they do in the mapping, so a required field cannot pass as "".
- numpy scalars are turned into Python values (text) before they leave this module.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from erpsync.errors import ConfigError, SyncError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BAD_COLUMNS",
    "RULE_KINDS",
    "QualityConfigError",
    "QualityResult",
    "QualityThresholdError",
    "SeenValues",
    "enforce_threshold",
    "rule_name",
    "run_checks",
]

log = logging.getLogger(__name__)

BAD_COLUMNS = ["_source_key", "rule", "column", "value"]
RULE_KINDS = ("not_null", "unique", "regex", "not_regex", "in_set", "not_in_set", "length_between", "between")
_NEEDS = {
    "not_null": ("column",),
    "unique": (),
    "regex": ("column", "pattern"),
    "not_regex": ("column", "pattern"),
    "in_set": ("column", "values"),
    "not_in_set": ("column", "values"),
    "length_between": ("column",),
    "between": ("column",),
}


class QualityConfigError(ConfigError):
    """A quality rule is malformed or checks a column the data does not have."""


class QualityThresholdError(SyncError):
    """Too large a share of the rows failed the quality rules; the message says which rules, how often."""


@dataclass
class QualityResult:
    """The outcome of one suite on one chunk.

    :ivar good: rows that passed every rule (the caller's index and columns).
    :ivar bad: one row per failed (row, rule): `_source_key, rule, column, value` (value as text).
    :ivar bad_rows: the failing rows themselves, for the quarantine payload.
    :ivar failed_by_rule: rule name -> number of rows it failed (rules that failed only).
    :ivar total: number of rows checked.
    """

    good: pd.DataFrame
    bad: pd.DataFrame
    bad_rows: pd.DataFrame
    failed_by_rule: dict[str, int]
    total: int
    suite_name: str = ""
    rules: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bad_count(self) -> int:
        """Number of distinct rows that failed at least one rule."""
        return len(self.bad_rows)

    @property
    def bad_share(self) -> float:
        """Failed rows over checked rows (0.0 for an empty chunk)."""
        return self.bad_count / self.total if self.total else 0.0


def rule_name(rule: dict[str, Any]) -> str:
    """Return the rule's name: its `name`, else `<rule>:<column>` (compound columns joined by +)."""
    if rule.get("name"):
        return str(rule["name"])
    column = rule.get("column") or "+".join(rule.get("columns", []))
    return f"{rule.get('rule')}:{column}"


def _columns(rule: dict[str, Any]) -> list[str]:
    return list(rule.get("columns") or [rule["column"]])


def _validate(df: pd.DataFrame, rules: list[dict[str, Any]], key_column: str, suite: str) -> None:
    """Refuse malformed rules and unknown columns before GX sees them, naming suite and rule."""
    if key_column not in df.columns:
        raise QualityConfigError(f"key column '{key_column}' is not in the data", where=f"suite {suite}")
    names: set[str] = set()
    for index, rule in enumerate(rules):
        where = f"suite {suite}, rule {index} ({rule_name(rule)})"
        kind = rule.get("rule")
        if kind not in _NEEDS:
            raise QualityConfigError(f"unknown rule {kind!r} (known: {', '.join(RULE_KINDS)})", where=where)
        for needed in _NEEDS[kind]:
            if needed not in rule:
                raise QualityConfigError(f"rule {kind} needs '{needed}'", where=where)
        if kind == "unique" and ("column" in rule) == ("columns" in rule):
            raise QualityConfigError("rule unique needs exactly one of 'column' or 'columns'", where=where)
        if kind in {"length_between", "between"} and "min" not in rule and "max" not in rule:
            raise QualityConfigError(f"rule {kind} needs min, max or both", where=where)
        if "pattern" in rule:
            try:
                re.compile(rule["pattern"])
            except re.error as exc:
                raise QualityConfigError(
                    f"bad regular expression {rule['pattern']!r}: {exc}", where=where
                ) from None
        absent = [c for c in _columns(rule) if c not in df.columns]
        if absent:
            raise QualityConfigError(f"column(s) {', '.join(absent)} not in the data", where=where)
        name = rule_name(rule)
        if name in names:
            raise QualityConfigError(f"two rules are named '{name}'; give one a name", where=where)
        names.add(name)


def _expectation(gxe, rule: dict[str, Any]):
    kind, meta = rule["rule"], {"erpsync_rule": rule_name(rule)}
    column = rule.get("column")
    if kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=column, meta=meta)
    if kind == "unique":
        if "columns" in rule:
            return gxe.ExpectCompoundColumnsToBeUnique(column_list=list(rule["columns"]), meta=meta)
        return gxe.ExpectColumnValuesToBeUnique(column=column, meta=meta)
    if kind == "regex":
        return gxe.ExpectColumnValuesToMatchRegex(column=column, regex=rule["pattern"], meta=meta)
    if kind == "not_regex":
        return gxe.ExpectColumnValuesToNotMatchRegex(column=column, regex=rule["pattern"], meta=meta)
    if kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(rule["values"]), meta=meta)
    if kind == "not_in_set":
        return gxe.ExpectColumnValuesToNotBeInSet(column=column, value_set=list(rule["values"]), meta=meta)
    bounds = {"min_value": rule.get("min"), "max_value": rule.get("max")}
    if kind == "length_between":
        return gxe.ExpectColumnValueLengthsToBeBetween(column=column, meta=meta, **bounds)
    return gxe.ExpectColumnValuesToBeBetween(column=column, meta=meta, **bounds)


def _prepared(df: pd.DataFrame, rules: list[dict[str, Any]]) -> pd.DataFrame:
    """Return the checked columns on a RangeIndex, blank strings turned into nulls."""
    from pandas.api import types

    wanted = list(dict.fromkeys(c for rule in rules for c in _columns(rule)))
    work = df[wanted].reset_index(drop=True)
    for column in wanted:
        series = work[column]
        if series.dtype == object:  # mixed values: only real strings can be blank
            blank = series.map(lambda v: isinstance(v, str) and not v.strip()).astype(bool)
        elif types.is_string_dtype(series.dtype):
            blank = series.str.strip().eq("").fillna(False)
        else:
            continue
        if blank.any():
            work[column] = series.where(~blank.to_numpy(dtype=bool), None)
    return work


def _run_gx(work: pd.DataFrame, rules: list[dict[str, Any]], suite_name: str):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no usage-statistics calls from a worker
    started = time.perf_counter()
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    imported = time.perf_counter()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # tqdm noise in task logs
    # The overhead a quality task pays before checking anything (erpsync.quality.preload cuts the import).
    log.info(
        "Great Expectations ready in %.2f s (import %.2f s, context %.2f s)",
        time.perf_counter() - started,
        imported - started,
        time.perf_counter() - imported,
    )
    batch = (
        context.data_sources.add_pandas("erpsync")
        .add_dataframe_asset("chunk")
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(
        gx.ExpectationSuite(name=suite_name, expectations=[_expectation(gxe, r) for r in rules])
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite_name}__validation", data=batch, suite=suite)
    )
    return definition.run(batch_parameters={"dataframe": work}, result_format="COMPLETE")


def _exception_message(info: Any) -> str | None:
    """Return the error GX hit while computing a rule, if any.

    GX 1.x reports it either directly ({"raised_exception": True, ...}) or per metric
    ({"MetricConfigurationID(...)": {"raised_exception": True, "exception_message": ...}}).
    """
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


class SeenValues:
    """Values the `unique` rules saw in earlier chunks of one run, kept as 64-bit hashes.

    A million keys cost 8 MB. The first occurrence wins: a later row repeating a value from an
    earlier chunk fails the rule, the earlier row (already passed on) is not recalled.
    """

    def __init__(self) -> None:
        self._seen: dict[str, Any] = {}

    def check_and_add(self, rule: str, values: pd.DataFrame) -> Any:
        """Return positions of rows whose (non-null) values an earlier chunk had; remember these."""
        import numpy as np
        import pandas as pd

        present = values.notna().all(axis=1).to_numpy()
        hashes = pd.util.hash_pandas_object(values.astype("str"), index=False).to_numpy()
        seen = self._seen.get(rule)
        repeated = np.zeros(len(values), dtype=bool)
        order = np.argsort(hashes)
        if seen is not None and len(seen):
            # `seen` stays sorted: a binary search per value (probes in order, which keeps the search
            # cache-friendly) instead of np.isin re-sorting everything seen for every chunk.
            probes = hashes[order]
            at = np.searchsorted(seen, probes).clip(max=len(seen) - 1)
            repeated[order] = seen[at] == probes
            repeated &= present
        fresh = hashes[order][present[order]]
        # Two sorted runs: the stable sort (timsort) merges them in linear time.
        self._seen[rule] = fresh if seen is None else np.sort(np.concatenate([seen, fresh]), kind="stable")
        return np.flatnonzero(repeated)


def run_checks(
    df: pd.DataFrame,
    rules: list[dict[str, Any]],
    *,
    key_column: str,
    suite_name: str,
    across: SeenValues | None = None,
) -> QualityResult:
    """Check `df` against `rules`; return passing rows and one bad row per failed (row, rule).

    :param df: the chunk (extracted rows, or mapped rows with `_source_key`).
    :param rules: rule dicts from the mapping's quality section.
    :param key_column: column identifying a row in the source (becomes `_source_key` of bad rows).
    :param suite_name: name of the GX suite (shown in errors and reports).
    :param across: pass the same SeenValues for every chunk of a run to make `unique` rules hold
        across chunks, not only within each (GX sees one chunk at a time).
    :raises QualityConfigError: a rule is malformed or names a missing column, or GX could not run it.
    """
    import numpy as np
    import pandas as pd

    from erpsync.mapping._compile import object_texts, to_text

    _validate(df, rules, key_column, suite_name)
    total = len(df)
    empty_bad = pd.DataFrame({c: pd.Series(dtype=object) for c in BAD_COLUMNS})
    if not rules or total == 0:
        return QualityResult(df, empty_bad, df.iloc[0:0], {}, total, suite_name, list(rules))

    work = _prepared(df, rules)
    outcome = _run_gx(work, rules, suite_name)
    by_name = {rule_name(r): r for r in rules}
    keys = to_text(df[key_column]).to_numpy(dtype=object)
    failed = np.zeros(total, dtype=bool)
    parts: list[pd.DataFrame] = []
    counts: dict[str, int] = {}
    for result in outcome.results:
        name = (result.expectation_config.meta or {}).get("erpsync_rule")
        rule = by_name[name]
        failure = _exception_message(result.exception_info)
        if failure is not None:
            raise QualityConfigError(
                f"Great Expectations could not run the rule: {failure}",
                where=f"suite {suite_name}, rule {name}",
            )
        positions = np.asarray(result.result.get("unexpected_index_list") or [], dtype=np.int64)
        if not result.success and not len(positions):
            # A failed expectation must name its rows; passing the chunk silently would hide it.
            raise QualityConfigError(
                f"Great Expectations failed the rule without naming rows: {result.result}",
                where=f"suite {suite_name}, rule {name}",
            )
        if across is not None and rule["rule"] == "unique":
            earlier = across.check_and_add(name, work[_columns(rule)])
            positions = np.concatenate([positions, earlier])
        if not len(positions):
            continue
        positions = np.unique(positions)
        failed[positions] = True
        counts[name] = len(positions)
        columns = _columns(rule)
        texts = [to_text(work[c]).to_numpy(dtype=object)[positions] for c in columns]
        value = (
            texts[0]
            if len(texts) == 1
            else np.array([" | ".join(map(str, t)) for t in zip(*texts, strict=False)], dtype=object)
        )
        parts.append(
            pd.DataFrame(
                {
                    "_source_key": keys[positions],
                    "rule": name,
                    "column": "+".join(columns),
                    "value": value,
                },
                index=df.index[positions],
            )
        )
    bad = pd.concat(parts) if parts else empty_bad
    bad["value"] = object_texts(bad["value"])
    if counts:
        log.info("Quality suite %s: %d of %d rows failed (%s)", suite_name, int(failed.sum()), total, counts)
    return QualityResult(df[~failed], bad[BAD_COLUMNS], df[failed], counts, total, suite_name, list(rules))


def enforce_threshold(result: QualityResult, threshold: float) -> None:
    """Raise QualityThresholdError when the failed share of rows is above `threshold` (0..1).

    A share equal to the threshold passes: the threshold is the largest share the flow accepts.
    """
    if not 0 <= threshold <= 1:
        raise ConfigError(f"quality threshold must be between 0 and 1, got {threshold!r}")
    if not result.total or result.bad_share <= threshold:
        return
    detail = ", ".join(
        f"{name} failed {count} time{'s' if count != 1 else ''}"
        for name, count in sorted(result.failed_by_rule.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    raise QualityThresholdError(
        f"{result.bad_count} of {result.total} rows ({result.bad_share:.1%}) failed quality suite "
        f"'{result.suite_name}', above the threshold of {threshold:.1%}: {detail}",
        where=f"suite {result.suite_name}",
        details={
            "failed_by_rule": dict(result.failed_by_rule),
            "bad": result.bad_count,
            "total": result.total,
        },
    )
