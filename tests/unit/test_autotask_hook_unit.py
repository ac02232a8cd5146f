"""AutotaskHook pieces that need no simulator: import cost, filters, settings, request shapes, error table.

The wire is an `httpx.MockTransport` serving a tiny fake tenant (zone discovery, the three headers,
paged queries); everything that needs real Autotask behaviour runs against the simulator in
tests/integration/test_autotask_hook.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import httpx
import pytest

from erpsync.errors import (
    AuthError,
    ConfigError,
    FatalSourceError,
    RateLimitedError,
    RecordError,
    RetriableSourceError,
)
from erpsync.hooks import autotask as at
from erpsync.hooks.autotask import AutotaskHook

ZONE = "https://webservices14.example.test/ATServicesRest/"
ROOT = "https://webservices14.example.test/ATServicesRest/V1.0"


def test_importing_the_hook_loads_no_heavy_library():
    """DAG files import hooks at parse time: nothing beyond Airflow's own imports may load."""
    probe = (
        "import sys, json; from airflow.sdk import BaseHook; before = set(sys.modules); "
        "import erpsync.hooks.autotask; "
        "print(json.dumps(sorted(m.split('.')[0] for m in set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert loaded <= {"erpsync"}, loaded


def test_heavy_imports_sit_inside_functions():
    """The hook and its parts (filters, settings, errors, budget, ledger)."""
    import ast
    from pathlib import Path

    files = [Path(at.__file__), *sorted(Path(at.__file__).parent.glob("_autotask_*.py"))]
    assert len(files) == 6, files
    for path in files:
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
        assert not names & {"httpx", "sqlite3", "sqlalchemy", "pandas", "requests"}, (path.name, names)


def test_creating_a_hook_does_no_io(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_AUTOTASK_DEFAULT", raising=False)
    hook = AutotaskHook()  # no connection exists: only first use may look it up
    assert (hook.conn_type, hook.default_conn_name, hook.conn_name_attr) == (
        "autotask",
        "autotask_default",
        "autotask_conn_id",
    )
    assert hook.calls == {}


# ---- filters --------------------------------------------------------------------------------------------


def test_builders_produce_the_documented_shapes():
    flt = [
        at.eq("isActive", True),
        at.or_(at.begins_with("companyName", "Acme"), at.and_(at.in_("id", [1, 2]), at.exist("phone"))),
        at.udf("Salesforce Company ID", "001A"),
        at.gt("lastTrackedModifiedDateTime", datetime(2024, 5, 1, 15, 45, 0, 123456, tzinfo=UTC)),
    ]
    at.check_filter(flt)
    assert flt == [
        {"op": "eq", "field": "isActive", "value": True},
        {
            "op": "or",
            "items": [
                {"op": "beginsWith", "field": "companyName", "value": "Acme"},
                {
                    "op": "and",
                    "items": [
                        {"op": "in", "field": "id", "value": [1, 2]},
                        {"op": "exist", "field": "phone"},
                    ],
                },
            ],
        },
        {"op": "eq", "field": "Salesforce Company ID", "value": "001A", "udf": True},
        {"op": "gt", "field": "lastTrackedModifiedDateTime", "value": "2024-05-01T15:45:00.123"},
    ]
    assert at.udf("Salesforce Contact ID", op="notExist") == {
        "op": "notExist",
        "field": "Salesforce Contact ID",
        "udf": True,
    }


@pytest.mark.parametrize(
    ("flt", "says"),
    [
        ([{"op": "ne", "field": "id", "value": 1}], "unknown Autotask filter operator 'ne'"),
        ([at.udf("A", "1"), at.udf("B", "2")], "only one"),
        ([at.or_(*[at.eq("id", i) for i in range(501)])], "501 OR conditions"),
        ([at.in_("id", range(400)), at.or_(*[at.eq("id", i) for i in range(101)])], "501 OR conditions"),
        ([{"op": "in", "field": "id", "value": 3}], "needs a list"),
        ([{"op": "exist", "field": "id", "value": 3}], "takes no value"),
        ([{"op": "eq", "field": "id"}], "needs a value"),
        ([{"op": "or", "items": []}], "non-empty"),
    ],
)
def test_check_filter_refuses_what_autotask_would_misread(flt, says):
    with pytest.raises(ConfigError, match=says):
        at.check_filter(flt)


def test_udf_with_an_unknown_operator_is_refused():
    with pytest.raises(ConfigError, match="'like'"):
        at.udf("Salesforce Company ID", "x", op="like")


# ---- a fake tenant on httpx.MockTransport ----------------------------------------------------------------


class FakeTenant:
    """Zone discovery, header check, paged Companies, writes; `script` overrides answers per path."""

    def __init__(self, rows: int = 0, *, threshold: tuple[int, int] = (10_000, 0)):
        self.rows = [{"id": i + 1, "companyName": f"C{i + 1}"} for i in range(rows)]
        self.requests: list[httpx.Request] = []
        self.script: dict[str, list[httpx.Response]] = {}
        self.threshold_limit, self.threshold_count = threshold
        self.zone = ZONE

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path.lower().endswith("/zoneinformation"):
            if request.url.params.get("user") != "sync@tenant.example":
                return httpx.Response(500, json={"errors": ["Zone information could not be determined"]})
            return httpx.Response(
                200, json={"zoneName": "Test Zone", "url": self.zone, "webUrl": "", "ci": 1}
            )
        key = f"{request.method} {path.removeprefix('/ATServicesRest/V1.0/')}"
        if self.script.get(key):
            return self.script[key].pop(0)
        h = request.headers
        if (h.get("apiintegrationcode"), h.get("username"), h.get("secret")) != (
            "CODE",
            "sync@tenant.example",
            "s3cret",
        ):
            return httpx.Response(401)
        if key == "GET ThresholdInformation":
            self.threshold_count += 1
            return httpx.Response(
                200,
                json={
                    "externalRequestThreshold": self.threshold_limit,
                    "requestThresholdTimeframe": 60,
                    "currentTimeframeRequestCount": self.threshold_count,
                },
            )
        self.threshold_count += 1
        if key in ("POST Companies/query", "GET Companies/query/next"):
            start = int(request.url.params.get("after", 0))
            page = [r for r in self.rows if r["id"] > start][:500]
            more = page and page[-1]["id"] < len(self.rows)
            nxt = f"{ROOT}/Companies/query/next?after={page[-1]['id']}" if more else None
            return httpx.Response(
                200,
                json={
                    "items": page,
                    "pageDetails": {"count": len(page), "nextPageUrl": nxt, "prevPageUrl": None},
                },
            )
        if key == "POST Companies/query/count":
            return httpx.Response(200, json={"queryCount": len(self.rows)})
        if request.method in ("POST", "PATCH"):
            body = json.loads(request.content)
            return httpx.Response(200, json={"itemId": body.get("id", 77)})
        return httpx.Response(404, json={"errors": [f"no route {key}"]})


@pytest.fixture
def make_hook(monkeypatch, tmp_path):
    hooks = []

    def make(tenant: FakeTenant, *, conn: dict | None = None, clock=None, **extra) -> AutotaskHook:
        data = {
            "conn_type": "autotask",
            "login": "sync@tenant.example",
            "password": "s3cret",
            "extra": {"integration_code": "CODE", "ledger_path": str(tmp_path / "ledger.sqlite"), **extra},
        }
        data.update(conn or {})
        monkeypatch.setenv("AIRFLOW_CONN_AUTOTASK_DEFAULT", json.dumps(data))
        slept: list[float] = []
        hook = AutotaskHook(transport=httpx.MockTransport(tenant), sleep=slept.append, clock=clock)
        hook.slept = slept  # type: ignore[attr-defined]
        hooks.append(hook)
        return hook

    at._ZONES.clear()
    yield make
    for hook in hooks:
        hook.close()
    at._ZONES.clear()


def _calls(tenant: FakeTenant) -> list[str]:
    return [f"{r.method} {r.url.path}" for r in tenant.requests]


def test_settings_precedence_and_blank_extras(make_hook):
    hook = make_hook(FakeTenant(), zone_url="", budget_share="40", impersonation_resource_id="29682885")
    s = hook.settings
    assert s.zone_url is None  # a blank form field means "discover"
    assert s.budget_share == 0.4  # "40" in a form means 40 %
    assert s.discovery_url == "https://webservices.autotask.net/atservicesrest/v1.0/zoneInformation"
    assert s.impersonation_resource_id == 29682885
    assert "s3cret" not in repr(s) and "CODE" not in repr(s)
    assert AutotaskHook(budget_share=0.2).settings.budget_share == 0.2  # hook argument beats the extra


def test_every_field_of_the_connection_form_reaches_the_settings(make_hook):
    """A form field the hook never reads would be a setting the UI offers and ignores."""
    from erpsync.provider_info import AUTOTASK_CONNECTION

    values = {
        "integration_code": "FORMCODE",
        "zone_url": "https://webservices14.autotask.net/ATServicesRest/",
        "impersonation_resource_id": "29682885",
        "ca_bundle": "/etc/ssl/form-ca.pem",
        "budget_share": "0.3",
        "ledger_url": "postgresql+psycopg://db-host/erpsync",
        "timeout": "17",
    }
    assert set(AUTOTASK_CONNECTION["conn-fields"]) == set(values)
    s = make_hook(FakeTenant(), **values).settings
    assert (s.integration_code, s.zone_url, s.impersonation_resource_id) == (
        "FORMCODE",
        "https://webservices14.autotask.net/ATServicesRest/V1.0",  # the zone's REST root
        29682885,
    )
    assert (s.verify, s.budget_share, s.ledger_url, s.timeout) == (
        "/etc/ssl/form-ca.pem",
        0.3,
        values["ledger_url"],
        17.0,
    )


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443/atservicesrest/v1.0/zoneInformation"),
        ("sandbox.local", "https://sandbox.local/atservicesrest/v1.0/zoneInformation"),
        ("https://h/ATServicesRest/", "https://h/ATServicesRest/v1.0/zoneInformation"),
        ("https://h/atservicesrest/v1.0/zoneInformation", "https://h/atservicesrest/v1.0/zoneInformation"),
    ],
)
def test_discovery_url_from_the_connection_host(make_hook, host, url):
    assert make_hook(FakeTenant(), conn={"host": host}).settings.discovery_url == url


