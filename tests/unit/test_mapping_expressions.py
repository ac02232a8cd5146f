"""One test (at least) per expression kind and field policy, applied to real DataFrames."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest

from erpsync.mapping import MappingError, load_mapping


def compile_fields(tmp_path, fields: str, *, lookups: str = "", extra: str = ""):
    """Write a one-flow mapping whose identity is `Key` (copied from Id) plus the given fields."""
    text = textwrap.dedent(
        """\
        flow: t
        source: {system: salesforce, object: Account, key: Id}
        target: {system: quickbooks, object: Customer, identity: Key}
        """
    )
    if lookups:
        text += "lookups:\n" + textwrap.indent(textwrap.dedent(lookups), "  ")
    text += "fields:\n  Key: {from: Id}\n" + textwrap.indent(textwrap.dedent(fields), "  ") + extra
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return load_mapping(path).compile()


def frame(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"Id": [f"id{i}" for i in range(n)], **columns})


def values(chunk, field):
    return [None if pd.isna(v) else v for v in chunk.frame[field]]


# -- copy -------------------------------------------------------------------------------------------
def test_copy_plain_flattened_and_nested_paths(tmp_path):
    """`from` reads a column, a flattened dotted column, or a path inside nested dicts."""
    m = compile_fields(
        tmp_path,
        """\
        Name: {from: Name}
        First: {from: Owner.FirstName}
        City: {from: Parent.Address.City}
        """,
    )
    df = frame(
        Name=["Acme", "  "],
        **{"Owner.FirstName": ["Ann", None]},
        Parent=[{"Address": {"City": "Utrecht"}}, None],
    )
    out = m.apply(df)
    assert values(out, "Name") == ["Acme", None]  # blank text is treated as empty
    assert values(out, "First") == ["Ann", None]
    assert values(out, "City") == ["Utrecht", None]


def test_copy_numbers_and_booleans_as_text(tmp_path):
    m = compile_fields(tmp_path, "A: {from: A}\nB: {from: B}\n")
    out = m.apply(frame(A=[21.0, 2.5, np.nan], B=[True, False, True]))
    assert values(out, "A") == ["21", "2.5", None] and values(out, "B") == ["true", "false", "true"]


# -- template, concat, const ------------------------------------------------------------------------
def test_template(tmp_path):
    """A template fills placeholders; a missing part is empty, all parts missing gives empty."""
    m = compile_fields(tmp_path, 'Contact: {template: "{Owner.FirstName} {Owner.LastName}"}\n')
    df = frame(**{"Owner.FirstName": ["Angela", None, None], "Owner.LastName": ["Richer", "Solo", None]})
    assert values(m.apply(df), "Contact") == ["Angela Richer", "Solo", None]


def test_template_with_literal_text(tmp_path):
    m = compile_fields(tmp_path, 'Memo: {template: "SF order {OrderNumber} ({Status})"}\n')
    assert values(m.apply(frame(OrderNumber=["0100"], Status=["Activated"])), "Memo") == [
        "SF order 0100 (Activated)"
    ]


def test_concat_skips_empty_parts(tmp_path):
    m = compile_fields(tmp_path, 'Addr: {concat: [Street, City, Country], sep: ", "}\n')
    df = frame(Street=["Main 1", None, None], City=["Ams", "Rot", None], Country=["NL", "", None])
    assert values(m.apply(df), "Addr") == ["Main 1, Ams, NL", "Rot", None]


def test_const(tmp_path):
    m = compile_fields(
        tmp_path, "Kind: {const: Customer}\nActive: {const: true, type: boolean}\nN: {const: 7}\n"
    )
    out = m.apply(frame(X=[1, 2]))
    assert values(out, "Kind") == ["Customer", "Customer"]
    assert values(out, "Active") == [True, True] and values(out, "N") == ["7", "7"]


# -- value maps (the Autotask seed's rules) --------------------------------------------------------
def test_value_map_unknown_type_becomes_customer(tmp_path):
    """Autotask seed: a Type that matches no company type becomes "Customer" (also when empty)."""
    m = compile_fields(
        tmp_path,
        """\
        CompanyType:
          from: Type
          map: {values: {Prospect: Prospect, Customer - Direct: Customer, Channel Partner / Reseller: Partner}, fallback: Customer}
        """,
    )
    df = frame(Type=["Prospect", "Channel Partner / Reseller", "Alien", None])
    assert values(m.apply(df), "CompanyType") == ["Prospect", "Partner", "Customer", "Customer"]


def test_value_map_unknown_industry_becomes_empty(tmp_path):
    """Autotask seed: an Industry that matches no market segment leaves the field empty."""
    m = compile_fields(
        tmp_path, "Segment: {from: Industry, map: {values: {Banking: Finance, Retail: Retail}}}\n"
    )
    assert values(m.apply(frame(Industry=["Banking", "Mining", None])), "Segment") == ["Finance", None, None]


def test_value_map_keep_casefold_and_numeric_keys(tmp_path):
    m = compile_fields(
        tmp_path,
        """\
        Unit: {from: Unit, map: {values: {PC: Each}, casefold: true, on_unmapped: keep}}
        Vat: {from: Rate, map: {values: {21: high, 9: low}}}
        """,
    )
    out = m.apply(frame(Unit=["pc", "kg"], Rate=[21.0, 9]))
    assert values(out, "Unit") == ["Each", "kg"] and values(out, "Vat") == ["high", "low"]


def test_value_map_file_with_fallback(tmp_path):
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "terms.yaml").write_text('fallback: "30"\nvalues:\n  Net 14: "14"\n')
    m = compile_fields(tmp_path, "Terms: {from: Terms, map: {file: maps/terms.yaml}}\n")
    assert values(m.apply(frame(Terms=["Net 14", "Net 99"])), "Terms") == ["14", "30"]


def test_value_map_reject_quarantines_the_row(tmp_path):
    m = compile_fields(tmp_path, "Status: {from: S, map: {values: {open: O}, on_unmapped: reject}}\n")
    out = m.apply(frame(S=["open", "weird", None]))
    assert list(out.frame.index) == [0, 2]
    row = out.rejected.iloc[0]
    assert (row["_source_key"], row["field"], row["rule"], row["value"]) == (
        "id1",
        "Status",
        "unmapped",
        "weird",
    )


# -- transforms -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        ("strip", "  a b  ", "a b"),
        ("upper", "abc", "ABC"),
        ("lower", "ABC", "abc"),
        ("title", "acme corp", "Acme Corp"),
        ("casefold", "Straße", "strasse"),
        ("collapse_whitespace", " a \t\n b ", "a b"),
        ("digits_only", "+31 (20) 123-45", "312012345"),
        ("single_line", "Main 1\r\nSuite 2\n", "Main 1, Suite 2"),
        ("line1", "Main 1\r\nSuite 2\nFloor 3", "Main 1"),
        ("line2", "Main 1\nSuite 2\nFloor 3", "Suite 2"),
        ("line3", "Main 1\nSuite 2\nFloor 3", "Floor 3"),
        ("lines_after_first", "Main 1\nSuite 2\nFloor 3", "Suite 2, Floor 3"),
    ],
)
def test_transforms(tmp_path, name, source, expected):
    m = compile_fields(tmp_path, f"X: {{from: X, transform: {name}}}\n")
    assert values(m.apply(frame(X=[source, None])), "X") == [expected, None]


def test_line2_of_a_single_line_is_empty(tmp_path):
    m = compile_fields(tmp_path, "X: {from: X, transform: line2}\n")
    assert values(m.apply(frame(X=["only one"])), "X") == [None]


# -- length policies --------------------------------------------------------------------------------
def test_truncate_policy(tmp_path):
    m = compile_fields(tmp_path, "Name: {from: Name, truncate: 5}\n")
    assert values(m.apply(frame(Name=["abcdefgh", "abc", "abcd   xyz"])), "Name") == ["abcde", "abc", "abcd"]


def test_reject_policy(tmp_path):
    """A too-long value rejects its row with the length in the message; the other rows go on."""
    m = compile_fields(tmp_path, "Phone: {from: Phone, max_length: 5, overflow: reject}\n")
    out = m.apply(frame(Phone=["12345", "1234567"]))
    assert values(out, "Phone") == ["12345"]
    row = out.rejected.iloc[0].to_dict()
    assert row == {
        "_source_key": "id1",
        "field": "Phone",
        "rule": "max_length",
        "value": "1234567",
        "message": "'Phone' is 7 characters, longer than the 5 the target allows",
    }


# -- formats ----------------------------------------------------------------------------------------
def test_salesforce_datetime_to_quickbooks_date(tmp_path):
    """Salesforce ISO datetimes (UTC) become dates, in the company's time zone when asked."""
    m = compile_fields(
        tmp_path,
        """\
        Utc: {from: CreatedDate, type: date}
        Local: {from: CreatedDate, type: date, timezone: Europe/Amsterdam}
        Us: {from: CreatedDate, type: date, format: "%m/%d/%Y"}
        Stamp: {from: CreatedDate, type: datetime}
        """,
    )
    out = m.apply(frame(CreatedDate=["2024-03-01T23:30:00.000+0000", None]))
    assert values(out, "Utc") == ["2024-03-01", None]
    assert values(out, "Local") == ["2024-03-02", None]
    assert values(out, "Us") == ["03/01/2024", None]
    assert values(out, "Stamp") == ["2024-03-01T23:30:00Z", None]


