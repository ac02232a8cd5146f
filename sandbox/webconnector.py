"""A Web Connector client simulator: drives a bridge over real HTTP exactly as QBWC on Windows does.

One `run_once()` is one scheduled update (one ticket):

    serverVersion -> clientVersion -> authenticate
      -> connectionError (if the company file cannot be opened) -> closeConnection
      -> sendRequestXML / (QuickBooks runs the document) / receiveResponseXML ... until 100%
         or an empty request (then getLastError; "NoOp" = wait and ask again)
      -> getLastError after a negative percent -> closeConnection

Each qbXML document goes to a QuickBooks processor: the company-file simulator
(`erpsync.sandbox.quickbooks.CompanyFile`, anything with `.process(xml) -> xml`) or a callable.
Faults are injected by exchange number (1-based, per session): drop the acknowledgement after
QuickBooks applied the document (QBWC timed out / crashed), crash before QuickBooks ran it, an HRESULT
from the request processor, a slow QuickBooks, a company file that cannot be opened, and HTTP-level
failures (timeouts, 5xx) end the update the way QBWC does: no further calls in that run.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

__all__ = ["Faults", "LocalBridge", "SessionReport", "WebConnectorSimulator", "start_bridge"]

log = logging.getLogger(__name__)

INTUIT_NS = "http://developer.intuit.com/"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
HCP_REQUEST = (
    '<?xml version="1.0" encoding="utf-8"?><?qbxml version="{version}"?><QBXML>'
    '<QBXMLMsgsRq onError="continueOnError"><HostQueryRq requestID="hcp1"/>'
    '<CompanyQueryRq requestID="hcp2"/><PreferencesQueryRq requestID="hcp3"/></QBXMLMsgsRq></QBXML>'
)
#: What the Web Connector assumes when the QuickBooks processor cannot say what it speaks.
DEFAULT_QBXML_VERSION = (13, 0)


@dataclass
class Faults:
    """Failures to inject, keyed by exchange number within a session (1 = first sendRequestXML)."""

    #: QuickBooks applied the document but receiveResponseXML is never sent (timeout, QBWC killed).
    drop_ack_on: set[int] = field(default_factory=set)
    #: QBWC dies right after sendRequestXML: QuickBooks never sees the document.
    crash_before_quickbooks_on: set[int] = field(default_factory=set)
    #: The request processor throws: receiveResponseXML carries (hresult, message) and no response.
    hresult_on: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: Seconds QuickBooks takes per document.
    slow_quickbooks: float = 0.0
    #: QuickBooks cannot open the company file: connectionError instead of sendRequestXML.
    open_fails: bool = False


@dataclass
class SessionReport:
    """What one update did, as the QBWC window and log would show it."""

    status: str = "ok"  # ok | none | nvu | busy | error | aborted | client-refused
    ticket: str = ""
    exchanges: int = 0
    calls: list[str] = field(default_factory=list)
    percents: list[int] = field(default_factory=list)
    last_error: str | None = None
    close_message: str | None = None
    authenticate: list[str] = field(default_factory=list)
    #: (method, seconds) of every SOAP call, as the client saw it (HTTP round trip included).
    timings: list[tuple[str, float]] = field(default_factory=list)


class BridgeHttpError(Exception):
    """The bridge answered a call with an HTTP error or a SOAP fault, or did not answer in time."""


class WebConnectorSimulator:
    """Play the Windows Web Connector against `url` for one company user.

    :param url: the AppURL (the bridge's SOAP endpoint, e.g. http://localhost:8443/qbwc).
    :param username: the .qwc UserName; :param password: what the user typed into QBWC.
    :param quickbooks: the company file: an object with `.process(xml) -> xml`, or a callable.
    :param style: "document" (default) or "rpc" (RPC-encoded bodies with xsi:type, `ns1:` prefixes).
    :param noop_wait: seconds to wait after getLastError answered "NoOp" (QBWC waits 5).
    :param owner_id: / :param file_id: the .qwc's OwnerID and FileID (see `from_qwc`): QBWC stores the
        FileID in the company file on first contact and reads it back in the HCP company query.
    :param send_hcp: run the Host/Company/Preferences queries first and send their answers on the
        first sendRequestXML, as QBWC does (off: tests whose QuickBooks faults count documents).
    :param qbxml_version: (major, minor) passed as qbXMLMajorVers/qbXMLMinorVers. None (the default)
        does what QBWC does: the highest version the QuickBooks installation supports, read from the
        HCP HostRet SupportedQBXMLVersion list (or the company file's `supported_versions`), 13.0 when
        the processor says nothing.
    """

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        quickbooks: Any,
        *,
        company_file: str = "",
        version: str = "2.3.0.36",
        qbxml_version: tuple[int, int] | None = None,
        country: str = "US",
        timeout: float = 30.0,
        verify: Any = True,
        style: str = "document",
        faults: Faults | None = None,
        noop_wait: float = 5.0,
        max_exchanges: int = 100_000,
        send_hcp: bool = True,
        owner_id: str | None = None,
        file_id: str | None = None,
    ):
        self.url, self.username, self.password = url, username, password
        self.quickbooks, self.send_hcp = quickbooks, send_hcp
        self.owner_id, self.file_id = owner_id, file_id
        self._process: Callable[[str], str] = (
            quickbooks.process if hasattr(quickbooks, "process") else quickbooks
        )
        self.company_file, self.version, self.qbxml_version, self.country = (
            company_file,
            version,
            qbxml_version,
            country,
        )
        self.timeout, self.verify, self.style = timeout, verify, style
        self.faults = faults or Faults()
        self.noop_wait, self.max_exchanges = noop_wait, max_exchanges
        self._client = None

    # -- wire --------------------------------------------------------------------------------------

    def _envelope(self, method: str, params: list[tuple[str, str]]) -> bytes:
        if self.style == "rpc":
            inner = "".join(f'<ns1:{k} xsi:type="xsd:string">{escape(v)}</ns1:{k}>' for k, v in params)
            return (
                '<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope '
                f'xmlns:SOAP-ENV="{SOAP_NS}" xmlns:ns1="{INTUIT_NS}" '
                'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                'SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">'
                f"<SOAP-ENV:Body><ns1:{method}>{inner}</ns1:{method}></SOAP-ENV:Body></SOAP-ENV:Envelope>"
            ).encode()
        inner = "".join(f"<{k}>{escape(v)}</{k}>" if v else f"<{k} />" for k, v in params)
        return (
            f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_NS}" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
            f'<soap:Body><{method} xmlns="{INTUIT_NS}">{inner}</{method}></soap:Body></soap:Envelope>'
        ).encode()

    def call(self, method: str, params: list[tuple[str, str]] | None = None) -> Any:
        """POST one SOAP call and return its result (str, or list[str] for ArrayOfString)."""
        import httpx
        from lxml import etree

        if self._client is None:
            self._client = httpx.Client(verify=self.verify, timeout=self.timeout)
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{INTUIT_NS}{method}"'}
        try:
            resp = self._client.post(self.url, content=self._envelope(method, params or []), headers=headers)
        except httpx.HTTPError as exc:
            raise BridgeHttpError(f"{method}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code != 200:
            raise BridgeHttpError(f"{method}: HTTP {resp.status_code}: {resp.text[:300]}")
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        root = etree.fromstring(resp.content, parser)
        result = next(
            (el for el in root.iter() if isinstance(el.tag, str) and el.tag.endswith(f"{method}Result")), None
        )
        if result is None:
            raise BridgeHttpError(f"{method}: the reply has no {method}Result element")
        strings = [el for el in result if isinstance(el.tag, str) and etree.QName(el).localname == "string"]
        if method == "authenticate":
            return [(el.text or "") for el in strings]
        return result.text or ""

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- one update --------------------------------------------------------------------------------

    def run_once(self) -> SessionReport:
        report = SessionReport()
        try:
            self._session(report)
        except BridgeHttpError as exc:
            # QBWC1012/1041/1042...: the update stops; nothing is retried inside this run.
            report.status, report.last_error = "error", str(exc)
        finally:
            if report.ticket:
                self._end(report.ticket)
        return report

    def _c(self, report: SessionReport, method: str, params: list[tuple[str, str]] | None = None) -> Any:
        report.calls.append(method)
        started = time.perf_counter()
        try:
            return self.call(method, params)
        finally:
            report.timings.append((method, time.perf_counter() - started))

    def _session(self, r: SessionReport) -> None:
        self._c(r, "serverVersion")
        answer = self._c(r, "clientVersion", [("strVersion", self.version)])
        if answer.startswith("E:"):
            r.status, r.last_error = "client-refused", answer[2:]
            return
        auth = self._c(r, "authenticate", [("strUserName", self.username), ("strPassword", self.password)])
        r.authenticate = auth
        auth = [*auth, "", "", "", ""][:4]
        ticket, company = auth[0], auth[1]
        r.ticket = ticket
        if company in {"nvu", "none", "busy"}:
            r.status = company
            return
        company_file = company or self.company_file
        if self.faults.open_fails:
            self._c(
                r,
                "connectionError",
                [("ticket", ticket), ("hresult", "0x80040408"), ("message", "Could not start QuickBooks.")],
            )
            r.status, r.last_error = "error", "Could not start QuickBooks."
            r.close_message = self._c(r, "closeConnection", [("ticket", ticket)])
            return
        hcp = self._hcp() if self.send_hcp else ""
        major, minor = self.qbxml_version or self._installed_version(hcp)
        while r.exchanges < self.max_exchanges:
            doc = self._c(
                r,
                "sendRequestXML",
                [
                    ("ticket", ticket),
                    ("strHCPResponse", hcp if r.exchanges == 0 else ""),
                    ("strCompanyFileName", company_file),
                    ("qbXMLCountry", self.country),
                    ("qbXMLMajorVers", str(major)),
                    ("qbXMLMinorVers", str(minor)),
                ],
            )
            if doc in {"", "NoOp"}:
                err = self._c(r, "getLastError", [("ticket", ticket)])
                if err == "NoOp":
                    time.sleep(self.noop_wait)
                    continue
                r.last_error = err
                r.close_message = self._c(r, "closeConnection", [("ticket", ticket)])
                return
            r.exchanges += 1
            n = r.exchanges
            if n in self.faults.crash_before_quickbooks_on:
                r.status = "aborted"
                return
            if self.faults.slow_quickbooks:
                time.sleep(self.faults.slow_quickbooks)
            if n in self.faults.hresult_on:
                hresult, message = self.faults.hresult_on[n]
                response = ""
            else:
                hresult = message = ""
                try:
                    response = self._run(doc, ticket)
                except Exception as exc:
                    if hasattr(exc, "response_xml"):  # the simulator's "crash after commit"
                        r.status = "aborted"
                        self._end(ticket)
                        return
                    # The request processor threw (a COM error): QBWC passes the HRESULT on.
                    response = ""
                    hresult = getattr(exc, "hresult", "0x80040402")
                    message = str(getattr(exc, "message", exc))
            if n in self.faults.drop_ack_on:
                r.status = "aborted"  # QuickBooks has applied the document; the bridge never hears of it
                return
            pct = int(
                self._c(
                    r,
                    "receiveResponseXML",
                    [("ticket", ticket), ("response", response), ("hresult", hresult), ("message", message)],
                )
            )
            r.percents.append(pct)
            if pct < 0:
                r.last_error = self._c(r, "getLastError", [("ticket", ticket)])
                r.status = "error"
                r.close_message = self._c(r, "closeConnection", [("ticket", ticket)])
                return
            if pct >= 100:
                r.close_message = self._c(r, "closeConnection", [("ticket", ticket)])
                return
        r.close_message = self._c(r, "closeConnection", [("ticket", ticket)])

    def _run(self, doc: str, ticket: str) -> str:
        """Hand a document to QuickBooks inside this run's session (iterators live there)."""
        if hasattr(self.quickbooks, "end_session"):
            return self._process(doc, session=ticket)
        return self._process(doc)

    def _end(self, ticket: str) -> None:
        """QBWC's EndSession/CloseConnection on the QuickBooks side: session iterators are dropped."""
        if hasattr(self.quickbooks, "end_session"):
            self.quickbooks.end_session(ticket)

    @classmethod
    def from_qwc(cls, qwc: str, password: str, quickbooks: Any, **kwargs: Any) -> WebConnectorSimulator:
        """Add an application from its .qwc file, as a user does, and type its password."""
        from lxml import etree

        root = etree.fromstring(qwc.encode(), etree.XMLParser(resolve_entities=False, no_network=True))
        fields = {el.tag: (el.text or "") for el in root}
        kwargs.setdefault("url", fields["AppURL"])
        url = kwargs.pop("url")
        return cls(
            url,
            fields["UserName"],
            password,
            quickbooks,
            owner_id=fields["OwnerID"],
            file_id=fields["FileID"],
            **kwargs,
        )

    def _installed_version(self, hcp: str) -> tuple[int, int]:
        """The highest qbXML version the QuickBooks installation supports, as QBWC passes it on."""
        from erpsync.sandbox.quickbooks.versions import version_key

        found: list[str] = []
        if hcp:
            from lxml import etree

            try:
                root = etree.fromstring(
                    hcp.encode(), etree.XMLParser(resolve_entities=False, no_network=True)
                )
                found = [el.text or "" for el in root.iter("SupportedQBXMLVersion")]
            except etree.XMLSyntaxError:
                found = []
        if not found:
            found = list(getattr(self.quickbooks, "supported_versions", ()) or ())
        keys = []
        for text in found:
            try:
                keys.append(version_key(text.strip()))
            except ValueError:
                continue  # e.g. "CA3.0" from a Canadian installation: not a U.S. version
        return max(keys) if keys else DEFAULT_QBXML_VERSION

    def _hcp(self) -> str:
        """The Host/Company/Preferences answers QBWC collects itself and sends on the first call."""
        versions = getattr(self.quickbooks, "supported_versions", None)
        hcp_version = (
            versions[-1] if versions else "{}.{}".format(*(self.qbxml_version or DEFAULT_QBXML_VERSION))
        )
        request = HCP_REQUEST.replace("{version}", hcp_version)
        if self.owner_id and self.file_id:
            has = getattr(self.quickbooks, "data_ext", None)
            if (
                hasattr(self.quickbooks, "register_application")
                and has
                and not has(self.owner_id, "FileID", "company")
            ):
                self.quickbooks.register_application(self.owner_id, self.file_id)  # first contact
            request = request.replace(
                '<CompanyQueryRq requestID="hcp2"/>',
                f'<CompanyQueryRq requestID="hcp2"><OwnerID>{escape(self.owner_id)}</OwnerID></CompanyQueryRq>',
            )
        try:
            return self._process(request)
        except Exception:
            log.info("the QuickBooks processor does not answer the HCP queries; sending none")
            return ""

    def run_every(
        self, minutes: float, stop: threading.Event, on_report: Callable[[SessionReport], None] | None = None
    ) -> None:
        """Run an update every `minutes` until `stop` is set (QBWC's Auto-Run)."""
        while not stop.is_set():
            report = self.run_once()
            if on_report:
                on_report(report)
            stop.wait(minutes * 60)


@dataclass
class LocalBridge:
    """A bridge served on a local port (for the sandbox, the demo, tests and the benchmark)."""

    url: str
    store: Any
    settings: Any
    running: Any
    app: Any = None

    def configure(self, **changes: Any) -> None:
        """Change settings of the running bridge (tests: batch sizes, limits)."""
        self.settings = self.settings.model_copy(update=changes)
        self.app.state.bridge.settings = self.app.state.bridge.conversation.settings = self.settings

    @property
    def soap_url(self) -> str:
        return f"{self.url}/qbwc"

    def stop(self) -> None:
        self.running.stop()
        self.store.dispose()


def start_bridge(
    ctx: Any,
    *,
    database_url: str | None = None,
    companies: dict[str, str] | None = None,
    api_token: str | None = None,
    port: int = 0,
    migrate: bool = True,
    wrap: Callable[[Any], Any] | None = None,
    tls: bool = False,
    **settings: Any,
) -> LocalBridge:
    """Migrate a store, register `companies` ({name: password}), and serve the bridge on a thread.

    :param ctx: a `SandboxContext` (data folder for the default SQLite file, host).
    :param wrap: optional ASGI wrapper around the app (fault injection between client and bridge).
    :param tls: serve https with a certificate from the sandbox CA (clients trust `ctx.ca.ca_bundle`).
    """
    from erpsync.qbwc_bridge.app import create_app
    from erpsync.qbwc_bridge.config import load_settings
    from erpsync.qbwc_bridge.crud import add_company, company_by_name
    from erpsync.qbwc_bridge.db import Store
    from erpsync.qbwc_bridge.db import migrate as run_migrations
    from erpsync.sandbox.runner import ServiceSpec, serve_in_thread

    url = database_url or f"sqlite:///{ctx.data_dir / 'qbwc_bridge.db'}"
    if migrate:
        run_migrations(url)
    store = Store(url)
    with store.session() as s:
        for name, password in (companies or {}).items():
            if company_by_name(session=s, name=name) is None:
                add_company(session=s, name=name, password=password)
    api_token = api_token or secrets.token_urlsafe(32)  # never a guessable default, even in a sandbox
    cfg = load_settings(database_url=url, api_token=api_token, environment="development", **settings)
    app = create_app(cfg, store=store)
    running = serve_in_thread(ServiceSpec("qbwc_bridge", wrap(app) if wrap else app, tls=tls), ctx, port=port)
    # The .qwc and WSDL name the URL the bridge really got (port 0 = chosen by the OS).
    cfg = cfg.model_copy(update={"public_url": running.url.replace("127.0.0.1", "localhost")})
    app.state.bridge.settings = app.state.bridge.conversation.settings = cfg
    return LocalBridge(running.url, store, cfg, running, app)