@pytest.mark.parametrize(
    ("conn", "extra", "says"),
    [
        ({"password": ""}, {}, "API user name .* secret"),
        ({}, {"integration_code": ""}, "integration_code"),
        ({}, {"budget_share": "1.5x"}, "budget_share"),
        ({}, {"budget_share": 0}, "between 0 and 1"),
        ({}, {"tenant_slowdown_share": 0.9, "tenant_stop_share": 0.8}, "must not exceed"),
        ({}, {"impersonation_resource_id": "bob"}, "impersonation_resource_id"),
    ],
)
def test_incomplete_connections_say_what_is_missing(make_hook, conn, extra, says):
    with pytest.raises(ConfigError, match=says):
        _ = make_hook(FakeTenant(), conn=conn, **extra).settings


def test_every_call_carries_the_three_headers_and_the_impersonation(make_hook):
    tenant = FakeTenant(rows=3)
    hook = make_hook(tenant, impersonation_resource_id=29682885)
    assert [r["id"] for r in hook.query("Companies")] == [1, 2, 3]
    assert _calls(tenant) == [
        "GET /atservicesrest/v1.0/zoneInformation",
        "GET /ATServicesRest/V1.0/ThresholdInformation",
        "POST /ATServicesRest/V1.0/Companies/query",
    ]
    discovery = tenant.requests[0]
    assert "secret" not in discovery.headers  # discovery needs only the user name
    for r in tenant.requests[1:]:
        assert r.headers["ApiIntegrationCode"] == "CODE"
        assert r.headers["UserName"] == "sync@tenant.example"
        assert r.headers["Secret"] == "s3cret"
        assert r.headers["ImpersonationResourceId"] == "29682885"
    body = json.loads(tenant.requests[2].content)
    assert body == {"filter": [{"op": "gte", "field": "id", "value": 0}]}
    assert hook.calls == {"zone": 1, "threshold": 1, "query": 1}
    assert hook.api_calls == 2


