"""The SOAP endpoint against hostile or broken input, and against an independent SOAP client (zeep)."""

from __future__ import annotations

import httpx
from test_bridge_support import count_customers, customer_add, enqueue, job

from erpsync.sandbox.webconnector import WebConnectorSimulator

pytest_plugins = ["test_bridge_support"]

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
HEADERS = {"Content-Type": "text/xml; charset=utf-8"}


def _call(url: str, body: bytes | str, action: str = "") -> httpx.Response:
    headers = dict(HEADERS)
    if action:
        headers["SOAPAction"] = f'"http://developer.intuit.com/{action}"'
    return httpx.post(url, content=body, headers=headers, timeout=30)


def _envelope(method: str, inner: str) -> str:
    return (
        f'<?xml version="1.0"?><soap:Envelope xmlns:soap="{SOAP}"><soap:Body>'
        f'<{method} xmlns="http://developer.intuit.com/">{inner}</{method}></soap:Body></soap:Envelope>'
    )


def _assert_fault(resp: httpx.Response, text: str) -> None:
    assert resp.status_code in (413, 500), resp.status_code
    assert "<faultstring>" in resp.text and text in resp.text, resp.text[:500]


def test_malformed_and_unknown_requests_get_faults_and_the_bridge_carries_on(bridge, qb):
    url = bridge.soap_url
    _assert_fault(_call(url, b"<soap:Envelope"), "malformed SOAP request")
    _assert_fault(_call(url, b"not xml at all"), "malformed SOAP request")
    _assert_fault(_call(url, b"<a/>"), "expected a SOAP Envelope")
    _assert_fault(_call(url, f'<soap:Envelope xmlns:soap="{SOAP}"/>'), "no Body")
    _assert_fault(_call(url, _envelope("dropDatabase", "")), "unknown Web Connector method")
    # ... and real work still goes through afterwards
    jid = enqueue(bridge, [customer_add("After Faults Co")]).json()["id"]
    assert WebConnectorSimulator(url, "acme", "pw", qb).run_once().status == "ok"
    assert job(bridge, jid)["state"] == "completed"


def test_xxe_and_entity_expansion_are_refused_without_reading_anything(bridge, qb, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Body><authenticate xmlns="http://developer.intuit.com/">'
        "<strUserName>&xxe;</strUserName><strPassword>x</strPassword></authenticate></soap:Body></soap:Envelope>"
    )
    resp = _call(bridge.soap_url, xxe)
    _assert_fault(resp, "DTD")
    assert "TOP-SECRET" not in resp.text
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{"&lol%s;" % ("" if i == 1 else i - 1) * 10}">' for i in range(1, 10))
        + f']><soap:Envelope xmlns:soap="{SOAP}"><soap:Body><serverVersion xmlns="http://developer.intuit.com/">'
        "<strVersion>&lol9;</strVersion></serverVersion></soap:Body></soap:Envelope>"
    )
    _assert_fault(_call(bridge.soap_url, laughs), "DTD")
    # an XXE inside the qbXML response a client sends back is refused the same way
    jid = enqueue(bridge, [customer_add("Xxe Co")]).json()["id"]
    sim = WebConnectorSimulator(
        bridge.soap_url, "acme", "pw", lambda doc: xxe.split("<soap:Envelope")[0] + "<QBXML/>"
    )
    report = sim.run_once()
    assert report.status == "error" and "TOP-SECRET" not in (report.last_error or "")
    assert "could not be read" in report.last_error and "DTD" in report.last_error
    assert job(bridge, jid)["counts"]["done"] == 0
    # the unusable answer is reconciled like a lost one; the next run delivers the work once
    assert WebConnectorSimulator(bridge.soap_url, "acme", "pw", qb).run_once().status == "ok"
    assert job(bridge, jid)["state"] == "completed" and count_customers(qb, "Xxe Co") == 1


def test_twenty_megabyte_body_is_refused_with_413(bridge):
    big = _envelope("serverVersion", "<strVersion>" + "x" * (20 * 1024 * 1024) + "</strVersion>")
    resp = _call(bridge.soap_url, big)
    assert resp.status_code == 413 and "exceeds" in resp.text
    assert httpx.get(f"{bridge.url}/health").status_code == 200


def test_a_streamed_body_over_the_limit_is_refused_with_413_as_a_soap_fault(bridge):
    """No Content-Length (chunked): the limit is enforced while reading, answered as a SOAP fault."""
    big = _envelope("serverVersion", "<strVersion>" + "x" * (20 * 1024 * 1024) + "</strVersion>").encode()

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    resp = httpx.post(bridge.soap_url, content=chunks(), headers={"Content-Type": "text/xml"}, timeout=30)
    assert resp.request.headers.get("transfer-encoding") == "chunked"
    assert resp.status_code == 413, resp.status_code
    assert "<faultstring>" in resp.text and "exceeds the" in resp.text, resp.text[:500]
    assert httpx.get(f"{bridge.url}/health").status_code == 200