def test_date_with_explicit_parse_format_and_bad_value(tmp_path):
    m = compile_fields(tmp_path, 'D: {from: D, type: date, parse: "%d-%m-%Y"}\n')
    out = m.apply(frame(D=["31-12-2024", "2024-12-31"]))
    assert values(out, "D") == ["2024-12-31"]
    row = out.rejected.iloc[0]
    assert row["rule"] == "format" and row["value"] == "2024-12-31" and "'%d-%m-%Y'" in row["message"]


def test_decimal_precision_rounds_half_up(tmp_path):
    m = compile_fields(
        tmp_path,
        """\
        Price: {from: Price, type: decimal, precision: 2}
        Eu: {from: Eu, type: decimal, precision: 2, decimal_separator: ","}
        """,
    )
    out = m.apply(frame(Price=[10.005, "2.675", -1.005, None], Eu=["1.234,56", "7", "0,5", None]))
    assert values(out, "Price") == [10.01, 2.68, -1.01, None]
    assert values(out, "Eu") == [1234.56, 7.0, 0.5, None]


def test_bad_number_and_integer(tmp_path):
    m = compile_fields(tmp_path, "N: {from: N, type: decimal}\nI: {from: I, type: integer}\n")
    out = m.apply(frame(N=["1.5", "abc", "2"], I=["3", "4", "4.5"]))
    assert values(out, "N") == [1.5] and values(out, "I") == [3]
    rules = out.rejected.set_index("_source_key")[["field", "rule", "value"]].to_dict("index")
    assert rules == {
        "id1": {"field": "N", "rule": "format", "value": "abc"},
        "id2": {"field": "I", "rule": "format", "value": "4.5"},
    }


