"""The simulator's OData `$filter` subset: literals, operators, functions, and errors that say where."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erpsync.sandbox.exact._odata import ODataError, date_to_ms, ms_to_date, parse_filter

FIELDS = ("ID", "Code", "Name", "Price", "Timestamp", "Modified", "Blocked", "Account")
ROWS = [
    {
        "ID": "5b7f4515-b7a0-4839-ac69-574968677d96",
        "Code": "                25",
        "Name": "O'Brien",
        "Price": 9.5,
        "Timestamp": 1200,
        "Modified": "/Date(1706659200000)/",
        "Blocked": False,
        "Account": None,
    },
    {
        "ID": "00000000-0000-0000-0000-000000000001",
        "Code": "A-1",
        "Name": "Café",
        "Price": 0,
        "Timestamp": 900,
        "Modified": "/Date(1704067200000)/",
        "Blocked": True,
        "Account": "x",
    },
]


def _match(text: str) -> list[int]:
    predicate = parse_filter(text, FIELDS)
    return [i for i, row in enumerate(ROWS) if predicate(row)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Timestamp gt 1000L", [0]),
        ("Timestamp ge 900L and Timestamp le 900L", [1]),
        ("ID eq guid'5B7F4515-B7A0-4839-AC69-574968677D96'", [0]),  # guids compare case-insensitively
        ("Modified ge datetime'2024-01-31T00:00:00'", [0]),
        ("Modified lt datetime'2024-01-31'", [1]),
        ("Code eq '25'", []),  # account codes are padded: the filter must be too
        ("trim(Code) eq '25'", [0]),
        ("Name eq 'O''Brien'", [0]),  # a doubled quote escapes
        ("substringof('caf', Name) eq true", [1]),
        ("startswith(Code,'A-') eq true or Price gt 9", [0, 1]),
        ("not (Blocked eq true)", [0]),
        ("Blocked eq false and (Price ne 0 or Name eq 'x')", [0]),
        ("Account eq null", [0]),
        ("Price lt 1.5M", [1]),
        ("tolower(Name) eq 'café' and length(Name) eq 4", [1]),
        ("Timestamp gt 1000", [0]),
    ],
)
def test_filters_select_the_right_rows(text, expected):
    assert _match(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Colour eq 'red'", "No property 'Colour'"),
        ("Code eq", "Unexpected end"),
        ("Code eq 'x' and", "Unexpected end"),
        ("Code eq 'x')", "position 11"),
        ("ID eq guid'not-a-guid'", "Invalid guid literal"),
        ("Modified gt datetime'31-01-2024'", "Invalid datetime literal"),
        ("Lines/Item eq 1", "navigation properties"),
        ("frobnicate(Code) eq 1", "Unknown function 'frobnicate'"),
        ("startswith(Code) eq true", "takes 2 argument"),
        ("Code eq 'unterminated", "Syntax error at position 8"),
    ],
)
def test_bad_filters_say_what_and_where(text, message):
    with pytest.raises(ODataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_filter(text, FIELDS)


def test_dates_round_trip_in_exacts_wire_format():
    assert ms_to_date(1700000000000) == "/Date(1700000000000)/"
    assert date_to_ms("/Date(1700000000000)/") == 1700000000000
    assert date_to_ms("2024-01-01") is None


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_any_string_literal_round_trips(value):
    """Quoting with doubled single quotes lets any text be matched exactly."""
    literal = "'" + value.replace("'", "''") + "'"
    predicate = parse_filter(f"Name eq {literal}", FIELDS)
    assert predicate({"Name": value})
    assert not predicate({"Name": value + "x"})
