"""Contract tests: the real AutotaskHook against the Autotask simulator over HTTPS with the sandbox CA.

Connections come from `AIRFLOW_CONN_AUTOTASK_DEFAULT` (JSON form), as in production; each test gets
its own call ledger. Budget tests drive the simulator's clock (the hook shares it), never sleep.
"""

from __future__ import annotations

import json
import time

import pytest

from erpsync.errors import AuthError, FatalSourceError, RateLimitedError, RecordError, RetriableSourceError
from erpsync.hooks import autotask as at
from erpsync.hooks.autotask import AutotaskHook

UDF = "Salesforce Company ID"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from erpsync.sandbox.autotask.testing import running_autotask

    with running_autotask(tmp_path_factory.mktemp("autotask"), threshold_latency_scale=0) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(sim):
    sim.admin("POST", "threshold", {"clear": True})
    sim.admin("DELETE", "faults")
    at._ZONES.clear()
    yield
    at._ZONES.clear()


@pytest.fixture
def make_hook(sim, monkeypatch, tmp_path):
    hooks = []

    def make(*, conn: dict | None = None, sandbox=None, **kwargs) -> AutotaskHook:
        sandbox = sandbox or sim
        data = sandbox.connection()
        data["extra"] = {
            **data["extra"],
            "ledger_path": str(tmp_path / "ledger.sqlite"),
            **kwargs.pop("extra", {}),
        }
        data.update(conn or {})
        monkeypatch.setenv("AIRFLOW_CONN_AUTOTASK_DEFAULT", json.dumps(data))
        hooks.append(AutotaskHook(**kwargs))
        return hooks[-1]

    yield make
    for hook in hooks:
        hook.close()


def _company(sim, name: str, **fields) -> dict:
    return {
        "companyName": name,
        "companyType": 1,
        "ownerResourceID": sim.info["default_account_manager_id"],
        "phone": "+31 20 555 0100",
        **fields,
    }


@pytest.fixture(scope="module")
def udf(sim, tmp_path_factory):
    """The UDF the flow keeps Salesforce ids in, created once the way the flow's setup step does."""
    import os

    conn = sim.connection()
    conn["extra"]["ledger_path"] = str(tmp_path_factory.mktemp("ledger") / "l.sqlite")
    os.environ["AIRFLOW_CONN_AUTOTASK_SETUP"] = json.dumps(conn)
    hook = AutotaskHook("autotask_setup")
    try:
        hook.create(
            "UserDefinedFieldDefinitions", {"name": UDF, "udfType": 1, "dataType": 1, "isActive": True}
        )
        yield UDF
    finally:
        hook.close()
        del os.environ["AIRFLOW_CONN_AUTOTASK_SETUP"]


# ---- connection and zone -------------------------------------------------------------------------------------


def test_test_connection_reports_zone_user_and_usage(make_hook, sim):
    ok, message = make_hook().test_connection()
    assert ok, message
    assert "America East 2" in message and sim.username in message and "of 10000 requests" in message


@pytest.mark.parametrize(
    ("conn", "extra", "says"),
    [
        ({"password": "wrong"}, {}, "HTTP 401"),
        ({"login": "nobody@erpsync.sandbox"}, {}, "does not know the API user 'nobody@erpsync.sandbox'"),
        ({}, {"integration_code": "WRONGCODE"}, "HTTP 401"),
        ({}, {"ca_bundle": ""}, "TLS verification"),
    ],
)
def test_test_connection_says_what_is_broken(make_hook, conn, extra, says):
    ok, message = make_hook(conn=conn, extra=extra).test_connection()
    assert not ok and says in message, message


def test_zone_is_discovered_once_per_user_and_shared_through_the_ledger(make_hook):
    first = make_hook()
    assert first.count("Companies") > 0
    assert first.calls["zone"] == 1
    second = make_hook()  # same process: the in-memory cache
    second.count("Companies")
    assert "zone" not in second.calls
    at._ZONES.clear()  # another worker process: the ledger file still knows the zone
    third = make_hook()
    third.count("Companies")
    assert "zone" not in third.calls
    assert third.root == first.root and "/zone14/" in third.root