def test_boolean_parse_and_output_values(tmp_path):
    m = compile_fields(
        tmp_path,
        """\
        B: {from: B, type: boolean}
        YN: {from: B, type: boolean, true_value: "Y", false_value: "N"}
        """,
    )
    out = m.apply(frame(B=["yes", "0", True, "TRUE", None, "maybe"]))
    assert values(out, "B") == [True, False, True, True, None]
    assert values(out, "YN") == ["Y", "N", "Y", "Y", None]
    assert out.rejected["rule"].tolist() == ["format", "format"] and set(out.rejected["value"]) == {"maybe"}


# -- lookups ----------------------------------------------------------------------------------------
MANAGERS = """\
managers: {system: autotask, object: Resource, key: [firstName, lastName], value: id}
"""


def test_lookup_owner_to_account_manager_with_default(tmp_path):
    """Autotask seed: the owner becomes the manager by exact first + last name, else the default."""
    m = compile_fields(
        tmp_path,
        "Manager: {lookup: managers, by: [Owner.FirstName, Owner.LastName], default: 29683561}\n",
        lookups=MANAGERS,
    )
    table = pd.DataFrame({"firstName": ["Angela", "Bob"], "lastName": ["Richer", "Smith"], "id": [11, 12]})
    df = frame(
        **{
            "Owner.FirstName": ["Bob", "Angela", "angela", None],
            "Owner.LastName": ["Smith", "Richer", "richer", None],
        }
    )
    assert values(m.apply(df, {"managers": table}), "Manager") == ["12", "11", "29683561", "29683561"]


def test_lookup_casefold_and_ambiguous(tmp_path):
    m = compile_fields(
        tmp_path,
        "Debtor: {lookup: debtors, by: [Email]}\n",
        lookups="debtors: {system: exact_online, object: crm/Accounts, key: [Email], value: ID, casefold: true}\n",
    )
    table = pd.DataFrame({"Email": ["A@x.nl", "dup@x.nl", "DUP@x.nl"], "ID": ["g1", "g2", "g3"]})
    out = m.apply(frame(Email=[" a@X.nl", "dup@x.nl", "none@x.nl"]), {"debtors": table})
    assert values(out, "Debtor") == ["g1", None]
    row = out.rejected.iloc[0]
    assert (row["_source_key"], row["rule"]) == ("id1", "lookup_ambiguous")


