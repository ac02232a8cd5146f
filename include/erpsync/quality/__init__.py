"""Data quality between steps: Great Expectations suites split each chunk into good and bad rows.

    run_checks(chunk, mapping.quality.source, key_column="Id", suite_name="...")  -> QualityResult
    enforce_threshold(result, threshold)   raises QualityThresholdError past the threshold

Importing this package is cheap: GX and pandas load inside `run_checks` only.
"""

from erpsync.quality._checks import (
    BAD_COLUMNS,
    RULE_KINDS,
    QualityConfigError,
    QualityResult,
    QualityThresholdError,
    SeenValues,
    enforce_threshold,
    rule_name,
    run_checks,
)

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