def test_a_moved_tenant_is_rediscovered_after_a_401(make_hook, sim):
    hook = make_hook()
    hook.count("Companies")
    sim.admin("POST", "zone", {"zone": 5})
    try:
        assert hook.count("Companies") > 0
        assert "/zone5/" in hook.root and hook.zone_name == "America West"
        assert hook.calls["zone"] == 2 and hook.statuses[401] == 1
        fresh = make_hook()  # the ledger holds the new zone for the next task
        at._ZONES.clear()
        fresh.count("Companies")
        assert "zone" not in fresh.calls and "/zone5/" in fresh.root
    finally:
        sim.admin("POST", "zone", {"zone": 14})


def test_a_configured_zone_url_skips_discovery_and_a_401_there_is_final(make_hook, sim):
    hook = make_hook(extra={"zone_url": sim.zone_url})
    assert hook.count("Companies") > 0 and "zone" not in hook.calls
    wrong = make_hook(extra={"zone_url": sim.zone_url.replace("zone14", "zone2")})
    with pytest.raises(AuthError, match="HTTP 401"):
        wrong.count("Companies")
    assert "zone" not in wrong.calls


def test_impersonating_an_inactive_resource_is_refused_for_good(make_hook, sim):
    with sim.api() as api:
        inactive = api.post(
            "Resources/query", json={"filter": [{"op": "eq", "field": "isActive", "value": False}]}
        ).json()["items"][0]["id"]
    hook = make_hook(extra={"impersonation_resource_id": inactive})
    with pytest.raises(FatalSourceError, match=r"not allowed for this API user .*HTTP 403"):
        hook.create("Companies", _company(sim, "Impersonated Co"))


# ---- queries ----------------------------------------------------------------------------------------------------


def test_paging_over_more_than_500_rows_follows_next_page_urls(make_hook, sim):
    hook = make_hook()
    ids = [hook.create("Companies", _company(sim, f"Paging Co {i:04d}")) for i in range(520)]
    flt = at.begins_with("companyName", "Paging Co ")
    pages = list(hook.query_pages("Companies", flt, fields=["companyName"]))
    assert [len(p) for p in pages] == [500, 20]
    assert [r["id"] for p in pages for r in p] == ids  # id ascending, nothing lost or doubled
    assert set(pages[0][0]) <= {"id", "companyName", "userDefinedFields"}
    assert hook.count("Companies", flt) == 520
    assert hook.calls["query"] == 1 and hook.calls["query_next"] == 1
    assert len(list(hook.query_in("Companies", "id", ids, fields=["id"]))) == 520  # 2 queries of <= 500


def test_filters_with_or_in_exist_and_one_udf(make_hook, sim, udf):
    hook = make_hook()
    a = hook.create(
        "Companies", _company(sim, "Filter Alpha", city="Utrecht", userDefinedFields={udf: "001A"})
    )
    b = hook.create("Companies", _company(sim, "Filter Beta", city="Delft"))
    c = hook.create(
        "Companies", _company(sim, "Filter Gamma", city="Utrecht", userDefinedFields={udf: "001C"})
    )
    mine = at.begins_with("companyName", "Filter ")

    def ids(*flt) -> list[int]:
        return [r["id"] for r in hook.query("Companies", [mine, *flt])]

    assert ids(at.udf(udf, "001C")) == [c]
    assert ids(at.udf(udf, op="exist")) == [a, c]
    assert ids(at.or_(at.eq("city", "Delft"), at.and_(at.eq("city", "Utrecht"), at.udf(udf, "001A")))) == [
        a,
        b,
    ]
    assert ids(at.in_("id", [a, b, 999_999])) == [a, b]
    assert ids(at.noteq("city", "Utrecht")) == [b]
    row = hook.get("Companies", a)
    assert {"name": udf, "value": "001A"} in row["userDefinedFields"]
    assert hook.get("Companies", 999_999) is None


