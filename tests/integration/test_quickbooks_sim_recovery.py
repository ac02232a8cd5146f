"""The QuickBooks simulator's error recovery, qbXML versions and the fault hooks of the bridge's
property tests: recovery history of one message set, ErrorRecovery-shaped recovery answers, version
refusals, probe errors, a desktop user's edits, and two Web Connectors on one company file at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from lxml import etree
from test_bridge_support import AUTH, TOKEN, customer_add, enqueue, job, wc

from erpsync.qbwc_bridge import qbxml as q
from erpsync.qbwc_bridge.qbxml.validate import load_schema
from erpsync.sandbox.quickbooks import CompanyFile, RequestProcessorError, ResponseLostError
from erpsync.sandbox.webconnector import WebConnectorSimulator, start_bridge

pytest_plugins = ["test_bridge_support"]


class Clock:
    def __init__(self, now: float = 1_717_200_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def company(clock) -> CompanyFile:
    company = CompanyFile(None, clock=clock)
    yield company
    company.close()


def valid(answer: str) -> str:
    schema = load_schema()
    assert schema.validate(etree.fromstring(answer.encode())), schema.error_log
    return answer


def run(company: CompanyFile, *requests, **envelope_args) -> q.QbResponseSet:
    return q.parse_response(valid(company.process(q.envelope(list(requests), **envelope_args))))


def rs_elements(answer: str) -> list:
    return [el for el in etree.fromstring(answer.encode()).find("QBXMLMsgsRs") if isinstance(el.tag, str)]


def test_quickbooks_remembers_only_the_last_message_set_by_default(clock):
    company = CompanyFile(None, clock=clock)
    assert company.recovery_history == 1
    run(company, q.customer_add({"Name": "A"}, request_id="a"), new_message_set_id="s1")
    run(company, q.customer_query(request_id="q", full_names=["A"]))  # no newMessageSetID: s1 stays
    assert run(company, old_message_set_id="s1").responses[0].request_id == "a"
    run(company, q.customer_add({"Name": "B"}, request_id="b"), new_message_set_id="s2")
    assert run(company, old_message_set_id="s1").message_set_status_code == 600
    assert run(company, old_message_set_id="s2").responses[0].request_id == "b"
    lenient = CompanyFile(None, clock=clock, recovery_history=5)
    for n in range(3):
        run(lenient, q.customer_add({"Name": f"L{n}"}, request_id=f"l{n}"), new_message_set_id=f"s{n}")
    assert run(lenient, old_message_set_id="s0").responses[0].request_id == "l0"


def _lost_batch(company: CompanyFile) -> tuple[str, dict[str, q.QbResponse]]:
    """One message set of every write kind (and a query and a refused Add), answered but lost."""
    customer = run(company, q.customer_add({"Name": "Acme"}, request_id="c0")).responses[0]
    run(
        company,
        q.item_service_add(
            {"Name": "Svc", "SalesOrPurchase": {"Price": 5, "AccountRef": "Services"}}, request_id="i"
        ),
        q.data_ext_def_add("0", "SfId", "STR255TYPE", ["Customer"], request_id="d"),
    )
    company.faults.update({"lose_responses": 1})
    document = q.envelope(
        [
            q.customer_add({"Name": "Beta"}, request_id="add"),
            q.customer_mod(customer.list_id, customer.edit_sequence, {"Phone": "555-0100"}, request_id="mod"),
            q.invoice_add(
                {
                    "CustomerRef": "Acme",
                    "RefNumber": "SF-1",
                    "InvoiceLineAdd": [{"ItemRef": "Svc", "Amount": 5}],
                },
                request_id="inv",
            ),
            q.data_ext_add("0", "SfId", "Customer", customer.list_id, "001X", request_id="ext"),
            q.customer_add({"Name": "Acme"}, request_id="dup"),
            q.customer_query(request_id="look", full_names=["Acme"]),
        ],
        new_message_set_id="job-1:1",
    )
    with pytest.raises(ResponseLostError) as lost:
        company.process(document)
    full = {r.request_id: r for r in q.parse_response(lost.value.response_xml).responses}
    return document, full


def test_error_recovery_shape_answers_with_the_schema_aggregate_only(company):
    document, full = _lost_batch(company)
    company.configure(recovery_shape="error_recovery")
    answer = valid(
        company.process(
            q.envelope(
                [q.customer_query(request_id="probe", full_names=["Beta"])], old_message_set_id="job-1:1"
            )
        )
    )
    stored = {el.get("requestID"): el for el in rs_elements(answer)}
    assert [el.tag for el in rs_elements(answer)] == [
        "CustomerAddRs", "CustomerModRs", "InvoiceAddRs", "DataExtAddRs", "CustomerAddRs", "CustomerQueryRs", "CustomerQueryRs",
    ]  # fmt: skip
    for rid in ("add", "mod"):
        (recovery,) = stored[rid]
        assert recovery.tag == "ErrorRecovery"
        assert [(c.tag, c.text) for c in recovery] == [
            ("ListID", full[rid].list_id),
            ("EditSequence", full[rid].edit_sequence),
        ]
        assert stored[rid].get("statusCode") == "0" and stored[rid].get("statusMessage") == "Status OK"
    invoice = full["inv"].records[0]
    assert [(c.tag, c.text) for c in stored["inv"].find("ErrorRecovery")] == [
        ("TxnID", invoice["TxnID"]),
        ("TxnNumber", invoice["TxnNumber"]),
        ("EditSequence", invoice["EditSequence"]),
    ]
    assert [(c.tag, c.text) for c in stored["ext"].find("ErrorRecovery")] == [("OwnerID", "0")]
    assert stored["dup"].get("statusCode") == "3100" and len(stored["dup"]) == 0  # a refusal stays as it was
    assert stored["look"].get("statusCode") == "0" and len(stored["look"]) == 0  # queries: status only
    parsed = q.parse_response(answer)
    assert parsed.message_set_status_code == 0 and parsed.responses[-1].request_id == "probe"
    assert parsed.responses[0].list_id == full["add"].list_id  # the bridge's parser reads the aggregate
    status_check = valid(company.process(document))  # the same newMessageSetID again: same shape
    assert [len(el) for el in rs_elements(status_check)] == [1, 1, 1, 1, 0, 0]
    assert company.count("Customer") == 2 and company.count("Invoice") == 1  # nothing ran twice
    company.configure(recovery_shape="full")
    whole = rs_elements(company.process(q.envelope([], old_message_set_id="job-1:1")))
    assert whole[0].find("CustomerRet/Name").text == "Beta" and whole[5].find("CustomerRet") is not None


def test_error_recovery_before_qbxml_11_is_status_only(company):
    _lost_batch(company)
    company.configure(recovery_shape="error_recovery")
    answer = valid(company.process(q.envelope([], old_message_set_id="job-1:1", version="10.0")))
    assert [(el.get("requestID"), len(el)) for el in rs_elements(answer)][:3] == [
        ("add", 0),
        ("mod", 0),
        ("inv", 0),
    ]


def test_recovery_shape_is_checked_and_set_over_http(running_qb):
    url, company = running_qb
    assert httpx.get(f"{url}/api/settings").json() == {
        "recovery_history": 1,
        "recovery_shape": "full",
        "supported_versions": list(company.supported_versions),
        "max_version": "16.0",
    }
    changed = httpx.put(
        f"{url}/api/settings", json={"recovery_shape": "error_recovery", "max_version": "12.0"}
    )
    assert changed.status_code == 200 and changed.json()["max_version"] == "12.0"
    assert company.recovery_shape == "error_recovery" and company.max_version == "12.0"
    for bad in (
        {"recovery_shape": "partial"},
        {"recovery_history": 0},
        {"colour": "red"},
        {"max_version": "x"},
        ["max_version", "12.0"],
    ):
        refused = httpx.put(f"{url}/api/settings", json=bad)
        assert refused.status_code == 400 and refused.json()["error"], bad
    assert "JSON object" in refused.json()["error"] and company.max_version == "12.0"
    with pytest.raises(ValueError, match="recovery_shape"):
        CompanyFile(None, recovery_shape="whole")


@pytest.fixture
def running_qb(tmp_path):
    from erpsync.sandbox.quickbooks.admin import build_app
    from erpsync.sandbox.runner import SandboxCA, SandboxContext, ServiceSpec, serve_in_thread

    company = CompanyFile(None)
    ctx = SandboxContext(data_dir=tmp_path, ca=SandboxCA(tmp_path / "ca"))
    served = serve_in_thread(ServiceSpec("quickbooks", build_app(company)), ctx, port=0)
    yield served.url, company
    served.stop()
    company.close()


# -- qbXML versions -------------------------------------------------------------------------------------
def test_quickbooks_2012_advertises_and_honours_qbxml_11(clock):
    company = CompanyFile(None, clock=clock, max_version="11.0")
    host = run(company, q.host_query(request_id="h"), version="11.0").responses[0].records[0]
    assert host["SupportedQBXMLVersion"][-1] == "11.0" and "12.0" not in host["SupportedQBXMLVersion"]
    assert (host["ProductName"].split(" (")[0], host["MajorVersion"]) == ("QuickBooks Pro 2012", "22")
    for asked in ("13.0", "11.5"):
        with pytest.raises(RequestProcessorError) as refused:
            company.process(q.envelope([q.customer_add({"Name": "Too New"}, request_id="n")], version=asked))
        assert refused.value.hresult == "0x80040423"
        assert (
            refused.value.message == "The version of qbXML that was requested is not supported or is unknown."
        )
    newer_element = q.envelope(
        [q.customer_add({"Name": "Clerk", "JobTitle": "Buyer"}, request_id="c")], version="11.0"
    )
    with pytest.raises(RequestProcessorError) as refused:
        company.process(newer_element)
    assert (
        refused.value.hresult == "0x80040400"
        and "CustomerAdd/JobTitle needs qbXML 12.0" in refused.value.detail
    )
    newer_request = q.envelope(
        [q.build_request("InvoiceMod", {"TxnID": "1-1", "EditSequence": "1"}, request_id="m")], version="2.0"
    )
    with pytest.raises(RequestProcessorError) as refused:
        company.process(newer_request)
    assert refused.value.hresult == "0x80040400" and "InvoiceModRq needs qbXML 2.1" in refused.value.detail
    assert company.count("Customer") == 0 and company.stats["parse_errors"] == 2
    assert (
        run(company, q.customer_add({"Name": "Fits"}, request_id="ok"), version="11.0")
        .responses[0]
        .status_code
        == 0
    )
    bare = company.process(
        '<QBXML><QBXMLMsgsRq onError="stopOnError"><CustomerQueryRq/></QBXMLMsgsRq></QBXML>'
    )  # no processing instruction: read at the newest version spoken
    assert "<Name>Fits</Name>" in bare
    with pytest.raises(ValueError, match="no qbXML version"):
        CompanyFile(None, supported_versions=["12.0", "13.0"], max_version="11.0")


def test_every_request_the_simulator_answers_is_in_the_librarys_version_table():
    """The simulator checks versions with the library's table (tests/unit/test_qbxml_versions.py proves
    it matches Intuit's sample), which must be generated for every request the simulator answers."""
    from erpsync.qbwc_bridge.qbxml import versions as library
    from erpsync.sandbox.quickbooks import versions
    from erpsync.sandbox.quickbooks._handlers import HANDLERS

    assert {f"{kind}Rq" for kind in HANDLERS} <= set(library.request_kinds())
    assert versions.first_too_new is library.first_too_new


