"""Full Web Connector sessions over real HTTP: simulator client -> bridge -> QuickBooks company file."""

from __future__ import annotations

import math

import httpx
from test_bridge_support import AUTH, count_customers, customer_add, enqueue, job, wc

pytest_plugins = ["test_bridge_support"]


def test_full_session_in_documented_call_order(bridge, qb):
    """One update runs the documented order and ends at 100 % with every request answered."""
    created = enqueue(bridge, [customer_add(f"Order Co {i}") for i in range(5)], key="k-order")
    assert created.status_code == 201, created.text
    report = wc(bridge, qb).run_once()
    assert report.status == "ok", report
    assert report.calls == [
        "serverVersion",
        "clientVersion",
        "authenticate",
        "sendRequestXML",
        "receiveResponseXML",
        "closeConnection",
    ]
    assert len(report.authenticate) == 4 and report.authenticate[1] == ""
    assert report.percents == [100]
    assert report.close_message.startswith("OK: 5 succeeded")
    done = job(bridge, created.json()["id"])
    assert done["state"] == "completed"
    assert [r["status_code"] for r in done["results"]] == [0] * 5
    assert all(r["list_id"] for r in done["results"])
    assert count_customers(qb, "Order Co 3") == 1


def test_batches_pack_requests_and_match_results_by_request_id(bridge_factory, qb):
    """250 adds with batch size 100 take ceil(250/100) exchanges; a duplicate fails alone (continueOnError)."""
    b = bridge_factory(max_batch_requests=100)
    names = [f"Batch Co {i}" for i in range(249)] + ["Batch Co 7"]
    jid = enqueue(b, [customer_add(n, rid=f"caller-{i}") for i, n in enumerate(names)]).json()["id"]
    report = wc(b, qb).run_once()
    assert report.exchanges == math.ceil(250 / 100)
    assert report.percents[-1] == 100 and all(0 < p < 100 for p in report.percents[:-1])
    result = job(b, jid)
    assert result["state"] == "failed"  # one request failed, the job reports it
    by_rid = {r["request_id"]: r for r in result["results"]}
    assert by_rid["caller-249"]["status_code"] == 3100
    assert "already in use" in by_rid["caller-249"]["status_message"]
    assert sum(r["status_code"] == 0 for r in result["results"]) == 249


def test_batch_byte_limit_splits_documents(bridge_factory, qb):
    b = bridge_factory(max_batch_requests=100, max_batch_bytes=1000)
    enqueue(b, [customer_add(f"Byte Co {i:03d}") for i in range(30)])
    report = wc(b, qb).run_once()
    one = len(customer_add("Byte Co 000"))
    assert report.exchanges >= math.ceil(30 * one / 1000)
    assert count_customers(qb, "Byte Co 029") == 1


def test_iterator_query_gathers_every_page(bridge, qb):
    enqueue(bridge, [customer_add(f"Iter Co {i:02d}") for i in range(23)])
    wc(bridge, qb).run_once()
    query = '<CustomerQueryRq requestID="q" iterator="Start"><MaxReturned>5</MaxReturned></CustomerQueryRq>'
    jid = enqueue(bridge, [query]).json()["id"]
    report = wc(bridge, qb).run_once()
    assert report.exchanges >= 5  # 23 customers (plus any seeded ones), 5 per page
    result = job(bridge, jid)
    assert result["state"] == "completed"
    r = result["results"][0]
    assert r["record_count"] >= 23
    assert r["response_xml"].count("<CustomerRet>") == r["record_count"]
    assert "Iter Co 22" in r["response_xml"]


def test_stop_on_error_skips_the_rest_of_the_job(bridge, qb):
    enqueue(bridge, [customer_add("Stop Co")])
    wc(bridge, qb).run_once()
    jid = enqueue(bridge, [customer_add("Stop Co"), customer_add("Stop Co 2")], on_error="stop").json()["id"]
    wc(bridge, qb).run_once()
    result = job(bridge, jid)
    assert result["state"] == "failed"
    assert result["results"][0]["status_code"] == 3100
    assert result["results"][1]["state"] == "failed"
    assert "not run" in result["results"][1]["status_message"]
    assert count_customers(qb, "Stop Co 2") == 0


def test_idle_bad_password_and_unknown_user(bridge, qb):
    assert wc(bridge, qb).run_once().status == "none"  # nothing queued: "none", no data exchange
    bad = wc(bridge, qb, password="wrong").run_once()
    assert bad.status == "nvu" and bad.authenticate[0] == ""
    assert "pw" not in "".join(bad.authenticate)
    assert wc(bridge, qb, user="nobody").run_once().status == "nvu"


def test_connection_error_is_recorded_and_answered_done(bridge, qb):
    from erpsync.sandbox.webconnector import Faults

    enqueue(bridge, [customer_add("Conn Co")])
    report = wc(bridge, qb, faults=Faults(open_fails=True)).run_once()
    assert report.calls[-2:] == ["connectionError", "closeConnection"]
    status = httpx.get(f"{bridge.url}/status", headers=AUTH).text
    assert "Could not start QuickBooks" in status
    assert wc(bridge, qb).run_once().status == "ok"  # the next run delivers it
    assert count_customers(qb, "Conn Co") == 1


def test_rpc_encoded_client_gets_the_same_answers(bridge, qb):
    enqueue(bridge, [customer_add("Rpc Co")])
    report = wc(bridge, qb, style="rpc").run_once()
    assert report.status == "ok" and report.percents == [100]
    assert count_customers(qb, "Rpc Co") == 1


def test_old_client_version_gets_a_warning_not_a_refusal(bridge, qb):
    sim = wc(bridge, qb, version="2.0.1.6")
    assert sim.call("clientVersion", [("strVersion", "2.0.1.6")]).startswith("W:")
    assert sim.call("clientVersion", [("strVersion", "2.3.0.36")]) == ""


