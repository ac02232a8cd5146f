"""The QuickBooks simulator over its HTTP admin socket: inspect, inject faults, reset, restart."""

from __future__ import annotations

import httpx
import pytest

from erpsync.qbwc_bridge import qbxml as q
from erpsync.sandbox import quickbooks
from erpsync.sandbox.runner import SandboxCA, SandboxContext, serve_in_thread


@pytest.fixture
def ctx(tmp_path) -> SandboxContext:
    return SandboxContext(data_dir=tmp_path, ca=SandboxCA(tmp_path / "ca"), seed=True)


@pytest.fixture
def running(ctx):
    service = serve_in_thread(quickbooks.service(ctx), ctx, port=0)
    yield service
    service.stop()


def test_seeded_company_is_visible_over_http(running, ctx):
    summary = httpx.get(f"{running.url}/api/company").json()
    assert summary["counts"]["Customer"] == 32 and summary["counts"]["Item"] == 21
    assert (
        summary["counts"]["Invoice"] + summary["counts"]["SalesOrder"] + summary["counts"]["SalesReceipt"]
        == 12
    )
    jobs = [
        c for c in httpx.get(f"{running.url}/api/records/Customer").json()["records"] if c["Sublevel"] == "1"
    ]
    assert len(jobs) == 4 and all(":" in job["FullName"] for job in jobs)
    assert running.spec.info["company_file"].endswith("quickbooks/company.sqlite")
    assert quickbooks.company_for(ctx).count("Customer") == 32  # the same object the WC simulator drives
    assert httpx.get(f"{running.url}/api/records/Planet").status_code == 404


