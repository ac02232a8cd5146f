"""ExactOnlineHook pieces that need no server: import cost, header parsing, codes, error texts."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from erpsync.errors import AuthError, RecordError
from erpsync.hooks._exact_tokens import refresh_refused
from erpsync.hooks.exact_online import (
    ExactOnlineHook,
    RateLimitState,
    _error_message,
    _query,
    _single,
    odata_quote,
    pad_account_code,
)


def test_importing_the_hook_loads_no_heavy_library():
    """DAG files import hooks at parse time: nothing heavy may load beyond what Airflow itself loads."""
    probe = (
        "import sys, json; from airflow.sdk import BaseHook; before = set(sys.modules); "
        "import erpsync.hooks.exact_online, erpsync.hooks._exact_tokens; "
        "print(json.dumps(sorted(m.split('.')[0] for m in set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    heavy = {
        "httpx",
        "sqlalchemy",
        "pandas",
        "great_expectations",
        "simple_salesforce",
        "lxml",
        "pyarrow",
        "psycopg",
    }
    assert not loaded & heavy
    assert loaded <= {"erpsync"}, loaded


def test_heavy_imports_sit_inside_functions():
    """Airflow happens to load httpx itself; our modules still import it (and SQLAlchemy) only where used."""
    import ast
    from pathlib import Path

    import erpsync.hooks.exact_online as module

    folder = Path(module.__file__).parent
    for name in ("exact_online.py", "_exact_tokens.py"):
        tree = ast.parse((folder / name).read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
        assert not names & {"httpx", "sqlalchemy", "pandas", "lxml", "pyarrow"}, (name, names)


def test_creating_a_hook_does_no_io(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_EXACT_ONLINE_DEFAULT", raising=False)
    hook = ExactOnlineHook()  # no connection exists: only first use may look it up
    assert hook.exact_online_conn_id == "exact_online_default"
    assert (hook.conn_type, hook.default_conn_name, hook.conn_name_attr) == (
        "exact_online",
        "exact_online_default",
        "exact_online_conn_id",
    )


def test_settings_precedence_and_blank_extras(monkeypatch):
    conn = {
        "conn_type": "exact_online",
        "host": "start.exactonline.nl",
        "login": "cid",
        "password": "secret",
        "extra": {
            "division": "123",
            "division_name": "",
            "timeout": "",
            "ca_bundle": "",
            "refresh_token": "r",
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_ONLINE_DEFAULT", json.dumps(conn))
    s = ExactOnlineHook().settings
    assert s.base_url == "https://start.exactonline.nl" and s.division == 123 and s.division_name is None
    assert s.timeout == 60 and s.verify is True  # blanks from the UI form fall back to defaults
    s2 = ExactOnlineHook(division=456, timeout=5).settings
    assert s2.division == 456 and s2.timeout == 5  # argument > extra


def test_rate_limit_headers_in_epoch_ms_become_seconds():
    state = RateLimitState()
    state.update(
        httpx.Headers(
            {
                "X-RateLimit-Limit": "5000",
                "X-RateLimit-Remaining": "4990",
                "X-RateLimit-Reset": "1700000060000",
                "X-RateLimit-Minutely-Limit": "60",
                "X-RateLimit-Minutely-Remaining": "0",
                "X-RateLimit-Minutely-Reset": "1700000001000",
            }
        )
    )
    assert (state.daily_remaining, state.daily_reset) == (4990, 1700000060.0)
    assert (state.minutely_remaining, state.minutely_reset) == (0, 1700000001.0)
    state.update(
        httpx.Headers({"X-RateLimit-Minutely-Remaining": "59", "X-RateLimit-Minutely-Reset": "1700000061000"})
    )
    assert state.daily_remaining == 4990  # a 429 without the daily pair keeps what we knew


def test_account_codes_are_padded_to_18():
    assert pad_account_code(25) == " " * 16 + "25"
    assert pad_account_code("  25 ") == " " * 16 + "25"
    with pytest.raises(RecordError, match="18"):
        pad_account_code("x" * 19)
    assert odata_quote("O'Brien") == "'O''Brien'"


def test_error_messages_come_from_error_message_value():
    resp = httpx.Response(
        400,
        json={"error": {"code": "", "message": {"lang": "", "value": "Mandatory: Description"}}},
        headers={"Reason": "ValidationFailed"},
    )
    assert _error_message(resp) == "Mandatory: Description (Reason: ValidationFailed)"
    assert _error_message(httpx.Response(429, text="")) == "Too Many Requests"


def test_single_accepts_both_shapes():
    assert _single({"d": {"ID": 1}}, "x") == {"ID": 1}
    assert _single({"d": {"results": [{"ID": 2}]}}, "x") == {"ID": 2}


def test_query_builds_odata_options():
    assert _query(select=["ID", " Code "], filter="Code eq 'x'", top=None) == {
        "$select": "ID,Code",
        "$filter": "Code eq 'x'",
    }
    assert _query(select=None) is None


@pytest.mark.parametrize(
    ("status", "body", "hint"),
    [
        (400, {"error": "invalid_grant", "error_description": "Old refresh token used."}, "consent again"),
        (
            401,
            {"error": "unauthorized_client", "error_description": "Old refresh token used."},
            "consent again",
        ),
        (
            400,
            {"error": "access_denied", "error_description": "Rate limit exceeded: access_token not expired"},
            "too early",
        ),
        (400, {"error": "invalid_client", "error_description": "x"}, "secret is wrong"),
        (
            400,
            {"error": "invalid_request", "error_description": "The refresh token expired at 1/1/2024"},
            "30 days",
        ),
    ],
)
def test_token_refusals_tell_the_user_what_to_do(status, body, hint):
    err = refresh_refused(status, body, where="token")
    assert isinstance(err, AuthError) and hint in str(err) and body["error_description"] in str(err)


def test_connection_type_info_fits_airflows_provider_schema():
    """The entry a provider entry point would list validates against Airflow's own provider-info schema."""
    from pathlib import Path

    import airflow
    import jsonschema

    from erpsync.hooks.exact_online import CONNECTION_TYPE_INFO

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = {
        "package-name": "erpsync",
        "name": "erpsync",
        "description": "x",
        "connection-types": [CONNECTION_TYPE_INFO],
    }
    jsonschema.validate(info, schema)
    fields = CONNECTION_TYPE_INFO["conn-fields"]
    assert {"division", "division_name", "refresh_token", "token_store_url", "ca_bundle"} <= set(fields)
    assert fields["refresh_token"]["schema"]["format"] == "password"  # shown masked in the UI
    assert ExactOnlineHook.get_ui_field_behaviour()["relabeling"]["login"] == "Client ID"