def test_bad_ticket_bad_password_wrong_company(bridge):
    url = bridge.soap_url
    send = _call(
        url,
        _envelope(
            "sendRequestXML",
            "<ticket>forged</ticket><strHCPResponse/><strCompanyFileName/><qbXMLCountry>US</qbXMLCountry>"
            "<qbXMLMajorVers>13</qbXMLMajorVers><qbXMLMinorVers>0</qbXMLMinorVers>",
        ),
    )
    assert send.status_code == 200 and "<sendRequestXMLResult></sendRequestXMLResult>" in send.text
    err = _call(url, _envelope("getLastError", "<ticket>forged</ticket>"))
    assert "Invalid or expired ticket" in err.text
    recv = _call(
        url, _envelope("receiveResponseXML", "<ticket>forged</ticket><response/><hresult/><message/>")
    )
    assert "<receiveResponseXMLResult>-1</receiveResponseXMLResult>" in recv.text
    closed = _call(url, _envelope("closeConnection", "<ticket>forged</ticket>"))
    assert closed.status_code == 200
    # globex's user with acme's password, and acme's user with a wrong one: "nvu", nothing else leaks
    for user, password in (("globex", "pw"), ("acme", "wrong"), ("", "")):
        auth = _call(
            url,
            _envelope(
                "authenticate", f"<strUserName>{user}</strUserName><strPassword>{password}</strPassword>"
            ),
        )
        assert auth.status_code == 200
        assert "<string></string><string>nvu</string>" in auth.text
        assert "scrypt" not in auth.text and "pw2" not in auth.text


def test_interactive_methods_answer_politely(bridge):
    url = bridge.soap_url
    assert (
        "<interactiveDoneResult>Done</interactiveDoneResult>"
        in _call(url, _envelope("interactiveDone", "<wcTicket>t</wcTicket>")).text
    )
    assert (
        _call(
            url, _envelope("getInteractiveURL", "<wcTicket>t</wcTicket><sessionID>s</sessionID>")
        ).status_code
        == 200
    )
    assert (
        _call(url, _envelope("interactiveRejected", "<wcTicket>t</wcTicket><reason>r</reason>")).status_code
        == 200
    )


def test_consolibyte_captured_envelopes_parse(bridge, shared_dir):
    """The three captured request shapes (doc/literal, RPC-encoded with xsi:type, ns1: prefixes)."""
    fixtures = shared_dir / "fixtures" / "qbwc"
    auth = (fixtures / "consolibyte-emulated_soap_authenticate_request.xml").read_text()
    resp = _call(
        bridge.soap_url,
        auth.replace("PLACEHOLDER_TICKET_OR_USERNAME", "acme").replace("PLACEHOLDER_PASSWORD", "pw"),
    )
    assert resp.status_code == 200 and "<authenticateResult>" in resp.text
    ticket = resp.text.split("<string>")[1].split("</string>")[0]
    assert ticket and "nvu" not in resp.text
    send = (fixtures / "consolibyte-emulated_soap_sendRequestXML_request.xml").read_text()
    resp = _call(bridge.soap_url, send.replace("PLACEHOLDER_TICKET_OR_USERNAME", ticket))
    assert resp.status_code == 200 and "<sendRequestXMLResult" in resp.text
    receive = (fixtures / "consolibyte-emulated_soap_receiveResponseXML_request.xml").read_text()
    resp = _call(
        bridge.soap_url,
        receive.replace("PLACEHOLDER_TICKET_OR_USERNAME", ticket).replace(
            "PLACEHOLDER_ESCAPED_QBXML_RESPONSE", ""
        ),
    )
    assert resp.status_code == 200 and "<receiveResponseXMLResult>" in resp.text


def _zeep_session(client, qb, *, user="acme", password="pw"):
    service = client.service
    assert service.serverVersion() is not None or True
    assert (service.clientVersion(strVersion="2.3.0.36") or "") == ""
    auth = service.authenticate(strUserName=user, strPassword=password)
    ticket, company = auth[0], auth[1] or ""
    assert company not in {"nvu", "none", "busy"}
    percents = []
    while True:
        doc = service.sendRequestXML(
            ticket=ticket,
            strHCPResponse="",
            strCompanyFileName=company,
            qbXMLCountry="US",
            qbXMLMajorVers=13,
            qbXMLMinorVers=0,
        )
        assert doc, service.getLastError(ticket=ticket)
        percent = service.receiveResponseXML(
            ticket=ticket, response=qb.process(doc, session=ticket), hresult="", message=""
        )
        percents.append(percent)
        if percent >= 100 or percent < 0:
            break
    return percents, service.closeConnection(ticket=ticket)