def test_a_query_on_an_unknown_field_is_fatal_naming_entity_and_message(make_hook):
    with pytest.raises(
        FatalSourceError, match=r"query Companies refused the request .*HTTP 500.*nosuchField"
    ) as e:
        list(make_hook().query("Companies", at.eq("nosuchField", 1)))
    assert e.value.details["entity"] == "Companies"


def test_metadata_reads(make_hook, udf):
    hook = make_hook()
    fields = {f["name"]: f for f in hook.entity_fields("Companies")}
    assert fields["companyName"]["isRequired"] and fields["companyType"]["isPickList"]
    assert hook.picklist("Companies", "companyType")["Customer"] == 1
    assert udf in {d["name"] for d in hook.udf_definitions("Companies")}
    # The picklist comes from the fields already read (cached in the ledger): 2 calls, not 3.
    assert hook.calls["metadata"] == 2 and hook.cache_hits == {"fields": 1}


def _metadata_calls(sim, entity: str = "Companies") -> tuple[int, int]:
    calls = sim.admin("GET", "stats")["calls"]
    return (
        calls.get(f"GET {entity}/entityInformation/fields", 0),
        calls.get(f"GET {entity}/entityInformation/userDefinedFields", 0),
    )


def test_metadata_is_read_once_for_the_tasks_of_a_run_then_again_after_the_ttl(make_hook, sim, udf):
    """Counted at the simulator: a second hook (another task) on the host reads no metadata within the TTLs."""
    before = _metadata_calls(sim)
    first = make_hook()
    assert first.entity_fields("Companies") and udf in {d["name"] for d in first.udf_definitions("Companies")}
    second = make_hook()  # the same ledger file: the next task of the run
    assert second.entity_fields("Companies") == first.entity_fields("Companies")
    assert second.picklist("Companies", "companyType")["Customer"] == 1
    assert udf in {d["name"] for d in second.udf_definitions("Companies")}
    assert _metadata_calls(sim) == (before[0] + 1, before[1] + 1)
    assert "metadata" not in second.calls and second.cache_hits == {"fields": 2, "userDefinedFields": 1}
    # 20 minutes later (the next scheduled run): field and UDF definitions still serve (a day), but
    # picklist values are the tenant's data and are read again after 15 minutes.
    later = make_hook(clock=lambda: time.time() + 1200)
    later.entity_fields("Companies")
    later.udf_definitions("Companies")
    assert _metadata_calls(sim) == (before[0] + 1, before[1] + 1)
    assert later.picklist("Companies", "companyType")["Customer"] == 1
    assert _metadata_calls(sim) == (before[0] + 2, before[1] + 1)
    next_day = make_hook(clock=lambda: time.time() + 1200 + 86_401)  # a day after the last reads
    next_day.entity_fields("Companies")
    next_day.udf_definitions("Companies")
    assert _metadata_calls(sim) == (before[0] + 3, before[1] + 2)
    off = make_hook(extra={"metadata_ttl": 0, "picklist_ttl": 0})  # caching off: every read is a call
    off.entity_fields("Companies")
    off.entity_fields("Companies")
    assert _metadata_calls(sim)[0] == before[0] + 5