def test_query_body_adds_id_to_include_fields_and_pages_through_next_urls(make_hook):
    tenant = FakeTenant(rows=1203)
    hook = make_hook(tenant)
    pages = list(hook.query_pages("Companies", at.eq("isActive", True), fields=["companyName"]))
    assert [len(p) for p in pages] == [500, 500, 203]
    assert [r["id"] for p in pages for r in p] == list(range(1, 1204))
    first = json.loads(tenant.requests[2].content)
    assert first == {
        "filter": [{"op": "eq", "field": "isActive", "value": True}],
        "IncludeFields": ["id", "companyName"],
    }
    assert _calls(tenant)[3:] == ["GET /ATServicesRest/V1.0/Companies/query/next"] * 2
    assert hook.calls["query_next"] == 2


def test_a_repeated_or_foreign_next_url_stops_the_query(make_hook):
    tenant = FakeTenant()
    page = {"items": [{"id": 1}], "pageDetails": {"nextPageUrl": f"{ROOT}/Companies/query/next?p=1"}}
    tenant.script["POST Companies/query"] = [httpx.Response(200, json=page)]
    tenant.script["GET Companies/query/next"] = [httpx.Response(200, json=page)]
    hook = make_hook(tenant)
    with pytest.raises(FatalSourceError, match="same nextPageUrl twice"):
        list(hook.query("Companies"))
    foreign = {"items": [], "pageDetails": {"nextPageUrl": "https://evil.example/next"}}
    tenant.script["POST Companies/query"] = [httpx.Response(200, json=foreign)]
    with pytest.raises(FatalSourceError, match="another host"):
        list(hook.query("Companies"))