def test_lookup_by_number_vat_percentage(tmp_path):
    """Exact VAT code by percentage: 21, "21.0" and 21.000001 all find the 21 % code."""
    m = compile_fields(
        tmp_path,
        "VATCode: {lookup: vat, by: [Rate], required: true}\n",
        lookups="vat: {system: exact_online, object: vat/VATCodes, key: [Percentage], value: Code, key_type: number}\n",
    )
    table = pd.DataFrame({"Percentage": [21.0, 9.0, 0.0], "Code": ["2", "1", "0"]})
    out = m.apply(frame(Rate=["21.0", 9, 0.0000001, 6]), {"vat": table})
    assert values(out, "VATCode") == ["2", "1", "0"]
    row = out.rejected.iloc[0]
    assert (row["_source_key"], row["rule"], row["value"]) == ("id3", "lookup", "6")
    assert "no exact_online vat/VATCodes matches Rate" in row["message"]


def test_lookup_table_problems_are_config_errors(tmp_path):
    m = compile_fields(tmp_path, "Manager: {lookup: managers, by: [A, B]}\n", lookups=MANAGERS)
    with pytest.raises(MappingError, match=r"lookup table .managers. .* was not supplied"):
        m.apply(frame(A=["x"], B=["y"]))
    with pytest.raises(MappingError, match="lacks column"):
        m.apply(frame(A=["x"], B=["y"]), {"managers": pd.DataFrame({"firstName": ["x"]})})


# -- defaults, required, allowed, create-only -------------------------------------------------------
def test_default_fills_required_target_field(tmp_path):
    m = compile_fields(tmp_path, "Terms: {from: Terms, default: NET30, required: true}\n")
    assert values(m.apply(frame(Terms=["NET10", None, " "])), "Terms") == ["NET10", "NET30", "NET30"]


def test_required_without_default_rejects(tmp_path):
    m = compile_fields(tmp_path, "Name: {from: Name, required: true}\n")
    out = m.apply(frame(Name=["a", None]))
    assert values(out, "Name") == ["a"]
    assert out.rejected[["_source_key", "field", "rule"]].values.tolist() == [["id1", "Name", "required"]]


def test_empty_identity_rejects(tmp_path):
    m = compile_fields(tmp_path, "Name: {from: Name}\n")
    out = m.apply(pd.DataFrame({"Id": ["a", None], "Name": ["x", "y"]}))
    assert len(out.frame) == 1 and out.rejected["rule"].tolist() == ["required"]
    assert "identity field 'Key' is empty" in out.rejected["message"].iloc[0]


def test_allowed_values(tmp_path):
    m = compile_fields(tmp_path, "Status: {from: S, allowed: [C, P, S]}\n")
    out = m.apply(frame(S=["C", "X", None]))
    assert values(out, "Status") == ["C", None] and out.rejected["rule"].tolist() == ["allowed"]


def test_create_only_versus_update_fields(tmp_path):
    """APIcenter seed: a description enriched in Salesforce is written on create only."""
    m = compile_fields(
        tmp_path,
        "Description: {from: D, on: [create]}\nName: {from: N, on: [create, update]}\nPrice: {from: P}\n",
    )
    assert m.mapping.create_only_fields == ["Description"]
    assert m.mapping.update_fields == ["Key", "Name", "Price"]
    assert m.mapping.fields["Description"].on == {"create"}


# -- chunk behaviour --------------------------------------------------------------------------------
def test_index_is_kept_and_source_key_added(tmp_path):
    m = compile_fields(tmp_path, "Name: {from: Name, required: true}\n")
    df = frame(Name=["a", None, "c"])
    df.index = [100, 200, 300]
    out = m.apply(df)
    assert list(out.frame.index) == [100, 300] and list(out.frame.columns) == ["Key", "Name", "_source_key"]
    assert list(out.frame["_source_key"]) == ["id0", "id2"] and list(out.rejected.index) == [200]


def test_missing_source_column_names_field_and_line(tmp_path):
    m = compile_fields(tmp_path, "Name: {from: Name}\nCity: {from: BillingCity}\n")
    with pytest.raises(MappingError) as caught:
        m.apply(frame(Name=["a"]))
    assert caught.value.line == 7 and caught.value.field == "City"
    assert "source column 'BillingCity' is missing" in caught.value.problem