def test_a_write_refused_for_a_picklist_value_or_udf_drops_the_cached_metadata_once(make_hook, sim, udf):
    """A stale cache (a picklist value Autotask no longer has) is read again after the refused write."""
    first = make_hook()
    fields = first.entity_fields("Companies")
    stale = [
        {**f, "picklistValues": [*f["picklistValues"], {"value": "99", "label": "Ghost", "isActive": True}]}
        if f["name"] == "companyType"
        else f
        for f in fields
    ]
    first.ledger.save_metadata(first._metadata_prefix("Companies") + "fields", stale, time.time())
    second = make_hook()
    assert second.picklist("Companies", "companyType")["Ghost"] == 99  # from the (stale) cache, no call
    before = _metadata_calls(sim)
    with pytest.raises(RecordError, match="picklist"):
        second.create("Companies", _company(sim, "Ghost Type BV", companyType=99))
    third = make_hook()
    assert "Ghost" not in third.picklist("Companies", "companyType")  # read again from Autotask
    assert _metadata_calls(sim)[0] == before[0] + 1 and third.calls["metadata"] == 1
    # Once per hook: the same hook's next refusal does not drop the fresh reading again.
    with pytest.raises(RecordError, match="picklist"):
        second.create("Companies", _company(sim, "Ghost Type BV", companyType=99))
    make_hook().entity_fields("Companies")
    assert _metadata_calls(sim)[0] == before[0] + 1
    # An unknown UDF drops the entity's UDF definitions too.
    make_hook().udf_definitions("Companies")
    udfs_before = _metadata_calls(sim)[1]
    with pytest.raises(RecordError, match="user-defined field"):
        make_hook().create(
            "Companies", {**_company(sim, "No Such UDF BV"), "userDefinedFields": {"Nope": "x"}}
        )
    make_hook().udf_definitions("Companies")
    assert _metadata_calls(sim)[1] == udfs_before + 1


# ---- writes -----------------------------------------------------------------------------------------------------


def test_contact_is_created_under_its_company_and_patched_partially(make_hook, sim):
    hook = make_hook()
    company = hook.create("Companies", _company(sim, "Contact Parent BV"))
    contact = hook.create_contact(
        company, {"firstName": "Ann", "lastName": "Lee", "isActive": 1, "title": "CFO", "phone": "+31 6 1"}
    )
    assert hook.update("Contacts", {"id": contact, "companyID": company, "title": "CEO"}) == contact
    row = hook.get("Contacts", contact)
    assert (row["companyID"], row["title"], row["phone"], row["firstName"]) == (
        company,
        "CEO",
        "+31 6 1",
        "Ann",
    )
    assert hook.update("Companies", {"id": company, "city": "Zwolle"}) == company
    assert hook.get("Companies", company)["phone"] == "+31 20 555 0100"  # untouched by the PATCH
    with pytest.raises(RecordError, match="no companyID"):
        hook.create("Contacts", {"firstName": "No", "lastName": "Company"})


def test_a_record_autotask_refuses_is_a_record_error_naming_entity_and_message(make_hook, sim):
    hook = make_hook()
    with pytest.raises(RecordError, match=r"create Companies rejected the record \(HTTP 500\): .*phone") as e:
        hook.create("Companies", {k: v for k, v in _company(sim, "No Phone BV").items() if k != "phone"})
    assert e.value.details["entity"] == "Companies"
    with pytest.raises(RecordError, match="update Companies rejected the record"):
        hook.update("Companies", {"id": 987_654_321, "city": "Nowhere"})


def test_server_faults_are_retried_for_reads_never_for_creates(make_hook, sim):
    hook = make_hook(extra={"retry_backoff": 0.01})
    expected = hook.count("Companies")
    sim.admin(
        "POST", "faults", {"rules": [{"status": 503, "count": 2, "path": "query/count", "method": "POST"}]}
    )
    before = sim.admin("GET", "stats")["calls"]
    assert hook.count("Companies") == expected
    after = sim.admin("GET", "stats")["calls"]
    assert after["POST Companies/query/count"] - before["POST Companies/query/count"] == 3
    assert hook.statuses[503] == 2
    sim.admin(
        "POST", "faults", {"rules": [{"status": 503, "count": 1, "path": "/Companies", "method": "POST"}]}
    )
    with pytest.raises(RetriableSourceError, match="look it up before creating it again") as e:
        hook.create("Companies", _company(sim, "Never Twice BV"))
    assert type(e.value) is RetriableSourceError
    assert sim.admin("GET", "stats")["calls"].get("POST Companies", 0) == before.get("POST Companies", 0) + 1
    assert not [r for r in hook.query("Companies", at.eq("companyName", "Never Twice BV"))]