def test_query_in_splits_long_value_lists_into_500s(make_hook):
    tenant = FakeTenant(rows=2)
    hook = make_hook(tenant)
    list(hook.query_in("Companies", "id", range(1, 1101), filter=at.eq("isActive", True)))
    bodies = [json.loads(r.content) for r in tenant.requests if r.url.path.endswith("/Companies/query")]
    assert [len(b["filter"][0]["value"]) for b in bodies] == [500, 500, 100]
    assert all(b["filter"][1] == {"op": "eq", "field": "isActive", "value": True} for b in bodies)


def test_contacts_are_created_and_patched_under_their_company(make_hook):
    tenant = FakeTenant()
    hook = make_hook(tenant)
    assert (
        hook.create_contact(12, {"firstName": "Ann", "lastName": "Lee", "userDefinedFields": {"SF": 3}}) == 77
    )
    assert hook.update("Contacts", {"id": 5, "companyID": 12, "title": "CFO"}) == 5
    assert hook.update("Companies", {"id": 9, "phone": "1"}) == 9
    writes = [r for r in tenant.requests if r.method in ("POST", "PATCH")]
    assert [f"{r.method} {r.url.path}" for r in writes] == [
        "POST /ATServicesRest/V1.0/Companies/12/Contacts",
        "PATCH /ATServicesRest/V1.0/Companies/12/Contacts",
        "PATCH /ATServicesRest/V1.0/Companies",
    ]
    assert json.loads(writes[0].content) == {
        "firstName": "Ann",
        "lastName": "Lee",
        "userDefinedFields": [{"name": "SF", "value": "3"}],  # UDF values are strings on the wire
        "companyID": 12,
    }
    with pytest.raises(RecordError, match="no companyID"):
        hook.create("Contacts", {"firstName": "No", "lastName": "Company"})
    with pytest.raises(RecordError, match="needs the record's id"):
        hook.update("Companies", {"phone": "1"})


# ---- error table (§9) ---------------------------------------------------------------------------------------


def _errors(status: int, *messages: str, **headers) -> httpx.Response:
    return httpx.Response(status, json={"errors": list(messages)}, headers=headers)