def test_qbxml_endpoint_and_inspection_agree(running):
    doc = q.envelope([q.customer_add({"Name": "Over HTTP", "Phone": "555"}, request_id="h1")])
    answer = httpx.post(f"{running.url}/qbxml", content=doc, headers={"content-type": "text/xml"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/xml")
    list_id = q.parse_response(answer.text).responses[0].list_id
    found = httpx.get(f"{running.url}/api/records/Customer", params={"name": "over http"}).json()
    assert found["count"] == 1 and found["records"][0]["ListID"] == list_id
    assert httpx.get(f"{running.url}/api/count/Customer").json() == {"kind": "Customer", "count": 33}
    refused = httpx.post(f"{running.url}/qbxml", content=b"<QBXML><oops>")
    assert refused.status_code == 422 and refused.json()["hresult"] == "0x80040400"
    assert "not well-formed" in refused.json()["detail"]


def test_faults_over_http(running, ctx):
    bad = httpx.put(f"{running.url}/api/faults", json={"busy": -1})
    assert bad.status_code == 400 and "non-negative" in bad.json()["error"]
    assert httpx.put(f"{running.url}/api/faults", json={"nonsense": 1}).status_code == 400
    not_object = httpx.put(f"{running.url}/api/faults", json=[["busy", 1]])
    assert not_object.status_code == 400 and "JSON object" in not_object.json()["error"]
    assert httpx.put(f"{running.url}/api/faults", json={"busy": 1, "lose_responses": 1}).json()["busy"] == 1
    doc = q.envelope([q.customer_add({"Name": "Lost Answer"}, request_id="l1")], new_message_set_id="http-1")
    busy = httpx.post(f"{running.url}/qbxml", content=doc)
    assert busy.status_code == 422 and busy.json()["hresult"] == "0x80040401"
    lost = httpx.post(f"{running.url}/qbxml", content=doc)
    assert lost.status_code == 502 and lost.content == b""
    assert (
        httpx.get(f"{running.url}/api/records/Customer", params={"name": "Lost Answer"}).json()["count"] == 1
    )
    recovered = httpx.post(f"{running.url}/qbxml", content=q.envelope([], old_message_set_id="http-1"))
    assert q.parse_response(recovered.text).responses[0].request_id == "l1"
    assert httpx.get(f"{running.url}/api/faults").json()["lose_responses"] == 0


def test_data_ext_lookup_and_application_registration(running):
    owner = "{3F2504E0-4F89-11D3-9A0C-0305E82C3301}"
    file_id = "{8A6C1D52-0B7E-4D0A-9B0F-6E4C2B1A9D11}"
    assert httpx.post(f"{running.url}/api/applications", json={"owner_id": owner}).status_code == 400
    assert (
        httpx.post(
            f"{running.url}/api/applications", json={"owner_id": owner, "file_id": file_id}
        ).status_code
        == 200
    )
    value = httpx.get(
        f"{running.url}/api/data-ext", params={"owner_id": owner, "name": "FileID", "object_id": "company"}
    )
    assert value.json()["value"] == file_id
    missing = httpx.get(f"{running.url}/api/data-ext", params={"owner_id": owner})
    assert missing.status_code == 400 and "name, object_id" in missing.json()["error"]


def test_reset_and_persistence_across_restart(ctx):
    first = serve_in_thread(quickbooks.service(ctx), ctx, port=0)
    try:
        doc = q.envelope([q.customer_add({"Name": "Survivor"}, request_id="s")])
        list_id = q.parse_response(httpx.post(f"{first.url}/qbxml", content=doc).text).responses[0].list_id
    finally:
        first.stop()
    second = serve_in_thread(quickbooks.service(ctx), ctx, port=0)
    try:
        found = httpx.get(f"{second.url}/api/records/Customer", params={"name": "Survivor"}).json()
        assert found["records"][0]["ListID"] == list_id
        assert httpx.get(f"{second.url}/api/count/Customer").json()["count"] == 33  # not seeded twice
        reset = httpx.post(f"{second.url}/api/reset").json()
        assert reset == {"reset": True, "seeded": False, "customers": 0}
        assert httpx.post(f"{second.url}/api/reset", params={"seed": "true"}).json()["customers"] == 32
    finally:
        second.stop()


def test_hostile_bodies_get_a_parse_error_not_a_crash(running):
    xxe = b'<?xml version="1.0"?><!DOCTYPE QBXML [<!ENTITY x SYSTEM "file:///etc/passwd">]><QBXML>&x;</QBXML>'
    refused = httpx.post(f"{running.url}/qbxml", content=xxe)
    assert refused.status_code == 422 and "DTD" in refused.json()["detail"] and "root:" not in refused.text
    huge = b"<QBXML>" + b" " * (20 * 1024 * 1024) + b"</QBXML>"
    too_big = httpx.post(f"{running.url}/qbxml", content=huge, timeout=30)
    assert too_big.status_code == 422 and "byte limit" in too_big.json()["detail"]
    assert httpx.get(f"{running.url}/healthz").json() == {"status": "ok"}


def test_concurrent_documents_do_not_mix(running):
    from concurrent.futures import ThreadPoolExecutor

    def post(worker: int) -> list[str]:
        doc = q.envelope(
            [
                q.customer_add({"Name": f"Worker {worker} #{i}"}, request_id=f"w{worker}-{i}")
                for i in range(20)
            ]
        )
        answer = q.parse_response(httpx.post(f"{running.url}/qbxml", content=doc, timeout=30).text)
        assert all(r.status_code == 0 for r in answer.responses)
        return [r.records[0]["Name"] for r in answer.responses]

    with ThreadPoolExecutor(max_workers=6) as pool:
        names = list(pool.map(post, range(6)))
    for worker, got in enumerate(names):
        assert got == [f"Worker {worker} #{i}" for i in range(20)]
    assert httpx.get(f"{running.url}/api/count/Customer").json()["count"] == 32 + 120


def test_public_names_are_pinned():
    assert quickbooks.__all__ == [
        "CompanyFile", "Faults", "RequestProcessorError", "ResponseLostError", "company_for", "service",
    ]  # fmt: skip