def test_two_companies_never_see_each_others_work(bridge, tmp_path):
    from test_bridge_support import make_company_file

    acme, globex = make_company_file(tmp_path / "a.qbw"), make_company_file(tmp_path / "g.qbw")
    enqueue(bridge, [customer_add("Only Acme")], company="acme")
    enqueue(bridge, [customer_add("Only Globex")], company="globex")
    wc(bridge, acme).run_once()
    wc(bridge, globex, user="globex", password="pw2").run_once()
    assert count_customers(acme, "Only Acme") == 1 and count_customers(acme, "Only Globex") == 0
    assert count_customers(globex, "Only Globex") == 1 and count_customers(globex, "Only Acme") == 0


def test_status_health_metrics_and_wsdl(bridge, qb):
    enqueue(bridge, [customer_add("Page Co")])
    wc(bridge, qb).run_once()
    page = httpx.get(f"{bridge.url}/status", headers=AUTH)
    assert page.status_code == 200 and "acme" in page.text and "Last synchronization sessions" in page.text
    assert httpx.get(f"{bridge.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{bridge.url}/healthz").status_code == 200
    metrics = httpx.get(f"{bridge.url}/metrics", headers=AUTH).text
    assert 'qbwc_bridge_soap_calls_total{method="sendRequestXML",outcome="ok"}' in metrics
    assert 'qbwc_bridge_requests{company="acme",state="done"} 1' in metrics
    wsdl = httpx.get(f"{bridge.url}/qbwc?wsdl")
    assert (
        wsdl.status_code == 200 and 'soapAction="http://developer.intuit.com/receiveResponseXML"' in wsdl.text
    )
    spec = httpx.get(f"{bridge.url}/openapi.json").json()
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}"} <= set(spec["paths"])


def test_qwc_download(bridge):
    first = httpx.get(f"{bridge.url}/qbwc/companies/acme.qwc", headers=AUTH)
    assert first.status_code == 200 and first.headers["content-type"].startswith("application/x-qwc")
    for field in (
        "AppName",
        "AppID",
        "AppURL",
        "AppDescription",
        "AppSupport",
        "UserName",
        "OwnerID",
        "FileID",
        "QBType",
        "RunEveryNMinutes",
        "IsReadOnly",
    ):
        assert f"<{field}>" in first.text, field
    assert f"<AppURL>{bridge.url.replace('127.0.0.1', 'localhost')}/qbwc</AppURL>" in first.text
    again = httpx.get(f"{bridge.url}/companies/acme/qwc", headers=AUTH)
    assert again.text == first.text  # stable GUIDs
    other = httpx.get(f"{bridge.url}/companies/globex/qwc", headers=AUTH).text
    owner = lambda text: text.split("<FileID>")[1].split("<")[0]  # noqa: E731
    assert owner(other) != owner(first.text)
    assert httpx.get(f"{bridge.url}/companies/nope/qwc", headers=AUTH).status_code == 404


def test_qwc_refuses_plain_http_for_a_remote_host(bridge):
    bridge.running.spec.app.state.bridge.settings = bridge.settings.model_copy(
        update={"public_url": "http://sync.example.com"}
    )
    resp = httpx.get(f"{bridge.url}/companies/acme/qwc", headers=AUTH)
    assert resp.status_code == 409 and "QBWC1010" in resp.json()["detail"]


def test_jobs_api_requires_the_token(bridge):
    assert httpx.get(f"{bridge.url}/api/v1/jobs").status_code == 401
    assert httpx.get(f"{bridge.url}/api/v1/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{bridge.url}/api/v1/jobs", headers=AUTH).status_code == 200


def test_changed_password_invalidates_the_remembered_one(bridge, qb):
    from erpsync.qbwc_bridge.crud import set_password

    assert wc(bridge, qb).run_once().status == "none"  # verified once (and remembered)
    with bridge.store.session() as s:
        set_password(session=s, name="acme", password="new-pw")
    assert wc(bridge, qb).run_once().status == "nvu"
    assert wc(bridge, qb, password="new-pw").run_once().status == "none"


def test_web_connector_pointed_at_another_companys_file_sends_nothing(bridge, tmp_path):
    """QBWC stores each .qwc's FileID in the company file; the HCP answer reveals a wrong file."""
    from test_bridge_support import make_company_file

    from erpsync.sandbox.webconnector import WebConnectorSimulator

    acme_file = make_company_file(tmp_path / "acme.qbw")
    acme_qwc = httpx.get(f"{bridge.url}/companies/acme/qwc", headers=AUTH).text
    globex_qwc = httpx.get(f"{bridge.url}/companies/globex/qwc", headers=AUTH).text
    enqueue(bridge, [customer_add("Acme Own")], company="acme")
    sim = WebConnectorSimulator.from_qwc(acme_qwc, "pw", acme_file, url=bridge.soap_url, noop_wait=0.05)
    assert sim.run_once().status == "ok"  # first contact: QBWC registers acme's FileID in the file
    jid = enqueue(bridge, [customer_add("Globex Only")], company="globex").json()["id"]
    wrong = WebConnectorSimulator.from_qwc(globex_qwc, "pw2", acme_file, url=bridge.soap_url, noop_wait=0.05)
    # globex's entry opens acme's file: the file holds the application's FileID for acme, not globex
    report = wrong.run_once()
    assert "FileID" in (report.last_error or "") and report.calls[-1] == "closeConnection"
    assert count_customers(acme_file, "Globex Only") == 0
    assert job(bridge, jid)["state"] == "queued"  # kept for the right file