@pytest.mark.parametrize(
    ("key", "answers", "call", "error", "says"),
    [
        (
            "POST Companies",
            [_errors(500, "Required field 'phone' is missing.")],
            lambda h: h.create("Companies", {"companyName": "X"}),
            RecordError,
            r"create Companies rejected the record \(HTTP 500\): Required field 'phone' is missing",
        ),
        (
            "PATCH Companies",
            [_errors(404, "Companies 99 not found")],
            lambda h: h.update("Companies", {"id": 99, "phone": "1"}),
            RecordError,
            "update Companies rejected the record .*404",
        ),
        (
            "POST Companies/query",
            [_errors(500, "Unable to find projectID in the Companies Entity")],
            lambda h: list(h.query("Companies", at.eq("projectID", 1))),
            FatalSourceError,
            "query Companies refused the request .*Unable to find projectID",
        ),
        (
            "POST Companies/query",
            [_errors(400, "Invalid query")],
            lambda h: list(h.query("Companies")),
            FatalSourceError,
            "HTTP 400.*Invalid query",
        ),
        (
            "POST Companies",
            [
                _errors(
                    500,
                    "The logged in Resource does not have the adequate permissions to create this entity type.",
                )
            ],
            lambda h: h.create("Companies", {"companyName": "X"}),
            FatalSourceError,
            "not allowed for this API user",
        ),
        (
            "PATCH Companies",
            [_errors(403, "forbidden")],
            lambda h: h.update("Companies", {"id": 1}),
            FatalSourceError,
            "not allowed",
        ),
    ],
)
def test_refusals_land_in_the_right_group_naming_entity_and_message(
    make_hook, key, answers, call, error, says
):
    tenant = FakeTenant()
    tenant.script[key] = list(answers)
    hook = make_hook(tenant)
    with pytest.raises(error, match=says) as caught:
        call(hook)
    assert type(caught.value) is error
    assert caught.value.details["entity"] == "Companies"


def test_server_errors_without_a_message_are_retried_for_reads_but_never_for_creates(make_hook):
    tenant = FakeTenant(rows=1)
    tenant.script["POST Companies/query"] = [httpx.Response(502, text="bad gateway")]
    hook = make_hook(tenant, retry_backoff=0.5)
    assert [r["id"] for r in hook.query("Companies")] == [1]
    assert hook.slept == [0.5]
    tenant.script["POST Companies"] = [httpx.Response(500, text=""), httpx.Response(200, json={"itemId": 1})]
    with pytest.raises(RetriableSourceError) as caught:
        hook.create("Companies", {"companyName": "X"})
    assert type(caught.value) is RetriableSourceError
    assert tenant.script["POST Companies"], "a create must not be sent twice after a 5xx"
    tenant.script["POST Companies/query"] = [httpx.Response(503)] * 4
    with pytest.raises(RetriableSourceError, match="HTTP 503"):
        list(hook.query("Companies"))


def test_a_401_rediscovers_the_zone_once_then_is_an_auth_error(make_hook):
    tenant = FakeTenant(rows=1)
    hook = make_hook(tenant)
    list(hook.query("Companies"))
    tenant.zone = "https://webservices2.example.test/ATServicesRest/"  # the tenant moved
    tenant.script["POST Companies/query"] = [httpx.Response(401)]
    list(hook.query("Companies"))  # the fake answers the new zone's host as well
    assert hook.root == "https://webservices2.example.test/ATServicesRest/V1.0"
    assert hook.calls["zone"] == 2
    tenant.script["POST Companies/query"] = [httpx.Response(401), httpx.Response(401)]
    with pytest.raises(AuthError, match="after a fresh zone discovery"):
        list(hook.query("Companies"))


def test_an_unknown_user_at_discovery_is_an_auth_error(make_hook):
    hook = make_hook(FakeTenant(), conn={"login": "nobody@tenant.example"})
    with pytest.raises(AuthError, match=r"does not know the API user 'nobody@tenant\.example'"):
        _ = hook.root