def test_zeep_client_built_from_intuits_wsdl_runs_a_session(bridge_factory, qb, shared_dir):
    """An independent SOAP client, built from the Web Connector WSDL, drives a whole session."""
    import zeep
    from zeep.transports import Transport

    b = bridge_factory(max_batch_requests=3)
    names = [f"Zeep Co {i}" for i in range(7)]
    jid = enqueue(b, [customer_add(n) for n in names]).json()["id"]
    wsdl = shared_dir / "reference" / "qbxml" / "QBWebConnectorSvc.wsdl"
    client = zeep.Client(str(wsdl), transport=Transport(timeout=30))
    client.service._binding_options["address"] = b.soap_url
    percents, closed = _zeep_session(client, qb)
    assert percents[-1] == 100 and len(percents) == 3
    assert closed.startswith("OK: 7 succeeded")
    assert job(b, jid)["state"] == "completed"
    assert all(count_customers(qb, n) == 1 for n in names)


def test_zeep_client_built_from_the_served_wsdl(bridge, qb):
    """The WSDL the bridge serves at GET /qbwc?wsdl describes the endpoint it is served from."""
    import zeep

    enqueue(bridge, [customer_add("Served Wsdl Co")])
    client = zeep.Client(f"{bridge.soap_url}?wsdl")
    client.service._binding_options["address"] = bridge.soap_url  # the sandbox URL is 127.0.0.1
    percents, _ = _zeep_session(client, qb)
    assert percents == [100]
    assert client.service.interactiveDone(wcTicket="x") == "Done"
    assert count_customers(qb, "Served Wsdl Co") == 1


def test_serve_command_as_docker_compose_runs_it(tmp_path):
    """`qbwc-bridge serve --migrate --ssl-certfile --ssl-keyfile` on a fresh database answers /health over TLS."""
    import os
    import secrets
    import socket
    import subprocess
    import sys
    import time

    from erpsync.sandbox.runner import SandboxCA

    ca = SandboxCA(tmp_path / "ca")
    cert, key = ca.server_files()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "QBWC_BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh' / 'bridge.db'}",
        "QBWC_BRIDGE_API_TOKEN": secrets.token_urlsafe(32),
    }
    argv = [sys.executable, "-m", "erpsync.qbwc_bridge.cli", "serve", "--port", str(port), "--migrate"]
    proc = subprocess.Popen(
        [*argv, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"https://localhost:{port}/health", verify=str(ca.ca_bundle), timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read().decode()[
                    -2000:
                ]
                time.sleep(0.2)
        assert health.json() == {"status": "ok", "database": "sqlite"}
        assert httpx.get(f"https://localhost:{port}/api/v1/jobs", verify=str(ca.ca_bundle)).status_code == 401
    finally:
        proc.terminate()
        proc.wait(20)
    placeholder = subprocess.run(
        [sys.executable, "-m", "erpsync.qbwc_bridge.cli", "migrate"],
        env={**env, "QBWC_BRIDGE_API_TOKEN": "change-me-bridge-token"},
        capture_output=True,
        text=True,
    )
    assert placeholder.returncode == 2 and "placeholder" in placeholder.stderr


def test_answers_that_match_no_request_are_reported_per_request(bridge, qb):
    """A response whose requestIDs match nothing: each request ends in doubt with the reason, the queue goes on."""
    import re

    jid = enqueue(bridge, [customer_add("Unmatched Co")]).json()["id"]

    def scrambled(doc: str) -> str:
        return re.sub(r'requestID="[^"]*"', 'requestID="somebody-else"', qb.process(doc))

    from erpsync.qbwc_bridge.conversation import MAX_PROBE_ATTEMPTS

    report = WebConnectorSimulator(bridge.soap_url, "acme", "pw", scrambled).run_once()
    assert report.status == "ok" and report.exchanges == 1 + 1  # the work, then one probe round per session
    for _ in range(MAX_PROBE_ATTEMPTS - 1):  # no answer to the probe proves nothing: asked again later
        assert job(bridge, jid)["state"] == "in_progress"
        assert WebConnectorSimulator(bridge.soap_url, "acme", "pw", scrambled).run_once().exchanges == 1
    result = job(bridge, jid)
    assert result["state"] == "failed" and result["results"][0]["state"] == "in_doubt"
    assert result["results"][0]["status_message"].startswith("in doubt:")
    assert count_customers(qb, "Unmatched Co") == 1  # never resent while unconfirmed
    later = enqueue(bridge, [customer_add("Later Co")]).json()["id"]
    assert WebConnectorSimulator(bridge.soap_url, "acme", "pw", qb).run_once().status == "ok"
    assert job(bridge, later)["state"] == "completed"
