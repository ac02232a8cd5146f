"""Great Expectations splits chunks into good rows and (row, rule, column, value) quarantine rows.

GX costs about 3.6 s to import, so the suite runs it a few times on small frames: one run covers
every rule kind at once (module fixture), the rest test the edges that need no GX at all.
"""

from __future__ import annotations

import pandas as pd
import pytest

from erpsync.errors import ConfigError, SyncError
from erpsync.quality import (
    BAD_COLUMNS,
    QualityConfigError,
    QualityResult,
    QualityThresholdError,
    SeenValues,
    enforce_threshold,
    run_checks,
)

RULES = [
    {"rule": "not_null", "column": "Name"},
    {"rule": "unique", "column": "Id"},
    {"rule": "unique", "columns": ["Company", "City"]},
    {"rule": "regex", "column": "Email", "pattern": r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$"},
    {"rule": "not_regex", "column": "Name", "pattern": "^TEST", "name": "no_test_accounts"},
    {"rule": "in_set", "column": "Type", "values": ["Customer", "Partner"]},
    {"rule": "not_in_set", "column": "Country", "values": ["XX"]},
    {"rule": "length_between", "column": "Name", "min": 1, "max": 10},
    {"rule": "between", "column": "Revenue", "min": 0, "max": 1000},
]


@pytest.fixture(scope="module")
def chunk() -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "Id": ["a", "b", "c", "c", "e", "f", "g", "h"],
            "Name": ["Acme", None, "TEST Co", "Beta", "Far too long a name", "Gamma", "  ", "Delta"],
            "Email": ["x@acme.nl", "bad", None, "b@beta.com", "e@e.org", "f@f.de", "g@g.io", "h@h.nl"],
            "Type": ["Customer", "Partner", "Customer", "Alien", None, "Customer", "Customer", "Partner"],
            "Country": ["NL", "NL", "XX", "NL", "NL", "NL", "NL", "BE"],
            "Revenue": [10.0, 20.0, 30.0, 40.0, 50.0, 5000.0, 1.0, 5.0],
            "Company": ["A", "B", "C", "D", "E", "F", "A", "H"],
            "City": ["Ams", "Rot", "Utr", "Ein", "Gro", "Haa", "Ams", "Hil"],
        }
    )
    df.index = [f"row{i}" for i in range(len(df))]  # non-default labels must survive
    return df


@pytest.fixture(scope="module")
def result(chunk) -> QualityResult:
    return run_checks(chunk, RULES, key_column="Id", suite_name="accounts_source")


def test_every_rule_kind_reports_its_rows(result):
    """Each failing (row, rule) comes back once, with its key, rule name, column and value as text."""
    bad = set(result.bad.itertuples(index=False, name=None))
    assert bad == {
        ("b", "not_null:Name", "Name", None),
        ("g", "not_null:Name", "Name", None),  # blank counts as null
        ("c", "unique:Id", "Id", "c"),
        ("c", "unique:Id", "Id", "c"),
        ("a", "unique:Company+City", "Company+City", "A | Ams"),
        ("g", "unique:Company+City", "Company+City", "A | Ams"),
        ("b", "regex:Email", "Email", "bad"),
        ("c", "no_test_accounts", "Name", "TEST Co"),
        ("c", "in_set:Type", "Type", "Alien"),
        ("c", "not_in_set:Country", "Country", "XX"),
        ("e", "length_between:Name", "Name", "Far too long a name"),
        ("f", "between:Revenue", "Revenue", "5000"),
    }
    assert list(result.bad.columns) == BAD_COLUMNS
    assert set(result.bad.index) <= set(result.bad_rows.index)


def test_counts_and_split(result, chunk):
    """Good rows keep the caller's index and columns; counts are plain ints (XCom-safe)."""
    assert result.total == 8 and result.bad_count == 7
    assert list(result.good.index) == ["row7"] and list(result.good.columns) == list(chunk.columns)
    assert set(result.good.index) | set(result.bad_rows.index) == set(chunk.index)
    assert result.failed_by_rule == {
        "not_null:Name": 2,
        "unique:Id": 2,
        "unique:Company+City": 2,
        "regex:Email": 1,
        "no_test_accounts": 1,
        "in_set:Type": 1,
        "not_in_set:Country": 1,
        "length_between:Name": 1,
        "between:Revenue": 1,
    }
    assert all(type(v) is int for v in result.failed_by_rule.values())
    assert all(v is None or type(v) is str for v in result.bad["value"])


def test_nulls_are_only_reported_by_not_null(result):
    """Row c has no Email: the regex rule does not flag it, as GX skips nulls outside not_null."""
    flagged = result.bad[(result.bad["_source_key"] == "c") & (result.bad["rule"] == "regex:Email")]
    assert flagged.empty


def test_threshold_passes_at_or_below_and_fails_above(result):
    share = result.bad_share
    enforce_threshold(result, share)  # equal to the threshold passes
    enforce_threshold(result, 1.0)
    with pytest.raises(QualityThresholdError) as caught:
        enforce_threshold(result, share - 0.01)
    message = str(caught.value)
    assert isinstance(caught.value, SyncError)
    assert f"{result.bad_count} of 8 rows" in message and "accounts_source" in message
    assert "not_null:Name failed 2 times" in message and "regex:Email failed 1 time" in message
    assert caught.value.details["failed_by_rule"]["unique:Id"] == 2