def test_a_429_is_backed_off_with_retry_after_then_exponentially(make_hook):
    tenant = FakeTenant(rows=1)
    tenant.script["POST Companies/query"] = [
        _errors(429, "threshold exceeded", **{"Retry-After": "7"}),
        _errors(429, "threshold exceeded"),
        _errors(429, "threshold exceeded"),
    ]
    hook = make_hook(tenant, rate_limit_backoff=2, max_wait=100)
    assert [r["id"] for r in hook.query("Companies")] == [1]
    assert hook.slept == [7, 4, 8]  # Retry-After, then 2 * 2**(n-1)
    assert hook.budget.rate_limited == 3


def test_429s_beyond_max_wait_raise_rate_limited_with_retry_after(make_hook):
    tenant = FakeTenant(rows=1)
    tenant.script["POST Companies/query"] = [_errors(429, "threshold exceeded", **{"Retry-After": "120"})]
    hook = make_hook(tenant, max_wait=60)
    with pytest.raises(RateLimitedError, match="HTTP 429") as caught:
        list(hook.query("Companies"))
    assert caught.value.retry_after == 120
    assert hook.slept == []


def test_test_connection_never_raises(make_hook):
    ok, message = make_hook(FakeTenant()).test_connection()
    assert ok and "Test Zone" in message and "sync@tenant.example" in message
    ok, message = make_hook(FakeTenant(), conn={"password": "wrong"}).test_connection()
    assert not ok and "HTTP 401" in message
    ok, message = make_hook(FakeTenant(), integration_code="").test_connection()
    assert not ok and "integration_code" in message


# ---- the budget's arithmetic on a fake clock (the simulator tests run it against a live tenant) ----------------


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_own_share_is_a_rolling_hour_shared_through_the_ledger(make_hook):
    """Two hooks (two tasks) share one ledger; the cap frees up when the oldest minute leaves the hour."""
    clock = FakeClock()
    tenant = FakeTenant(rows=1, threshold=(100, 0))
    first = make_hook(tenant, clock=clock, budget_share=0.1, max_wait=0)  # 10 calls an hour
    for _ in range(4):
        list(first.query("Companies"))  # 1 threshold read + 4 queries
    clock.now += 30 * 60
    second = make_hook(tenant, clock=clock, budget_share=0.1, max_wait=0)
    for _ in range(4):
        list(second.query("Companies"))  # 1 threshold read + 4 queries: 10 in the hour
    with pytest.raises(RateLimitedError, match="used 10 of its 10 requests per hour") as caught:
        list(second.query("Companies"))
    # The first hook's five calls leave the window 60 minutes after their minute began.
    assert 30 * 60 - 60 < caught.value.retry_after <= 30 * 60
    clock.now += caught.value.retry_after
    assert [r["id"] for r in second.query("Companies")] == [1]


def test_a_short_budget_wait_is_waited_out_in_place(make_hook):
    clock = FakeClock()
    tenant = FakeTenant(rows=1, threshold=(100, 0))
    hook = make_hook(tenant, clock=clock, budget_share=0.05, max_wait=3600)
    hook._sleep = clock.sleep
    for _ in range(6):
        list(hook.query("Companies"))
    assert hook.budget.waited_seconds >= 3000
    assert hook.budget.own_hour <= 5


def test_the_tenant_is_never_pushed_past_the_stop_share(make_hook):
    """Other integrations used the tenant up to 84 %: one call is left before 85 %, then the hook stops."""
    clock = FakeClock()
    tenant = FakeTenant(rows=1, threshold=(1000, 838))
    hook = make_hook(tenant, clock=clock, max_wait=0, slowdown_seconds=0)
    list(hook.query("Companies"))  # threshold read -> 839, query -> 840
    with pytest.raises(RateLimitedError, match="tenant has used 850 of its 1000") as caught:
        for _ in range(20):
            list(hook.query("Companies"))
    assert tenant.threshold_count <= 850
    assert 60 <= caught.value.retry_after <= 3600
    assert caught.value.details["threshold"] == 1000


def test_above_the_slowdown_share_each_call_is_paced(make_hook):
    tenant = FakeTenant(rows=1, threshold=(1000, 700))
    hook = make_hook(tenant, slowdown_seconds=0.25)
    for _ in range(3):
        list(hook.query("Companies"))
    assert hook.slept == [0.25, 0.25, 0.25]
    assert hook.budget.slowed_calls == 3


