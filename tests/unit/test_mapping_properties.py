"""Property-based tests: a mapped value never breaks a declared target constraint unless its row
is rejected, and the vectorized compiler agrees with the plain row-by-row interpreter."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erpsync.mapping import load_flow, load_mapping
from erpsync.mapping._rowwise import apply_rowwise

# Whitespace limited to what pyarrow (RE2) and Python agree on; accents and punctuation included.
ALPHABET = "abcXYZéÉøßü019 -.,'@&/\t\n"
text = st.one_of(st.none(), st.text(alphabet=ALPHABET, max_size=60))
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ACCOUNT_COLUMNS = [
    "Name",
    "AccountNumber",
    "BillingStreet",
    "BillingCity",
    "BillingState",
    "BillingPostalCode",
    "BillingCountry",
    "ShippingStreet",
    "ShippingCity",
    "ShippingState",
    "ShippingPostalCode",
    "ShippingCountry",
    "Phone",
    "Fax",
    "Email__c",
    "Description",
]
TYPES = ["Customer - Direct", "Customer - Channel", "Prospect", "Other", "Unknown type", "", None]
OWNERS = [("Angela", "Richer"), ("Bob", "Smith"), ("Carl", "Unknown"), (None, None), ("angela", "richer")]
REPS = pd.DataFrame(
    {
        "FirstName": ["Angela", "Bob", "Bob"],
        "LastName": ["Richer", "Smith", "Smith"],
        "Initial": ["AR", "BS", "BS2"],
    }
)


@st.composite
def accounts(draw):
    n = draw(st.integers(min_value=1, max_value=25))
    rows = []
    for i in range(n):
        row = {c: draw(text) for c in ACCOUNT_COLUMNS}
        first, last = draw(st.sampled_from(OWNERS))
        row.update(
            {
                "Id": draw(st.sampled_from([f"001{i:015d}", None, ""])) if i % 7 == 3 else f"001{i:015d}",
                "Type": draw(st.sampled_from(TYPES)),
                "Owner.FirstName": first,
                "Owner.LastName": last,
            }
        )
        rows.append(row)
    return rows


def _clean(value):
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


@pytest.fixture(scope="module")
def account_mapping():
    mapping = load_flow("sf_accounts_to_qb_customers")
    return mapping, mapping.compile()


@SETTINGS
@given(rows=accounts())
def test_accounts_mapping_keeps_qb_constraints_and_matches_rowwise(account_mapping, rows):
    """Every mapped customer fits QuickBooks' lengths, required and allowed values; every row is
    either mapped or rejected; and the row-by-row interpreter gives exactly the same result."""
    mapping, compiled = account_mapping
    df = pd.DataFrame(rows)
    out = compiled.apply(df, {"sales_reps": REPS})

    # partition: each input row is mapped or rejected, never both, never lost
    assert set(out.frame.index).isdisjoint(out.rejected.index)
    assert set(out.frame.index) | set(out.rejected.index) == set(df.index)
    for name, spec in mapping.fields.items():
        column = out.frame[name]
        if spec.max_length is not None:
            assert column.dropna().astype(str).str.len().le(spec.max_length).all(), name
        if spec.required or name == mapping.target.identity:
            assert column.notna().all() and column.astype(str).str.strip().ne("").all(), name
    allowed = next(r["values"] for r in mapping.quality.target if r["rule"] == "in_set")
    assert out.frame["CustomerTypeRef.FullName"].isin(allowed).all()
    assert out.frame["SalesRepRef.FullName"].isin(["AR", "ADM"]).all()  # "Bob Smith" is ambiguous

    expected_rows, expected_rejected = apply_rowwise(mapping, rows, {"sales_reps": REPS.to_dict("records")})
    got_rows = [{k: _clean(v) for k, v in row.items()} for row in out.frame.to_dict("records")]
    assert got_rows == expected_rows
    got_rejected = sorted(
        (r["_source_key"] or "", r["field"], r["rule"], r["value"] or "")
        for r in out.rejected.to_dict("records")
    )
    want_rejected = sorted(
        (r["_source_key"] or "", r["field"], r["rule"], r["value"] or "") for r in expected_rejected
    )
    assert got_rejected == want_rejected


def _mapping_with(field_yaml: str):
    folder = Path(tempfile.mkdtemp(prefix="erpsync-prop-"))
    path = folder / "p.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            flow: p
            source: {system: salesforce, object: Account, key: Id}
            target: {system: quickbooks, object: Customer, identity: Key}
            fields:
              Key: {from: Id}
            """
        )
        + f"  F: {field_yaml}\n"
    )
    return load_mapping(path)