def test_threshold_must_be_a_share():
    empty = QualityResult(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), {}, 0)
    enforce_threshold(empty, 0.0)  # nothing checked, nothing to fail
    with pytest.raises(ConfigError, match="between 0 and 1"):
        enforce_threshold(empty, 5)


def test_mapped_rows_checked_by_the_flow_suite():
    """The account flow's own target suite runs on mapped rows keyed by _source_key."""
    from erpsync.mapping import load_flow

    mapping = load_flow("sf_accounts_to_qb_customers")
    mapped = pd.DataFrame(
        {
            "Name": ["Acme", "Acme"],
            "dataext.SalesforceId": ["001A", "001A"],
            "BillAddress.City": ["Amsterdam", "X" * 40],
            "CustomerTypeRef.FullName": ["Commercial", "Spaceship"],
            "_source_key": ["001A", "001B"],
        }
    )
    result = run_checks(mapped, mapping.quality.target, key_column="_source_key", suite_name="t")
    assert result.failed_by_rule == {
        "unique:dataext.SalesforceId": 2,
        "length_between:BillAddress.City": 1,
        "in_set:CustomerTypeRef.FullName": 1,
    }
    assert result.good.empty and set(result.bad["_source_key"]) == {"001A", "001B"}


@pytest.mark.parametrize(
    ("rules", "key", "expected"),
    [
        ([{"rule": "not_null", "column": "Nope"}], "Id", "column(s) Nope not in the data"),
        ([{"rule": "sparkles", "column": "Id"}], "Id", "unknown rule 'sparkles'"),
        ([{"rule": "regex", "column": "Id"}], "Id", "needs 'pattern'"),
        ([{"rule": "regex", "column": "Id", "pattern": "(["}], "Id", "bad regular expression"),
        ([{"rule": "between", "column": "Id"}], "Id", "needs min, max or both"),
        ([{"rule": "unique"}], "Id", "exactly one of 'column' or 'columns'"),
        ([{"rule": "not_null", "column": "Id"}] * 2, "Id", "two rules are named"),
        ([], "Key", "key column 'Key' is not in the data"),
    ],
)
def test_bad_rules_are_config_errors_naming_suite_and_rule(rules, key, expected):
    with pytest.raises(QualityConfigError) as caught:
        run_checks(pd.DataFrame({"Id": ["a"]}), rules, key_column=key, suite_name="s1")
    assert expected in str(caught.value) and "suite s1" in str(caught.value)


def test_rule_gx_cannot_compute_is_an_error_not_a_pass():
    """`between` on text makes GX fail inside a metric; that must not read as "no bad rows"."""
    df = pd.DataFrame({"Id": ["a", "b"], "X": ["1", "zz"]})
    with pytest.raises(QualityConfigError) as caught:
        run_checks(
            df, [{"rule": "between", "column": "X", "min": 0, "max": 5}], key_column="Id", suite_name="s2"
        )
    assert "suite s2, rule between:X" in str(caught.value) and "could not run the rule" in str(caught.value)


def test_blank_text_in_object_columns_counts_as_null():
    """Object columns (mixed values) get the same blank-is-null rule as text columns."""
    df = pd.DataFrame({"Id": ["1", "2", "3"], "Name": pd.Series(["Acme", "  ", 7], dtype=object)})
    result = run_checks(df, [{"rule": "not_null", "column": "Name"}], key_column="Id", suite_name="o")
    assert result.failed_by_rule == {"not_null:Name": 1} and result.bad["_source_key"].tolist() == ["2"]


def test_unique_across_chunks():
    """With one SeenValues per run, a key repeated in a later chunk fails there (the first wins)."""
    rules = [{"rule": "unique", "column": "Email"}, {"rule": "unique", "columns": ["A", "B"]}]
    seen = SeenValues()
    first = pd.DataFrame({"Id": ["1", "2"], "Email": ["a@x", None], "A": ["p", "q"], "B": ["1", "2"]})
    second = pd.DataFrame(
        {"Id": ["3", "4", "5"], "Email": ["a@x", None, "c@x"], "A": ["q", "p", "p"], "B": ["2", "9", "9"]},
        index=[10, 11, 12],
    )
    assert run_checks(first, rules, key_column="Id", suite_name="u", across=seen).failed_by_rule == {}
    result = run_checks(second, rules, key_column="Id", suite_name="u", across=seen)
    assert result.failed_by_rule == {"unique:Email": 1, "unique:A+B": 3}
    assert set(result.bad.itertuples(index=False, name=None)) == {
        ("3", "unique:Email", "Email", "a@x"),
        ("3", "unique:A+B", "A+B", "q | 2"),
        ("4", "unique:A+B", "A+B", "p | 9"),
        ("5", "unique:A+B", "A+B", "p | 9"),
    }
    assert list(result.good.index) == []
    # without the shared state each chunk is judged alone
    assert run_checks(second, rules[:1], key_column="Id", suite_name="u").failed_by_rule == {}


def test_empty_chunk_and_no_rules_skip_gx():
    df = pd.DataFrame({"Id": pd.Series(dtype="str")})
    result = run_checks(df, [{"rule": "not_null", "column": "Id"}], key_column="Id", suite_name="s")
    assert result.total == 0 and result.good.empty and result.bad.empty and result.bad_share == 0.0
    df = pd.DataFrame({"Id": ["a"]})
    result = run_checks(df, [], key_column="Id", suite_name="s")
    assert len(result.good) == 1 and result.failed_by_rule == {}
