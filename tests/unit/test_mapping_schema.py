"""Every kind of mapping-file error names the file, the line, the field and the problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from erpsync.errors import ConfigError
from erpsync.mapping import MappingError, load_flow, load_mapping

# Line numbers below refer to this text (line 1 is "flow: demo").
BASE = """\
flow: demo
source: {system: salesforce, object: Account, key: Id}
target: {system: quickbooks, object: Customer, identity: dataext.SalesforceId, match: [[Email]]}
lookups:
  reps: {system: quickbooks, object: SalesRep, key: [FirstName, LastName], value: Initial}
fields:
  Name: {from: Name, truncate: 41}
  Email: {from: Email}
  SalesRepRef.FullName: {lookup: reps, by: [Owner.FirstName, Owner.LastName], default: ADM}
  dataext.SalesforceId: {from: Id, on: [create]}
quality:
  source:
    - {rule: not_null, column: Id}
  target:
    - {rule: unique, column: Email}
"""


def write(tmp_path: Path, text: str, name: str = "demo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(tmp_path: Path, text: str) -> MappingError:
    path = write(tmp_path, text)
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    error = caught.value
    assert isinstance(error, ConfigError)
    assert str(path) in str(error), "the message must name the file"
    return error


def test_base_is_valid(tmp_path):
    """The fixture text itself loads, so each error below comes from its one change."""
    mapping = load_mapping(write(tmp_path, BASE))
    assert mapping.flow == "demo" and next(iter(mapping.fields)) == "Name"


def test_unknown_key_in_a_field(tmp_path):
    """A misspelt key ('form' for 'from') is named with its line and the allowed keys."""
    error = load_error(tmp_path, BASE.replace("Email: {from: Email}", "Email: {form: Email}"))
    problems = {p.problem.split(" (")[0] for p in error.problems}
    assert "unknown key 'form'" in problems
    unknown = next(p for p in error.problems if "unknown key" in p.problem)
    assert unknown.line == 8 and unknown.field == "fields.Email.form"
    assert "allowed:" in unknown.problem and "from" in unknown.problem


def test_unknown_top_level_key(tmp_path):
    error = load_error(tmp_path, BASE + "colour: blue\n")
    assert (error.line, error.field) == (16, "colour")
    assert "unknown key 'colour'" in error.problem


def test_wrong_type(tmp_path):
    """truncate must be an integer; a string is reported with its value."""
    error = load_error(tmp_path, BASE.replace("truncate: 41", "truncate: forty"))
    assert (error.line, error.field) == (7, "fields.Name.truncate")
    assert "wrong type: expected integer" in error.problem and "'forty'" in error.problem


def test_missing_required_key(tmp_path):
    error = load_error(tmp_path, BASE.replace("object: Customer, ", ""))
    assert (error.line, error.field) == (3, "target")
    assert "missing required key 'object'" in error.problem


def test_missing_required_section(tmp_path):
    text = "\n".join(line for line in BASE.splitlines() if not line.startswith("source:"))
    error = load_error(tmp_path, text)
    assert error.line == 1 and "missing required key 'source'" in error.problem


def test_bad_enum(tmp_path):
    error = load_error(
        tmp_path, BASE.replace("system: quickbooks, object: Customer", "system: sap, object: Customer")
    )
    assert (error.line, error.field) == (3, "target.system")
    assert "'sap' is not allowed here" in error.problem and "'quickbooks'" in error.problem


def test_bad_on_value(tmp_path):
    error = load_error(tmp_path, BASE.replace("on: [create]", "on: [create, insert]"))
    assert (error.line, error.field) == (10, "fields.dataext.SalesforceId.on[1]")
    assert "'insert'" in error.problem


def test_unknown_transform(tmp_path):
    error = load_error(
        tmp_path, BASE.replace("Email: {from: Email}", "Email: {from: Email, transform: [strip, shout]}")
    )
    assert (error.line, error.field) == (8, "fields.Email.transform[1]")
    assert error.problem.startswith("unknown transform 'shout'") and "lower" in error.problem


def test_unknown_single_transform(tmp_path):
    error = load_error(
        tmp_path, BASE.replace("Email: {from: Email}", "Email: {from: Email, transform: shout}")
    )
    assert error.field == "fields.Email.transform" and "unknown transform 'shout'" in error.problem


def test_duplicate_field(tmp_path):
    """YAML would keep only the second Email silently; the loader refuses and names both lines."""
    error = load_error(
        tmp_path, BASE.replace("  Email: {from: Email}\n", "  Email: {from: Email}\n  Email: {from: Id}\n")
    )
    assert (error.line, error.field) == (9, "fields.Email")
    assert "duplicate key 'Email' (first defined on line 8)" in error.problem


def test_no_expression(tmp_path):
    error = load_error(tmp_path, BASE.replace("Email: {from: Email}", "Email: {truncate: 3}"))
    assert (error.line, error.field) == (8, "fields.Email")
    assert "needs exactly one source expression" in error.problem and "found: none" in error.problem


def test_two_expressions(tmp_path):
    error = load_error(tmp_path, BASE.replace("Email: {from: Email}", "Email: {from: Email, const: x}"))
    assert error.line == 8 and "found: from, const" in error.problem


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("'{FirstName'", "bad template"),
        ("'no placeholders'", "has no {placeholders}"),
        ("'{First Name}'", "is not a dotted source path"),
        ("'{Amount:.2f}'", "may not carry a format"),
    ],
)
def test_bad_template_expression(tmp_path, template, expected):
    error = load_error(tmp_path, BASE.replace("Email: {from: Email}", f"Email: {{template: {template}}}"))
    assert (error.line, error.field) == (8, "fields.Email.template")
    assert expected in error.problem


def test_bad_source_path(tmp_path):
    error = load_error(tmp_path, BASE.replace("{from: Email}", "{from: Owner..Email}"))
    assert (error.line, error.field) == (8, "fields.Email.from")
    assert "not a valid name" in error.problem


def test_bad_target_field_name(tmp_path):
    error = load_error(tmp_path, BASE.replace("  Email: {from: Email}", "  E mail: {from: Email}"))
    assert error.line == 8 and error.field == "fields.E mail"


def test_unknown_lookup(tmp_path):
    error = load_error(tmp_path, BASE.replace("lookup: reps", "lookup: managers"))
    found = {p.field: p for p in error.problems}
    assert found["fields.SalesRepRef.FullName.lookup"].line == 9
    assert "unknown lookup 'managers' (declared: reps)" in found["fields.SalesRepRef.FullName.lookup"].problem
    assert "declared but no field uses it" in found["lookups.reps"].problem


def test_lookup_key_count_mismatch(tmp_path):
    error = load_error(tmp_path, BASE.replace("by: [Owner.FirstName, Owner.LastName]", "by: [Owner.Name]"))
    assert error.field == "fields.SalesRepRef.FullName.by" and "2 key column(s)" in error.problem


def test_option_that_does_not_fit_the_type(tmp_path):
    error = load_error(tmp_path, BASE.replace("Email: {from: Email}", "Email: {from: Email, precision: 2}"))
    assert error.field == "fields.Email.precision" and "only applies to type decimal" in error.problem


def test_conflicting_length_options(tmp_path):
    error = load_error(tmp_path, BASE.replace("truncate: 41", "truncate: 41, max_length: 41"))
    assert error.field == "fields.Name.truncate" and "either truncate" in error.problem


def test_default_longer_than_max_length(tmp_path):
    error = load_error(
        tmp_path,
        BASE.replace("Email: {from: Email}", "Email: {from: Email, default: toolong, max_length: 3}"),
    )
    assert error.field == "fields.Email.default" and "longer than max_length 3" in error.problem


def test_default_outside_allowed_values(tmp_path):
    error = load_error(
        tmp_path, BASE.replace("Email: {from: Email}", "Email: {from: Email, default: c, allowed: [a, b]}")
    )
    assert error.field == "fields.Email.default" and "not among the allowed values" in error.problem


def test_unknown_time_zone(tmp_path):
    text = BASE.replace("Email: {from: Email}", "Email: {from: Email, type: date, timezone: Mars/Olympus}")
    error = load_error(tmp_path, text)
    assert error.field == "fields.Email.timezone" and "unknown time zone" in error.problem


def test_identity_must_be_a_field(tmp_path):
    error = load_error(tmp_path, BASE.replace("identity: dataext.SalesforceId", "identity: ListID"))
    assert (error.line, error.field) == (3, "target.identity")


def test_match_key_must_be_a_field(tmp_path):
    error = load_error(tmp_path, BASE.replace("match: [[Email]]", "match: [[Phone]]"))
    assert error.field == "target.match[0]" and "match key 'Phone'" in error.problem


def test_flow_must_equal_file_name(tmp_path):
    error = load_error(tmp_path, BASE.replace("flow: demo", "flow: other"))
    assert (error.line, error.field) == (1, "flow") and "must equal the file name 'demo'" in error.problem


def test_quality_rule_errors(tmp_path):
    """Unknown rule kinds, missing parameters, bad regexes and unknown target columns are all caught."""
    text = BASE.replace(
        "    - {rule: not_null, column: Id}\n",
        "    - {rule: not_null, column: Id}\n"
        "    - {rule: regex, column: Email, pattern: '(['}\n"
        "    - {rule: in_set, column: Type}\n"
        "    - {rule: looks_ok, column: Id}\n",
    ).replace("- {rule: unique, column: Email}", "- {rule: unique, column: Phone}")
    error = load_error(tmp_path, text)
    by_line = {p.line: p.problem for p in error.problems}
    assert "is not allowed here" in by_line[16]  # unknown rule kind (schema enum)
    # Semantic problems come once the schema passes; check them on a schema-valid variant.
    text = text.replace("    - {rule: looks_ok, column: Id}\n", "")
    error = load_error(tmp_path, text)
    by_line = {p.line: p.problem for p in error.problems}
    assert "bad regular expression" in by_line[14]
    assert "rule in_set needs 'values'" in by_line[15]
    assert "column 'Phone', which this mapping does not produce" in by_line[17]


def test_yaml_syntax_error_has_a_line(tmp_path):
    error = load_error(tmp_path, BASE.replace("Email: {from: Email}", "Email: {from: Email"))
    assert error.line in {8, 9} and "YAML syntax error" in error.problem


def test_not_a_mapping(tmp_path):
    error = load_error(tmp_path, "- just\n- a list\n")
    assert "must be a YAML mapping" in error.problem


def test_empty_file(tmp_path):
    error = load_error(tmp_path, "")
    assert "file is empty" in error.problem


def test_all_problems_reported_at_once(tmp_path):
    """Two unrelated mistakes come back together, sorted by line."""
    text = BASE.replace("truncate: 41", "truncate: x").replace("Email: {from: Email}", "Email: {form: Email}")
    error = load_error(tmp_path, text)
    assert [p.line for p in error.problems] == [7, 8]
    assert str(error).count(str(tmp_path / "demo.yaml")) >= 2


def test_value_map_file_problems(tmp_path):
    """A missing map file, and a malformed one, are named with their own file and line."""
    text = BASE.replace("Email: {from: Email}", "Email: {from: Email, map: {file: maps/email.yaml}}")
    error = load_error(tmp_path, text)
    assert error.field == "fields.Email.map.file" and "does not exist" in error.problem
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "email.yaml").write_text("values:\n  a: 1\n  a: 2\nextra: 3\n")
    error = load_error(tmp_path, text)
    in_map = [p for p in error.problems if p.file.endswith("email.yaml")]
    assert [(p.line, p.field) for p in in_map] == [(3, "values.a")] and "duplicate key 'a'" in in_map[
        0
    ].problem
    assert any(p.field == "fields.Email.map.file" and p.line == 8 for p in error.problems)
    (tmp_path / "maps" / "email.yaml").write_text("values:\n  a: 1\nextra: 3\n")
    error = load_error(tmp_path, text)
    in_map = [p for p in error.problems if p.file.endswith("email.yaml")]
    assert [(p.line, p.field) for p in in_map] == [(3, "extra")] and "unknown key 'extra'" in in_map[
        0
    ].problem


def test_map_needs_values_or_file(tmp_path):
    error = load_error(
        tmp_path, BASE.replace("Email: {from: Email}", "Email: {from: Email, map: {fallback: x}}")
    )
    assert error.field == "fields.Email.map" and "exactly one of 'values'" in error.problem


def test_missing_file(tmp_path):
    with pytest.raises(MappingError, match="file not found"):
        load_mapping(tmp_path / "absent.yaml")


def test_on_key_is_not_read_as_boolean(tmp_path):
    """YAML 1.1 reads a bare `on` as True; the loader keeps it a key, and yes/no stay strings."""
    text = BASE.replace("Email: {from: Email}", "Email: {from: Email, map: {values: {yes: Y, no: N}}}")
    mapping = load_mapping(write(tmp_path, text))
    assert mapping.fields["dataext.SalesforceId"].on == frozenset({"create"})
    assert mapping.fields["Email"].map.values == {"yes": "Y", "no": "N"}


def test_load_flow_finds_custom_mappings(tmp_path, monkeypatch):
    """A new YAML file in a custom mappings folder is a new flow: no Python involved."""
    write(tmp_path, BASE.replace("flow: demo", "flow: my_custom_flow"), name="my_custom_flow.yaml")
    assert load_flow("my_custom_flow", mappings_dir=tmp_path).flow == "my_custom_flow"
    monkeypatch.setenv("ERPSYNC_MAPPINGS_DIR", str(tmp_path))
    assert load_flow("my_custom_flow").source.object == "Account"


def test_requires_must_name_mapped_fields(tmp_path):
    """target.requires lists fields a row needs to be placed; each must be a mapped field."""
    assert load_mapping(
        write(tmp_path, BASE.replace("match: [[Email]]", "match: [[Email]], requires: [Name]"))
    ).target.requires == ["Name"]
    error = load_error(tmp_path, BASE.replace("match: [[Email]]", "match: [[Email]], requires: [Company]"))
    assert (error.line, error.field) == (
        3,
        "target.requires[0]",
    ) and "'Company' is not mapped" in error.problem


def test_source_fields_include_what_expressions_filters_and_rules_read(tmp_path):
    """The extract step reads `source.fields`: every column an expression, filter or source rule needs."""
    text = BASE.replace("key: Id}", "key: Id, filter: {Status: [Active]}, fields: [Extra]}").replace(
        "    - {rule: not_null, column: Id}\n", "    - {rule: not_null, column: Website}\n"
    )
    mapping = load_mapping(write(tmp_path, text))
    assert mapping.source.fields == [
        "Id",
        "Name",
        "Email",
        "Owner.FirstName",
        "Owner.LastName",
        "Status",
        "Extra",
        "Website",
    ]


def test_schema_found_through_the_mappings_dir_when_installed_elsewhere(tmp_path, monkeypatch):
    """A non-editable install (the Docker image) finds the schema in ERPSYNC_MAPPINGS_DIR."""
    import shutil

    from erpsync.mapping import _schema

    monkeypatch.setattr(_schema, "__file__", str(tmp_path / "site" / "erpsync" / "mapping" / "_schema.py"))
    monkeypatch.delenv("ERPSYNC_MAPPINGS_DIR", raising=False)
    with pytest.raises(MappingError, match="mapping schema was not found"):
        _schema.schema_path()
    folder = tmp_path / "mappings"
    folder.mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "include" / "mappings" / "mapping.schema.json", folder)
    monkeypatch.setenv("ERPSYNC_MAPPINGS_DIR", str(folder))
    assert _schema.schema_path() == folder / "mapping.schema.json"
    assert load_mapping(write(tmp_path, BASE)).flow == "demo"


def test_target_rules_must_fit_the_field_type(tmp_path):
    """`between` on a text field, or a length rule on a number, is refused at load time."""
    text = BASE.replace(
        "Email: {from: Email}", "Email: {from: Email}\n  Qty: {from: Qty, type: integer}"
    ).replace(
        "    - {rule: unique, column: Email}",
        "    - {rule: between, column: Email, min: 0}\n    - {rule: length_between, column: Qty, max: 3}",
    )
    error = load_error(tmp_path, text)
    found = {(p.line, p.problem) for p in error.problems}
    assert found == {
        (16, "rule between needs a number field; 'Email' is string"),
        (17, "rule length_between needs a text field; 'Qty' is integer"),
    }
