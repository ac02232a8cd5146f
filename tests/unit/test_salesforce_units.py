"""Pure pieces of the Salesforce simulator and hook: Ids, the SOQL subset, CSV and error parsing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from erpsync.sandbox.salesforce.ids import make_id, normalize_id, to_18
from erpsync.sandbox.salesforce.org import Org
from erpsync.sandbox.salesforce.schema import get_object
from erpsync.sandbox.salesforce.soql import SoqlError, parse


def test_eighteen_character_ids_encode_the_case_of_the_fifteen():
    assert to_18("001RO000003nqvG") == "001RO000003nqvGYAQ"  # the reference's own example
    rid = make_id("801", 987654)
    assert rid.startswith("801") and len(rid) == 18
    assert normalize_id(rid[:15]) == normalize_id(rid.lower()) == normalize_id(rid.upper()) == rid
    assert normalize_id("001xx") is None and normalize_id("001RO000003nqvG!!!") is None
    assert normalize_id("001RO000003nqvGYA9") is None  # 9 is not a suffix character


@pytest.mark.parametrize(
    ("soql", "code", "column"),
    [
        ("SELECT Id, Nope FROM Account", "INVALID_FIELD", 12),
        ("SELECT Id FROM Nope", "INVALID_TYPE", 16),
        ("SELECT Id FROM Account WHERE Owner.Nope = 'x'", "INVALID_FIELD", 30),
        ("SELECT Id FROM Account WHERE Bogus.Name = 'x'", "INVALID_FIELD", 30),
        ("SELECT Id FROM Account WHERE Name = 5", "INVALID_FIELD", 37),
        ("SELECT Id FROM Account WHERE Id = 'short'", "INVALID_QUERY_FILTER_OPERATOR", 35),
        ("SELECT Id FROM Account WHERE Name > null", "MALFORMED_QUERY", 37),
        ("SELECT Id FROM Account ORDER BY", "MALFORMED_QUERY", 32),
        ("SELECT Id FROM Account OFFSET 2001", "NUMBER_OUTSIDE_VALID_RANGE", 31),
        ("SELECT Id, (SELECT Id, (SELECT Id FROM Orders) FROM Contacts) FROM Account", "MALFORMED_QUERY", 24),
        ("SELECT Id, (SELECT Id FROM Contactz) FROM Account", "INVALID_TYPE", 28),
        ("SELECT Id, (SELECT Nope FROM Contacts) FROM Account", "INVALID_FIELD", 20),
        ("SELECT Id, (SELECT Id FROM Contacts FROM Account", "MALFORMED_QUERY", 49),
        ("SELECT Id FROM Account WHERE Name = 'unterminated", "MALFORMED_QUERY", 37),
    ],
)
def test_soql_errors_name_code_and_column(soql, code, column):
    with pytest.raises(SoqlError) as info:
        parse(soql)
    assert info.value.code == code
    assert f"ERROR at Row:1:Column:{column}\n" in info.value.message, info.value.message


def test_soql_parse_keeps_typed_literals_and_order():
    q = parse(
        "select Id, Account.Owner.FirstName from Contact where (Email like '%@x.nl' or Name in ('A\\'s', 'b'))"
        " and CreatedDate >= 2024-05-01T00:00:00+02:00 and IsDeleted = false order by LastName desc nulls "
        "last, Id limit 10 offset 5"
    )
    assert q.obj.name == "Contact" and q.fields == [("Id",), ("Account", "Owner", "FirstName")]
    assert (q.limit, q.offset) == (10, 5)
    assert [(p, desc, nl) for p, _, desc, nl in q.order] == [
        (("LastName",), True, True),
        (("Id",), False, False),
    ]
    assert q.where.op == "and" and q.where.items[0].op == "or"
    assert q.where.items[0].items[1].value[0].value == "A's"
    assert q.where.items[1].value.value.isoformat() == "2024-04-30T22:00:00+00:00"


def _org_with_accounts(names: list[str | None]) -> Org:
    org = Org(None)
    org.integration_user_id = None
    for n, name in enumerate(names):
        org.create(
            get_object("Account"),
            {"Name": name or f"unnamed {n}", "BillingCity": name and "Gent"},
            bypass_rules=True,
        )
    return org


def test_soql_evaluation_sorts_nulls_and_matches_case_insensitively():
    org = _org_with_accounts(["beta", "Alpha", None, "gamma"])
    rows = org.query(parse("SELECT Name FROM Account ORDER BY BillingCity NULLS FIRST, Name"))
    assert [r["Name"] for r in rows] == ["unnamed 2", "Alpha", "beta", "gamma"]
    rows = org.query(parse("SELECT Name FROM Account ORDER BY Name DESC"))
    assert [r["Name"] for r in rows] == ["unnamed 2", "gamma", "beta", "Alpha"]
    assert [r["Name"] for r in org.query(parse("SELECT Name FROM Account WHERE Name = 'ALPHA'"))] == ["Alpha"]
    like = org.query(parse("SELECT Name FROM Account WHERE Name LIKE '_eta' OR Name LIKE 'GAM%'"))
    assert sorted(r["Name"] for r in like) == ["beta", "gamma"]
    not_in = org.query(parse("SELECT Name FROM Account WHERE BillingCity NOT IN ('x') AND Name != 'beta'"))
    assert sorted(r["Name"] for r in not_in) == ["Alpha", "gamma"]  # NOT IN never matches null


def test_org_rules_run_in_order_unknown_field_before_required():
    org = _org_with_accounts([])
    _, errors = org.create(get_object("Account"), {"Nmae": "typo"})
    assert errors[0].code == "INVALID_FIELD" and errors[0].rest()["fields"] == ["Nmae"]
    _, errors = org.create(get_object("Account"), {"Phone": "1"})
    assert errors[0].collection() == {
        "statusCode": "REQUIRED_FIELD_MISSING",
        "message": "Required fields are missing: [Name]",
        "fields": ["Name"],
    }
    assert errors[0].bulk() == "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --"


def test_hook_parses_bulk_errors_and_every_error_shape():
    from erpsync.hooks.salesforce import _error_of, _parse_bulk_error

    e = _parse_bulk_error("STRING_TOO_LONG:Name: data value too large: xxx (max length=255):Name --")
    assert (e.code, e.message, e.fields) == (
        "STRING_TOO_LONG",
        "Name: data value too large: xxx (max length=255)",
        ["Name"],
    )
    e = _parse_bulk_error("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record: --")
    assert (e.code, e.fields) == ("UNABLE_TO_LOCK_ROW", [])

    class Resp:
        def __init__(self, status, body):
            self.status_code, self.text, self.reason = status, body, "R"

        def json(self):
            return json.loads(self.text)

    assert _error_of(Resp(400, '[{"message": "m", "errorCode": "X"}]')) == ("X", "m")
    assert _error_of(Resp(400, '{"error": "invalid_grant", "error_description": "d"}')) == (
        "invalid_grant",
        "d",
    )
    assert _error_of(Resp(502, "<html>bad gateway</html>")) == ("HTTP_502", "<html>bad gateway</html>")


def test_hook_csv_flattens_relationships_and_marks_nulls():
    from erpsync.hooks.salesforce import _csv_text, _split_csv

    records = [
        {"External_Id__c": "a,1", "Account": {"External_Id__c": "p"}, "Phone": None, "IsActive": True},
        {"External_Id__c": "b", "Quantity": 2.0},
    ]
    [(header, rows)] = list(_split_csv(records, [0, 1]))
    assert header == ["Account.External_Id__c", "External_Id__c", "IsActive", "Phone", "Quantity"]
    text = _csv_text(header, [r for _, r in rows])
    assert text.splitlines() == [
        "Account.External_Id__c,External_Id__c,IsActive,Phone,Quantity",
        'p,"a,1",true,#N/A,',
        ",b,,,2",
    ]


def test_bad_connection_extras_are_config_errors(monkeypatch):
    from erpsync.errors import ConfigError
    from erpsync.hooks.salesforce import SalesforceHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_SF_BAD",
        json.dumps(
            {"conn_type": "salesforce", "extra": {"login_url": "https://localhost:1", "timeout": "soon"}}
        ),
    )
    hook = SalesforceHook("sf_bad")
    with pytest.raises(ConfigError, match="extra 'timeout' must be a float, got 'soon'"):
        hook._opt("timeout", 120.0)
    with pytest.raises(ConfigError, match="no usable credentials"):
        hook.get_conn()


def test_importing_the_hook_stays_cheap():
    """DAG files import hooks at parse time: nothing heavy beyond what airflow.sdk itself loads."""
    heavy = (
        "simple_salesforce",
        "requests",
        "httpx",
        "pandas",
        "lxml",
        "pyarrow",
        "great_expectations",
        "airflow.providers.salesforce.hooks.salesforce",
    )
    probe = (
        "import sys; from airflow.sdk import BaseHook; before = set(sys.modules); "
        "import erpsync.hooks.salesforce; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules and m not in before))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