def test_source_filter_skips_rows(tmp_path):
    m = compile_fields(
        tmp_path,
        "Name: {from: Name}\n",
        extra="",
    )
    text = (tmp_path / "t.yaml").read_text().replace("key: Id}", "key: Id, filter: {Status: [Activated]}}")
    (tmp_path / "t.yaml").write_text(text)
    m = load_mapping(tmp_path / "t.yaml").compile()
    out = m.apply(frame(Name=["a", "b"], Status=["Activated", "Draft"]))
    assert list(out.frame["_source_key"]) == ["id0"] and out.rejected.empty
    assert out.skipped["_source_key"].tolist() == ["id1"] and "Status" in out.skipped["reason"].iloc[0]


def test_empty_chunk(tmp_path):
    m = compile_fields(tmp_path, "Name: {from: Name, type: decimal}\n")
    out = m.apply(pd.DataFrame({"Id": pd.Series(dtype="str"), "Name": pd.Series(dtype="str")}))
    assert (
        out.frame.empty
        and out.rejected.empty
        and list(out.rejected.columns)
        == [
            "_source_key",
            "field",
            "rule",
            "value",
            "message",
        ]
    )


@pytest.mark.parametrize("dtype", ["str", "string", object])
def test_any_text_dtype_gives_the_same_result(tmp_path, dtype):
    """Chunks read back as pandas' str, nullable string (pd.NA) or object columns map alike."""
    m = compile_fields(
        tmp_path,
        """\
        Name: {from: Name, transform: collapse_whitespace, truncate: 6, required: true}
        Kind: {from: Kind, map: {values: {a: Alpha}, fallback: Other}}
        Qty: {from: Qty, type: integer}
        """,
    )
    df = pd.DataFrame(
        {
            "Id": ["1", "2", "3"],
            "Name": ["Acme  Corp", None, " "],
            "Kind": ["a", None, "z"],
            "Qty": ["2", None, "x"],
        }
    ).astype(dtype)
    out = m.apply(df)
    assert (
        values(out, "Name") == ["Acme C"] and values(out, "Kind") == ["Alpha"] and values(out, "Qty") == [2]
    )
    assert sorted(out.rejected[["_source_key", "rule"]].values.tolist()) == [
        ["2", "required"],
        ["3", "format"],
        ["3", "required"],
    ]


def test_lookup_on_an_empty_table_and_two_number_keys(tmp_path):
    """An empty lookup table matches nothing (default, or a clear rejection); number keys show as text."""
    m = compile_fields(
        tmp_path,
        """\
        Manager: {lookup: managers, by: [A, B], default: 99}
        Band: {lookup: bands, by: [Low, High], required: true}
        """,
        lookups=MANAGERS
        + "bands: {system: exact_online, object: vat/VATCodes, key: [Min, Max], value: Code, key_type: number}\n",
    )
    tables = {
        "managers": pd.DataFrame({"firstName": pd.Series(dtype="str"), "lastName": [], "id": []}),
        "bands": pd.DataFrame({"Min": [0, 10], "Max": [10, 20], "Code": ["L", "H"]}),
    }
    out = m.apply(frame(A=["x", "y"], B=["x", "y"], Low=[0, 5], High=["10.0", 6]), tables)
    assert values(out, "Manager") == ["99"] and values(out, "Band") == ["L"]
    row = out.rejected.iloc[0]
    assert (row["_source_key"], row["rule"], row["value"]) == ("id1", "lookup", "5 | 6")


@pytest.mark.parametrize("name", ["line1", "line2", "line3", "lines_after_first"])
def test_line_transforms_agree_on_both_string_storages(name):
    """The pyarrow split path and the regex path (python-backed strings) give the same lines."""
    from erpsync.mapping._compile import _transform

    cells = ["a", "a\nb", "a\r\nb\n c \nd", "\n", "a\n\nc", "", None, " x \n y "]
    arrow = _transform(pd.Series(cells, dtype="str"), name)
    python = _transform(pd.Series(cells, dtype="string[python]"), name)
    assert getattr(arrow.dtype, "storage", None) == "pyarrow" and python.dtype.storage == "python"
    assert [None if pd.isna(v) else v for v in arrow] == [None if pd.isna(v) else v for v in python]
