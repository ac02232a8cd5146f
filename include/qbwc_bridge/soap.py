"""The SOAP 1.1 layer of the Web Connector endpoint: parse by local name, dispatch, render, one boundary.

Thin on purpose: parameters are read by local name (so document/literal, DocWrapped and RPC-encoded
bodies with any prefixes or `xsi:type` attributes all work), handed to the `Conversation`, and the
answer is rendered as wrapped document/literal in the `http://developer.intuit.com/` namespace, as
every Web Connector server does whatever Style the .qwc asked for.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape

from erpsync.errors import SyncError
from erpsync.qbwc_bridge import _qbxml, metrics
from erpsync.qbwc_bridge.conversation import Conversation

__all__ = ["INTUIT_NS", "METHODS", "SoapFault", "handle_soap", "wsdl"]

log = logging.getLogger(__name__)

INTUIT_NS = "http://developer.intuit.com/"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"


class SoapFault(SyncError):
    """A request the endpoint cannot answer with a protocol value (malformed, unknown method)."""

    def __init__(self, message: str, *, code: str = "soap:Client"):
        super().__init__(message, where="POST /qbwc")
        self.code = code


@dataclass(frozen=True)
class Method:
    params: tuple[str, ...]
    result: str  # "string" | "int" | "array"
    call: Callable[..., object]
    #: What the Web Connector gets when the bridge itself fails (the documented "error" answer).
    failure: object


def _methods(c: Conversation, client_addr: str = "") -> dict[str, Method]:
    return {
        "serverVersion": Method((), "string", lambda: c.server_version(), ""),
        "clientVersion": Method(("strVersion",), "string", c.client_version, ""),
        "authenticate": Method(
            ("strUserName", "strPassword"),
            "array",
            lambda user, password: c.authenticate(user, password, client_addr),
            ["", "busy", "", ""],
        ),
        "sendRequestXML": Method(
            (
                "ticket",
                "strHCPResponse",
                "strCompanyFileName",
                "qbXMLCountry",
                "qbXMLMajorVers",
                "qbXMLMinorVers",
            ),
            "string",
            c.send_request_xml,
            "",
        ),
        "receiveResponseXML": Method(
            ("ticket", "response", "hresult", "message"), "int", c.receive_response_xml, -1
        ),
        "getLastError": Method(
            ("ticket",), "string", c.get_last_error, "The bridge could not read its error log."
        ),
        "connectionError": Method(("ticket", "hresult", "message"), "string", c.connection_error, "done"),
        "closeConnection": Method(("ticket",), "string", c.close_connection, "Closed with a bridge error."),
        # Interactive mode is never requested (getLastError never answers "Interactive mode"); answer
        # politely anyway so a stray call is not a fault.
        "getInteractiveURL": Method(("wcTicket", "sessionID"), "string", lambda *_: "", ""),
        "interactiveDone": Method(("wcTicket",), "string", lambda *_: "Done", "Done"),
        "interactiveRejected": Method(
            ("wcTicket", "reason"), "string", lambda *_: "Interactive mode is not used.", ""
        ),
    }


METHODS = (
    "serverVersion",
    "clientVersion",
    "authenticate",
    "sendRequestXML",
    "receiveResponseXML",
    "getLastError",
    "connectionError",
    "closeConnection",
    "getInteractiveURL",
    "interactiveDone",
    "interactiveRejected",
)


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse_call(body: bytes, soap_action: str = "", *, max_bytes: int) -> tuple[str, dict[str, str]]:
    """Return (method, {param local name (lower case): text}) from any envelope style the client sends."""
    try:
        root = _qbxml.parse_fragment(body, max_bytes=max_bytes)
    except _qbxml.BadRequestXml as exc:
        raise SoapFault(f"malformed SOAP request: {exc.message}") from exc
    if _local(root.tag) != "Envelope":
        raise SoapFault(f"expected a SOAP Envelope, got <{_local(root.tag)}>")
    soap_body = next((el for el in root if _local(el.tag) == "Body"), None)
    if soap_body is None:
        raise SoapFault("SOAP Envelope has no Body")
    call = next((el for el in soap_body if isinstance(el.tag, str)), None)
    if call is None:
        action = soap_action.strip('"').rsplit("/", 1)[-1]
        if action:
            return action, {}
        raise SoapFault("SOAP Body is empty")
    args = {_local(c.tag).lower(): "".join(c.itertext()) for c in call if isinstance(c.tag, str)}
    return _local(call.tag), args


def render(method: str, result: object) -> bytes:
    if isinstance(result, list):
        inner = "".join(f"<string>{escape(str(v))}</string>" for v in result)
    else:
        inner = escape(str(result))
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_NS}" '
        f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        f'<soap:Body><{method}Response xmlns="{INTUIT_NS}"><{method}Result>{inner}</{method}Result>'
        f"</{method}Response></soap:Body></soap:Envelope>"
    ).encode()


def render_fault(fault: SoapFault) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body>'
        f"<soap:Fault><faultcode>{fault.code}</faultcode><faultstring>{escape(fault.message)}</faultstring>"
        f"</soap:Fault></soap:Body></soap:Envelope>"
    ).encode()


def handle_soap(
    conversation: Conversation, body: bytes, soap_action: str = "", client_addr: str = ""
) -> tuple[int, bytes]:
    """Answer one SOAP request: (HTTP status, body). The single error boundary of the endpoint.

    `client_addr` is the caller's IP address (the login backoff counts failures per address).
    """
    started = time.perf_counter()
    try:
        method, args = parse_call(body, soap_action, max_bytes=conversation.settings.max_body_bytes)
    except SoapFault as fault:
        metrics.SOAP_CALLS.inc(method="invalid", outcome="fault")
        return 500, render_fault(fault)
    spec = _methods(conversation, client_addr).get(method)
    if spec is None:
        metrics.SOAP_CALLS.inc(method="unknown", outcome="fault")
        return 500, render_fault(SoapFault(f"unknown Web Connector method {method[:60]!r}"))
    values = [args.get(p.lower(), "") for p in spec.params]
    ticket = args.get("ticket") or args.get("wcticket") or ""
    outcome = "ok"
    try:
        result = spec.call(*values)
    except Exception as exc:
        # The one broad catch: log it, keep a message for getLastError, answer the spec's failure value.
        error_id = secrets.token_hex(4)
        log.exception("SOAP %s failed (ticket %s..., error id %s)", method, ticket[:8], error_id)
        reason = exc.message if isinstance(exc, SyncError) else type(exc).__name__
        try:
            conversation.record_error(
                ticket, f"The bridge failed in {method} ({reason}); error id {error_id}."
            )
        except Exception:
            log.exception("could not store the error for getLastError")
        result, outcome = spec.failure, "error"
    if method == "authenticate" and isinstance(result, list) and result[1:2] == ["nvu"]:
        outcome = "refused"  # wrong password, unknown user or login backoff: no hint which
    metrics.SOAP_CALLS.inc(method=method, outcome=outcome)
    metrics.SOAP_SECONDS.observe(time.perf_counter() - started, method=method)
    return 200, render(method, result)


def wsdl(location: str) -> str:
    """A WSDL 1.1 description of the endpoint (document/literal, wrapped), generated from METHODS."""
    c = Conversation.__new__(Conversation)
    specs = _methods(c)
    types, messages, ops, binds = [], [], [], []
    for name in METHODS:
        spec = specs[name]
        params = "".join(
            f'<s:element minOccurs="0" maxOccurs="1" name="{p}" type="s:string"/>' for p in spec.params
        )
        rtype = {"string": "s:string", "int": "s:int", "array": "tns:ArrayOfString"}[spec.result]
        occurs = 'minOccurs="1"' if spec.result == "int" else 'minOccurs="0"'
        types.append(
            f'<s:element name="{name}"><s:complexType><s:sequence>{params}</s:sequence></s:complexType></s:element>'
            f'<s:element name="{name}Response"><s:complexType><s:sequence>'
            f'<s:element {occurs} maxOccurs="1" name="{name}Result" type="{rtype}"/>'
            f"</s:sequence></s:complexType></s:element>"
        )
        messages.append(
            f'<wsdl:message name="{name}SoapIn"><wsdl:part name="parameters" element="tns:{name}"/></wsdl:message>'
            f'<wsdl:message name="{name}SoapOut"><wsdl:part name="parameters" element="tns:{name}Response"/>'
            f"</wsdl:message>"
        )
        ops.append(
            f'<wsdl:operation name="{name}"><wsdl:input message="tns:{name}SoapIn"/>'
            f'<wsdl:output message="tns:{name}SoapOut"/></wsdl:operation>'
        )
        binds.append(
            f'<wsdl:operation name="{name}"><soap:operation soapAction="{INTUIT_NS}{name}" style="document"/>'
            f'<wsdl:input><soap:body use="literal"/></wsdl:input><wsdl:output><soap:body use="literal"/>'
            f"</wsdl:output></wsdl:operation>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<wsdl:definitions xmlns:s="http://www.w3.org/2001/XMLSchema" '
        'xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" '
        f'xmlns:tns="{INTUIT_NS}" targetNamespace="{INTUIT_NS}">'
        f'<wsdl:types><s:schema elementFormDefault="qualified" targetNamespace="{INTUIT_NS}">'
        '<s:complexType name="ArrayOfString"><s:sequence>'
        '<s:element minOccurs="0" maxOccurs="unbounded" name="string" nillable="true" type="s:string"/>'
        f"</s:sequence></s:complexType>{''.join(types)}</s:schema></wsdl:types>"
        f"{''.join(messages)}"
        f'<wsdl:portType name="QBWebConnectorSvcSoap">{"".join(ops)}</wsdl:portType>'
        '<wsdl:binding name="QBWebConnectorSvcSoap" type="tns:QBWebConnectorSvcSoap">'
        f'<soap:binding transport="http://schemas.xmlsoap.org/soap/http"/>{"".join(binds)}</wsdl:binding>'
        '<wsdl:service name="QBWebConnectorSvc"><wsdl:port name="QBWebConnectorSvcSoap" '
        f'binding="tns:QBWebConnectorSvcSoap"><soap:address location="{escape(location)}"/></wsdl:port>'
        "</wsdl:service></wsdl:definitions>"
    )