@st.composite
def constrained_fields(draw):
    """A random string field: optional transform, max length with a policy, required, allowed, default."""
    max_length = draw(st.integers(min_value=1, max_value=12))
    overflow = draw(st.sampled_from(["truncate", "reject"]))
    allowed = draw(
        st.one_of(
            st.none(), st.lists(st.text(alphabet="abc ", min_size=1, max_size=14), min_size=1, max_size=4)
        )
    )
    required = draw(st.booleans())
    options = [f"max_length: {max_length}", f"overflow: {overflow}", f"required: {str(required).lower()}"]
    if draw(st.booleans()):
        options.append(
            f"transform: {draw(st.sampled_from(['strip', 'upper', 'collapse_whitespace', 'line1']))}"
        )
    if allowed is not None:
        options.append("allowed: [" + ", ".join(f"'{a}'" for a in allowed) + "]")
    candidates = [a for a in (allowed or ["dflt"]) if len(a) <= max_length and a.strip()]
    if candidates and draw(st.booleans()):
        options.append(f"default: '{draw(st.sampled_from(candidates))}'")
    return "{from: V, " + ", ".join(options) + "}", max_length, required, allowed


@SETTINGS
@given(
    field=constrained_fields(),
    data=st.lists(st.one_of(st.none(), st.text(alphabet="abc \n", max_size=20)), min_size=1, max_size=30),
)
def test_declared_constraints_hold_unless_rejected(field, data):
    """Whatever the field's policy, a value in the output obeys max length, required and allowed."""
    yaml_text, max_length, required, allowed = field
    mapping = _mapping_with(yaml_text)
    df = pd.DataFrame({"Id": [f"k{i}" for i in range(len(data))], "V": data})
    out = mapping.compile().apply(df)
    values = out.frame["F"]
    assert values.dropna().str.len().le(max_length).all()
    if required:
        assert values.notna().all()
    if allowed is not None:
        assert values.dropna().isin(allowed).all()
    assert set(out.frame.index) | set(out.rejected.index) == set(df.index)
    assert set(out.frame.index).isdisjoint(out.rejected.index)
    assert set(out.rejected["rule"]) <= {"max_length", "required", "allowed"}