def test_threshold_information_is_read_again_every_n_calls_near_the_lines(make_hook):
    """At 40 % of the threshold (over half the 70 % slowdown share) the count is read every n calls."""
    tenant = FakeTenant(rows=1, threshold=(10_000, 4_000))
    hook = make_hook(tenant, threshold_every=5)
    for _ in range(12):
        list(hook.query("Companies"))
    assert hook.calls["threshold"] == 3  # at the start, after 5 and after 10 counted calls
    assert hook.call_summary()["api_calls"] == 15


def test_far_below_the_lines_a_reading_serves_for_its_minute(make_hook):
    """At 1 % of the threshold only the reading's age (60 s) asks for a new one: others cannot add
    thousands of calls unseen within a minute of ours; the minute still bounds it."""
    clock = FakeClock()
    tenant = FakeTenant(rows=1, threshold=(10_000, 100))
    hook = make_hook(tenant, threshold_every=5, clock=clock)
    for _ in range(12):
        list(hook.query("Companies"))
    assert hook.calls["threshold"] == 1
    clock.now += 60
    list(hook.query("Companies"))
    assert hook.calls["threshold"] == 2


def _budget_reads(tenant: FakeTenant) -> int:
    return sum(1 for r in tenant.requests if r.url.path.endswith("/ThresholdInformation"))


def test_a_threshold_read_is_never_sent_past_the_share(make_hook):
    """At its cap with a stale reading, the hook refuses without reading ThresholdInformation (the read
    is a call too); a fresh hook (another task) likewise. One below the cap the read fits, the call
    after it would not: the package ends exactly at its share, never one past it."""
    clock = FakeClock()
    tenant = FakeTenant(rows=1, threshold=(100, 0))
    hook = make_hook(tenant, clock=clock, budget_share=0.1, max_wait=0)  # 10 calls an hour
    for _ in range(9):
        list(hook.query("Companies"))  # 1 threshold read + 9 queries = 10
    clock.now += 61  # the reading is stale (used for 60 s at most), the hour is not over
    sent = len(tenant.requests)
    with pytest.raises(RateLimitedError, match="used 10 of its 10 requests per hour"):
        list(hook.query("Companies"))
    other = make_hook(tenant, clock=clock, budget_share=0.1, max_wait=0)
    with pytest.raises(RateLimitedError, match="used 10 of its 10 requests per hour"):
        list(other.query("Companies"))
    assert len(tenant.requests) == sent  # nothing sent, not even the threshold read
    assert _budget_reads(tenant) == 1

    # One below the cap: the stale reading is refreshed (call 10), the query after it is refused.
    tenant2 = FakeTenant(rows=1, threshold=(100, 0))
    hook2 = make_hook(tenant2, clock=clock, budget_share=0.1, max_wait=0, budget_key="another budget")
    for _ in range(8):
        list(hook2.query("Companies"))  # 1 read + 8 queries = 9
    clock.now += 61
    with pytest.raises(RateLimitedError, match="used 10 of its 10 requests per hour"):
        list(hook2.query("Companies"))
    assert _budget_reads(tenant2) == 2 and hook2.api_calls == hook2.budget.own_hour == 10


def test_test_connection_reads_the_threshold_only_within_the_share(make_hook):
    """Each stage's validate (and the UI's Test button) reads ThresholdInformation: at the cap it says
    so and sends nothing, instead of passing the share by that read."""
    clock = FakeClock()
    tenant = FakeTenant(rows=1, threshold=(100, 0))
    hook = make_hook(tenant, clock=clock, budget_share=0.1, max_wait=0)  # 10 calls an hour
    ok, _ = hook.test_connection()
    assert ok
    for _ in range(9):
        list(hook.query("Companies"))  # 1 + 9 = 10
    sent = len(tenant.requests)
    ok, message = make_hook(tenant, clock=clock, budget_share=0.1, max_wait=0).test_connection()
    assert not ok and "used its 10 requests of the rolling hour" in message, message
    assert len(tenant.requests) == sent