# ---- the budget and 429 -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A tenant with a 400-request hour, so budget tests need few calls."""
    from erpsync.sandbox.autotask.testing import running_autotask

    with running_autotask(
        tmp_path_factory.mktemp("autotask-small"), seed=False, threshold=400, threshold_latency_scale=0
    ) as running:
        yield running


def test_own_share_stops_the_hook_and_frees_up_as_the_hour_rolls(make_hook, small):
    small.admin("POST", "threshold", {"clear": True})
    clock = small.simulator.clock
    hook = make_hook(sandbox=small, budget_share=0.1, max_wait=0, clock=clock)  # 40 calls an hour
    with pytest.raises(RateLimitedError, match="used 40 of its 40 requests per hour") as e:
        for _ in range(100):
            hook.count("Companies")
    assert small.admin("GET", "stats")["threshold_count"] == 40  # the tenant saw exactly our share
    assert 0 < e.value.retry_after <= 3600
    clock.advance(e.value.retry_after)
    assert hook.count("Companies") >= 0
    assert small.admin("GET", "stats")["refused"] == 0


def test_at_its_share_the_hook_sends_not_even_a_threshold_read(make_hook, small):
    """The boundary: the share used up and the reading a minute old, a new task refuses before
    reading ThresholdInformation (a call too); the tenant saw exactly the share, not one more."""
    small.admin("POST", "threshold", {"clear": True})
    clock = small.simulator.clock
    hook = make_hook(sandbox=small, budget_share=0.1, max_wait=0, clock=clock, extra={"budget_key": "edge"})
    with pytest.raises(RateLimitedError, match="used 40 of its 40 requests per hour"):
        for _ in range(100):
            hook.count("Companies")
    assert small.admin("GET", "stats")["threshold_count"] == 40
    clock.advance(61)  # the shared reading is stale; the rolling hour is not over
    later = make_hook(sandbox=small, budget_share=0.1, max_wait=0, clock=clock, extra={"budget_key": "edge"})
    with pytest.raises(RateLimitedError, match="used 40 of its 40 requests per hour"):
        later.count("Companies")
    stats = small.admin("GET", "stats")
    assert stats["threshold_count"] == 40 and stats["refused"] == 0 and later.calls == {}


def test_the_tenant_is_never_pushed_into_429_by_this_package(make_hook, small):
    """Other integrations used 300 of 400; the hook paces from 70 % and stops before 85 % (340)."""
    small.admin("POST", "threshold", {"clear": True, "add": 300})
    hook = make_hook(sandbox=small, max_wait=0, extra={"slowdown_seconds": 0.001, "threshold_every": 5})
    with pytest.raises(RateLimitedError, match=r"tenant has used \d+ of its 400") as e:
        for _ in range(100):
            hook.count("Companies")
    stats = small.admin("GET", "stats")
    assert stats["threshold_count"] <= 340 and stats["refused"] == 0
    assert hook.budget.slowed_calls > 0 and 60 <= e.value.retry_after <= 3600
    # Another integration (not this package) keeps working in the headroom left.
    with small.api(other=True) as other:
        assert other.get("ThresholdInformation").status_code == 200


def _threshold_reads(sandbox) -> int:
    return sandbox.admin("GET", "stats")["calls"].get("GET ThresholdInformation", 0)