@SETTINGS
@given(
    precision=st.integers(min_value=0, max_value=4),
    numbers=st.lists(
        st.one_of(
            st.none(),
            st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
            st.text(alphabet="0123456789.,-x", max_size=8),
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_decimal_never_exceeds_its_precision(precision, numbers):
    mapping = _mapping_with(f"{{from: V, type: decimal, precision: {precision}}}")
    df = pd.DataFrame({"Id": [f"k{i}" for i in range(len(numbers))], "V": pd.Series(numbers, dtype=object)})
    out = mapping.compile().apply(df)
    for value in out.frame["F"].dropna():
        assert abs(value * 10**precision - round(value * 10**precision)) < 1e-6 * max(
            1.0, abs(value) * 10**precision
        )
    assert set(out.frame.index) | set(out.rejected.index) == set(df.index)
    assert set(out.rejected["rule"]) <= {"format"}


# -- random field specs: the compiler and the row-by-row interpreter agree --------------------------
CELL = st.one_of(
    st.none(),
    st.text(alphabet="ab Yn0129.,-\n", max_size=8),
    st.sampled_from(["yes", "no", "1", "0", "2.675", "-1.005", "  ", "Net 14", "a\nb\nc"]),
)
DATE = st.sampled_from(
    [
        None,
        "",
        "2024-03-01",
        "2024-03-01T23:30:00.000+0000",
        "2024-12-31T23:30:00Z",
        "2024-02-30",
        "01-03-2024",
        "2024-03-01T10:00:00+01:00",
        "2024-07-01T00:15:00.000+0000",
    ]
)
NUMBER = st.one_of(st.none(), st.integers(min_value=-999_999, max_value=999_999).map(lambda n: n / 1000))


@st.composite
def field_specs(draw):
    """A valid random field: expression, transforms, value map, type, default, length, required."""
    kind = draw(st.sampled_from(["from", "template", "concat", "const", "from_number", "from_date"]))
    ftype = draw(st.sampled_from(["string", "string", "decimal", "integer", "boolean"]))
    parts = []
    if kind == "from_date":
        parts.append("from: D")
        parts.append(f"type: {draw(st.sampled_from(['date', 'datetime']))}")
        if draw(st.booleans()):
            parts.append("timezone: Europe/Amsterdam")
        if draw(st.booleans()):
            parts.append(
                f'format: "{draw(st.sampled_from(["%d-%m-%Y", "%Y-%m-%dT%H:%M:%S", "%Y%m%d %H%M"]))}"'
            )
        if draw(st.booleans()):
            parts.append(f"max_length: {draw(st.integers(min_value=5, max_value=12))}, overflow: reject")
        if draw(st.booleans()):
            parts.append("required: true")
        return "{" + ", ".join(parts) + "}"
    if kind == "from":
        parts.append(f"from: {draw(st.sampled_from(['A', 'B']))}")
    elif kind == "from_number":
        parts.append("from: N")
    elif kind == "template":
        parts.append('template: "{A}-{B} x"')
    elif kind == "concat":
        parts.append('concat: [A, B], sep: "/"')
    else:
        parts.append(f"const: {draw(st.sampled_from(['abc', '7', 'true', '2.5', 'yes']))}")
    if kind != "const" and draw(st.booleans()):
        names = draw(
            st.lists(
                st.sampled_from(
                    [
                        "strip",
                        "upper",
                        "collapse_whitespace",
                        "line1",
                        "line2",
                        "lines_after_first",
                        "digits_only",
                        "single_line",
                    ]
                ),
                min_size=1,
                max_size=2,
            )
        )
        parts.append("transform: [" + ", ".join(names) + "]")
    if draw(st.booleans()):
        policy = draw(st.sampled_from(["fallback", "keep", "reject"]))
        fallback = draw(st.sampled_from(["", ", fallback: zz", ", fallback: 3"]))
        parts.append(
            "map: {values: {a: A1, '1': 10, yes: 'no', 'Net 14': '14'}, on_unmapped: "
            + policy
            + fallback
            + "}"
        )
    if ftype != "string":
        parts.append(f"type: {ftype}")
    if ftype == "decimal" and draw(st.booleans()):
        parts.append(f"precision: {draw(st.integers(min_value=0, max_value=2))}")
    if ftype == "boolean" and draw(st.booleans()):
        parts.append('true_value: "Y", false_value: "N"')
    if draw(st.booleans()):
        parts.append(f"max_length: {draw(st.integers(min_value=1, max_value=6))}")
        parts.append(f"overflow: {draw(st.sampled_from(['truncate', 'reject']))}")
    if draw(st.booleans()):
        parts.append(f"required: {draw(st.sampled_from(['true', 'false']))}")
    return "{" + ", ".join(parts) + "}"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=field_specs(),
    cells=st.lists(st.tuples(CELL, CELL, NUMBER, DATE), min_size=1, max_size=12),
)
def test_compiler_agrees_with_rowwise_interpreter(spec, cells):
    """For any field the schema accepts, both implementations give the same values and rejections."""
    from erpsync.mapping import MappingError

    try:
        mapping = _mapping_with(spec)
    except MappingError as exc:  # e.g. a default longer than max_length: the loader must say so
        assert exc.problems and exc.line is not None
        return
    rows = [{"Id": f"k{i}", "A": a, "B": b, "N": n, "D": d} for i, (a, b, n, d) in enumerate(cells)]
    df = pd.DataFrame(rows)
    df["N"] = df["N"].astype("float64")
    out = mapping.compile().apply(df)
    expected_rows, expected_rejected = apply_rowwise(mapping, df.to_dict("records"))
    got_rows = [{k: _clean(v) for k, v in row.items()} for row in out.frame.to_dict("records")]
    assert got_rows == expected_rows, spec
    got = sorted((r["_source_key"], r["rule"], r["value"] or "") for r in out.rejected.to_dict("records"))
    want = sorted((r["_source_key"], r["rule"], r["value"] or "") for r in expected_rejected)
    assert got == want, spec