def test_web_connector_passes_the_installations_highest_qbxml_version(sandbox_ctx, tmp_path):
    """QBWC hands the HCP answers and the highest version QuickBooks speaks to the first sendRequestXML."""
    seen: list[bytes] = []

    def record(app):
        async def wrapped(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            seen.append(body)
            sent = False

            async def replay():
                nonlocal sent
                if sent:
                    return {"type": "http.disconnect"}
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await app(scope, replay, send)

        return wrapped

    bridge = start_bridge(sandbox_ctx, companies={"acme": "pw"}, api_token=TOKEN, wrap=record)
    company = CompanyFile(tmp_path / "qb2012.sqlite", max_version="11.0")
    try:
        jid = httpx.post(
            f"{bridge.url}/api/v1/jobs", json={"company": "acme", "requests": [customer_add("Old QB Co")]},
            headers=AUTH, timeout=30,
        ).json()["id"]  # fmt: skip
        report = WebConnectorSimulator(bridge.soap_url, "acme", "pw", company, noop_wait=0.05).run_once()
        assert report.status == "ok", report
        sends = [etree.fromstring(b) for b in seen if b"sendRequestXML" in b]
        params = {etree.QName(el).localname: el.text for el in sends[0].iter() if isinstance(el.tag, str)}
        assert (params["qbXMLMajorVers"], params["qbXMLMinorVers"]) == ("11", "0")
        hcp = q.parse_response(params["strHCPResponse"]).responses[0].records[0]
        assert hcp["SupportedQBXMLVersion"][-1] == "11.0"
        assert job(bridge, jid)["state"] == "completed"
        assert [c["Name"] for c in company.records("Customer")] == ["Old QB Co"]
    finally:
        bridge.stop()
        company.close()


# -- fault hooks ------------------------------------------------------------------------------------------
def test_probe_errors_answer_a_status_instead_of_running(company):
    acme = run(company, q.customer_add({"Name": "Acme"}, request_id="a")).responses[0]
    company.faults.fail_queries(1000, count=2, kind="CustomerQuery")
    company.faults.fail_queries(3260)  # then any one query (not the Web Connector's own HCP queries)
    probe = q.customer_query(request_id="p", full_names=["Acme"])
    first = run(company, probe, q.host_query(request_id="h")).responses
    assert (first[0].status_code, first[0].severity, first[0].records) == (1000, "Error", [])
    assert first[0].message == "There has been an internal error when processing the request."
    assert first[1].status_code == 0  # HostQuery: untouched by a fault without a kind
    assert run(company, probe).responses[0].status_code == 1000
    invoice_probe = run(
        company, q.build_request("InvoiceQuery", {"RefNumber": ["X"]}, request_id="i")
    ).responses[0]
    assert invoice_probe.status_code == 3260 and invoice_probe.message.startswith("Insufficient permission")
    assert run(company, probe).responses[0].list_id == acme.list_id  # faults used up: queries run again
    company.faults.update(
        {"probe_errors": [{"code": 3175, "count": 1}, {"code": 1010, "kind": "InvoiceQuery"}]}
    )
    assert company.faults.as_dict()["probe_errors"] == [
        {"code": 3175, "count": 1},
        {"code": 1010, "count": 1, "kind": "InvoiceQuery"},
    ]
    assert run(company, probe).responses[0].status_code == 3175
    assert run(company, q.build_request("InvoiceQuery", {}, request_id="i2")).responses[0].status_code == 1010
    assert company.faults.as_dict()["probe_errors"] == []
    for bad in (
        [{"code": "1000"}],
        [{"code": 1000, "kind": "CustomerAdd"}],
        {"code": 1000},
        [{"code": 1, "why": 2}],
    ):
        with pytest.raises(ValueError, match="probe"):
            company.faults.update({"probe_errors": bad})


def test_user_edit_changes_a_record_as_the_desktop_does(company, clock):
    added = run(company, q.customer_add({"Name": "Acme", "Phone": "1"}, request_id="a")).responses[0]
    clock.now += 60
    edited = company.user_edit(
        "Customer", "Acme", Phone="555-0199", SalesRepRef="BJ", BillAddress={"City": "Utrecht"}
    )
    assert (
        edited["EditSequence"] != added.edit_sequence
        and edited["TimeModified"] > added.records[0]["TimeModified"]
    )
    assert (edited["Phone"], edited["SalesRepRef"]["FullName"], edited["BillAddress"]) == (
        "555-0199",
        "BJ",
        {"City": "Utrecht"},
    )
    seen = run(company, q.customer_query(request_id="q", list_ids=[added.list_id])).responses[0]
    assert seen.edit_sequence == edited["EditSequence"] and seen.records[0]["Phone"] == "555-0199"
    stale = run(company, q.customer_mod(added.list_id, added.edit_sequence, {"Phone": "2"}, request_id="m"))
    assert stale.responses[0].status_code == 3200  # the bridge's Mod lost against the user's edit
    again = company.user_edit(
        "Customer", added.list_id, Name="Acme Corp"
    )  # same second: still a new EditSequence
    assert again["FullName"] == "Acme Corp" and int(again["EditSequence"]) > int(edited["EditSequence"])
    run(company, q.customer_add({"Name": "Beta"}, request_id="b"))
    with pytest.raises(ValueError, match="already in use"):
        company.user_edit("Customer", "Beta", Name="acme corp")
    with pytest.raises(ValueError, match="ListID"):
        company.user_edit("Customer", "Beta", ListID="1-1")
    with pytest.raises(ValueError, match="SalesRep"):
        company.user_edit("Customer", "Beta", SalesRepRef="NOPE")
    with pytest.raises(KeyError):
        company.user_edit("Customer", "Nobody", Phone="1")
    run(
        company,
        q.item_service_add(
            {"Name": "Svc", "SalesOrPurchase": {"Price": 5, "AccountRef": "Services"}}, request_id="i"
        ),
    )
    run(
        company,
        q.invoice_add(
            {"CustomerRef": "Beta", "RefNumber": "SF-9", "InvoiceLineAdd": [{"ItemRef": "Svc"}]},
            request_id="v",
        ),
    )
    memo = company.user_edit("Invoice", "SF-9", Memo="called the customer")
    assert company.records("Invoice")[0]["Memo"] == "called the customer" == memo["Memo"]


def test_user_edit_over_http(running_qb):
    url, company = running_qb
    run(company, q.customer_add({"Name": "Acme"}, request_id="a"))
    done = httpx.post(
        f"{url}/api/user-edit", json={"kind": "Customer", "key": "Acme", "fields": {"Phone": "7"}}
    )
    assert done.status_code == 200 and done.json()["record"]["Phone"] == "7"
    missing = httpx.post(f"{url}/api/user-edit", json={"kind": "Customer", "key": "Zed", "fields": {}})
    bad = httpx.post(
        f"{url}/api/user-edit", json={"kind": "Customer", "key": "Acme", "fields": {"Colour": "x"}}
    )
    assert (missing.status_code, bad.status_code) == (404, 400)


# -- two Web Connectors on one company file ----------------------------------------------------------------
class _Meeting:
    """One company file for one Web Connector, whose first document waits until the other Web
    Connector's first document has reached QuickBooks too, so the two run at the same time."""

    def __init__(self, company: CompanyFile, barrier: threading.Barrier):
        self.company, self.barrier, self.met = company, barrier, False

    def process(self, doc: str, session: str = "default") -> str:
        if not self.met and "HostQueryRq" not in doc:
            self.met = True
            self.barrier.wait()
        return self.company.process(doc, session=session)

    def __getattr__(self, name: str):
        return getattr(self.company, name)


def test_two_web_connectors_run_concurrently_against_one_company_file(bridge, tmp_path):
    company = CompanyFile(tmp_path / "shared.qbw")
    try:
        users = {"acme": ("pw", "A"), "globex": ("pw2", "G")}
        for user, (_, prefix) in users.items():
            enqueue(bridge, [customer_add(f"{prefix}-{i:02d}") for i in range(12)], company=user)

        def update(user: str):
            barrier = barriers[0]
            return wc(bridge, _Meeting(company, barrier), user=user, password=users[user][0]).run_once()

        barriers = [threading.Barrier(2, timeout=30)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            reports = list(pool.map(update, users))
        assert [r.status for r in reports] == ["ok", "ok"], reports
        assert company.count("Customer") == 24
        query = (
            '<CustomerQueryRq requestID="it" iterator="Start"><MaxReturned>4</MaxReturned>'
            "<NameFilter><MatchCriterion>StartsWith</MatchCriterion><Name>{}-</Name></NameFilter></CustomerQueryRq>"
        )
        jobs = {
            user: enqueue(bridge, [query.format(prefix)], company=user).json()["id"]
            for user, (_, prefix) in users.items()
        }
        barriers[0] = threading.Barrier(2, timeout=30)
        with ThreadPoolExecutor(max_workers=2) as pool:
            reports = list(pool.map(update, users))
        assert [r.status for r in reports] == ["ok", "ok"], reports
        for user, (_, prefix) in users.items():
            result = job(bridge, jobs[user])["results"][0]
            assert result["record_count"] == 12, result  # every page from this session's own iterator
            names = etree.fromstring(f"<x>{result['response_xml']}</x>".encode()).iter("Name")
            assert {n.text[:2] for n in names} == {f"{prefix}-"}
    finally:
        company.close()


def test_sandbox_webconnector_takes_the_company_files_settings(tmp_path):
    """`sandbox webconnector` opens the company file with these settings; bad ones are refused clearly."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    sandbox = str(Path(sys.executable).with_name("sandbox"))
    base = [sandbox, "webconnector", "--url", "http://127.0.0.1:9/qbwc", "--user", "acme"]
    base += ["--password-env", "WC_PW", "--company-file", str(tmp_path / "c.sqlite"), "--once"]
    env = {**os.environ, "WC_PW": "pw"}
    for extra, said in (
        (["--max-qbxml-version", "eleven"], "not a qbXML version"),
        (["--recovery-history", "0"], "recovery_history must be a positive integer"),
        (["--recovery-shape", "partial"], "invalid choice"),
    ):
        done = subprocess.run([*base, *extra], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and said in done.stderr, done.stderr
    reached = subprocess.run(
        [*base, "--max-qbxml-version", "11.0", "--recovery-shape", "error_recovery"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reached.returncode == 1 and "error" in reached.stdout  # the settings were taken; port 9 is closed