def test_a_threshold_reading_is_shared_by_the_tasks_on_the_host_for_a_minute(make_hook, sim):
    """Counted at the simulator: a second hook within 60 s reads no ThresholdInformation; a 429 drops it."""
    before = _threshold_reads(sim)
    first = make_hook()
    first.count("Companies")
    second = make_hook()  # the next task of the run, same ledger
    second.count("Companies")
    assert _threshold_reads(sim) == before + 1
    assert "threshold" not in second.calls and second.budget.shared_reads == 1
    assert second.budget.tenant_count == first.budget.tenant_count
    # A 429 drops the shared reading: the refused hook reads again, and the next hook uses that reading.
    waits: list[float] = []
    refused = make_hook(sleep=waits.append, extra={"rate_limit_backoff": 1})
    sim.admin("POST", "faults", {"rules": [{"status": 429, "count": 1, "path": "query/count"}]})
    refused.count("Companies")
    assert waits == [1.0] and refused.budget.shared_reads == 1 and refused.calls["threshold"] == 1
    assert _threshold_reads(sim) == before + 2
    after = make_hook()
    after.count("Companies")
    assert (
        _threshold_reads(sim) == before + 2 and after.budget.tenant_read_at == refused.budget.tenant_read_at
    )
    later = make_hook(clock=lambda: time.time() + 61)  # the reading is a minute old: read again
    later.count("Companies")
    assert _threshold_reads(sim) == before + 3 and later.budget.shared_reads == 0


def test_a_shared_reading_counts_every_task_s_calls_so_the_stop_line_holds(make_hook, small):
    """Other integrations used 300 of 400; two tasks share one reading and still stop before 85 % (340)."""
    small.admin("POST", "threshold", {"clear": True, "add": 300})
    extra = {"slowdown_seconds": 0.001}
    first = make_hook(sandbox=small, max_wait=0, extra=extra)
    for _ in range(20):
        first.count("Companies")
    second = make_hook(sandbox=small, max_wait=0, extra=extra)
    with pytest.raises(RateLimitedError, match=r"tenant has used \d+ of its 400"):
        for _ in range(100):
            second.count("Companies")
    stats = small.admin("GET", "stats")
    assert stats["threshold_count"] <= 340 and stats["refused"] == 0
    assert second.budget.shared_reads >= 1  # it started from the first task's reading
    # The refusal dropped the shared reading: the next task reads the tenant's count anew.
    reads = _threshold_reads(small)
    third = make_hook(sandbox=small, max_wait=0, extra=extra)
    with pytest.raises(RateLimitedError):
        third.count("Companies")
    assert _threshold_reads(small) == reads + 1 and third.budget.shared_reads == 0


def test_a_429_is_backed_off_until_the_window_frees(make_hook, small):
    """Someone else filled the tenant after our last threshold read: 429, wait, read again, go on."""
    small.admin("POST", "threshold", {"clear": True})
    clock = small.simulator.clock
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(3600)  # the hour rolls by while we wait

    hook = make_hook(sandbox=small, clock=clock, sleep=sleep, extra={"rate_limit_backoff": 5})
    hook.count("Companies")
    small.admin(
        "POST", "threshold", {"add": 400 - small.admin("GET", "threshold")["currentTimeframeRequestCount"]}
    )
    assert hook.count("Companies") >= 0
    assert hook.statuses[429] == 1 and hook.budget.rate_limited == 1
    assert waits == [5]  # no Retry-After: the backoff's first step


def test_injected_429s_back_off_exponentially_then_give_up_with_retry_after(make_hook, small):
    small.admin("POST", "threshold", {"clear": True})
    waits: list[float] = []
    hook = make_hook(sandbox=small, sleep=waits.append, max_wait=10, extra={"rate_limit_backoff": 2})
    small.admin("POST", "faults", {"rules": [{"status": 429, "count": 2, "path": "query/count"}]})
    assert hook.count("Companies") >= 0
    assert waits == [2, 4]
    small.admin("POST", "faults", {"rules": [{"status": 429, "count": 10, "path": "query/count"}]})
    with pytest.raises(RateLimitedError, match="HTTP 429") as e:
        hook.count("Companies")
    assert e.value.retry_after is not None
    small.admin("DELETE", "faults")
