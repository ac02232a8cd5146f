"""The few qbXML operations the bridge itself needs: inspect, re-tag, envelope, parse, probe.

The shared library `erpsync.qbwc_bridge.qbxml` validates requests against the schema (used at enqueue
when it is importable). What lives here is bridge-specific: rewriting a stored request's requestID and
iterator attributes, packing stored request strings into one message set, pulling each response's
status, ids and raw XML out of a (leniently parsed) response document, and the probe queries used to
reconcile an unacknowledged write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from erpsync.errors import FatalSourceError, RecordError

__all__ = [
    "BadRequestXml",
    "HcpInfo",
    "Probe",
    "RsInfo",
    "envelope",
    "parse_response_doc",
    "prepare_request",
    "probe_for",
    "read_hcp",
    "retag",
]

MAX_REQUEST_ID = 50


class BadRequestXml(RecordError):
    """A request given to the jobs API is not one well-formed qbXML `*Rq` element."""


def parse_fragment(xml: str | bytes, *, max_bytes: int = 4_000_000, recover: bool = False):
    """Parse untrusted XML with the library's hardened parser; any refusal becomes `BadRequestXml`."""
    from erpsync.qbwc_bridge.qbxml.errors import MalformedXmlError, UnsafeXmlError
    from erpsync.qbwc_bridge.qbxml.safe_xml import parse_xml

    try:
        return parse_xml(xml, max_bytes=max_bytes, recover=recover)
    except (UnsafeXmlError, MalformedXmlError) as exc:
        raise BadRequestXml(str(exc)) from exc


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _request_root(xml: str) -> tuple[str, str | None, Any]:
    root = parse_fragment(xml)
    kind = _local(root.tag)
    if not kind.endswith("Rq") or kind in {"QBXMLMsgsRq", "QBXML"}:
        raise BadRequestXml(f"expected one qbXML request element such as <CustomerAddRq>, got <{kind}>")
    return kind, root.get("requestID"), root


def prepare_request(xml: str, *, request_id: str) -> tuple[str, str | None, str]:
    """Parse one request once for the queue: check it is a request, validate it with the shared qbXML
    library (schema + lengths, field named) when installed, and put our requestID on it.

    Returns (kind, caller requestID, the request as stored: sending is then a string join).
    """
    from lxml import etree

    kind, caller_rid, root = _request_root(xml)
    if caller_rid is not None and len(caller_rid) > MAX_REQUEST_ID:
        raise BadRequestXml(f"requestID is {len(caller_rid)} characters, QuickBooks allows {MAX_REQUEST_ID}")
    try:
        from erpsync.qbwc_bridge.qbxml import validate_request_element
    except ImportError:  # the library is optional for the bridge; well-formedness was checked
        pass
    else:
        validate_request_element(root)
    root.set("requestID", request_id)
    return kind, caller_rid, etree.tostring(root, encoding="unicode")


def retag(xml: str, *, request_id: str, iterator: str | None = None, iterator_id: str | None = None) -> str:
    """Return `xml` with our requestID (and iterator attributes for paging) on its root element."""
    from lxml import etree

    root = parse_fragment(xml)
    root.set("requestID", request_id)
    if iterator:
        root.set("iterator", iterator)
        if iterator_id:
            root.set("iteratorID", iterator_id)
        elif "iteratorID" in root.attrib:
            del root.attrib["iteratorID"]
    return etree.tostring(root, encoding="unicode")


def envelope(
    requests: list[str],
    *,
    on_error: str = "continueOnError",
    new_message_set_id: str | None = None,
    old_message_set_id: str | None = None,
    version: str = "13.0",
) -> str:
    """Pack request element strings into one qbXML document (one Web Connector exchange)."""
    attrs = f"onError={quoteattr(on_error)}"
    if old_message_set_id:
        attrs += f" oldMessageSetID={quoteattr(old_message_set_id)}"
    if new_message_set_id:
        attrs += f" newMessageSetID={quoteattr(new_message_set_id)}"
    return (
        f'<?xml version="1.0" encoding="utf-8"?><?qbxml version="{version}"?>'
        f"<QBXML><QBXMLMsgsRq {attrs}>{''.join(requests)}</QBXMLMsgsRq></QBXML>"
    )


@dataclass
class RsInfo:
    """One `*Rs` element of a response document, reduced to what the bridge stores."""

    request_id: str
    kind: str
    status_code: int
    severity: str
    message: str
    xml: str
    list_id: str | None = None
    txn_id: str | None = None
    edit_sequence: str | None = None
    iterator_id: str | None = None
    remaining: int = 0
    rets: list[Any] = field(default_factory=list)


def _first_text(ret, name: str) -> str | None:
    # qbXML uses no namespaces, so a plain child lookup is exact (and much faster than a scan).
    text = ret.findtext(name)
    return (text or "").strip() or None


def iterator_of(xml: str) -> str | None:
    """The iterator attribute of a stored request ("Start", "Continue", ...) or None."""
    return parse_fragment(xml).get("iterator")


def parse_response_doc(xml: str, *, max_bytes: int = 64_000_000) -> tuple[int | None, list[RsInfo]]:
    """Parse a QBXML response leniently: (messageSetStatusCode, every *Rs in document order).

    Real QuickBooks output does not always follow the schema's element order, so nothing here
    depends on order; elements are found by local name.
    """
    from lxml import etree

    try:
        root = parse_fragment(xml, max_bytes=max_bytes)
    except BadRequestXml as exc:
        raise FatalSourceError(f"QuickBooks response is not usable XML: {exc.message}") from exc
    msgs = (
        root
        if _local(root.tag) == "QBXMLMsgsRs"
        else next((el for el in root.iter() if _local(el.tag) == "QBXMLMsgsRs"), None)
    )
    if msgs is None:
        raise FatalSourceError("QuickBooks response has no QBXMLMsgsRs element")
    set_status = msgs.get("messageSetStatusCode")
    out: list[RsInfo] = []
    for rs in msgs:
        kind = _local(rs.tag)
        if not kind.endswith("Rs"):
            continue
        try:
            code = int(rs.get("statusCode", "0"))
        except ValueError:
            code = 1000
        info = RsInfo(
            request_id=rs.get("requestID", ""),
            kind=kind,
            status_code=code,
            severity=rs.get("statusSeverity", "Info"),
            message=rs.get("statusMessage", ""),
            xml=etree.tostring(rs, encoding="unicode"),
            iterator_id=rs.get("iteratorID"),
        )
        try:
            info.remaining = int(rs.get("iteratorRemainingCount", "0") or 0)
        except ValueError:
            info.remaining = 0
        info.rets = [child for child in rs if _local(child.tag).endswith("Ret")]
        if info.rets:
            first = info.rets[0]
            info.list_id = _first_text(first, "ListID")
            info.txn_id = _first_text(first, "TxnID")
            info.edit_sequence = _first_text(first, "EditSequence")
        out.append(info)
    return (int(set_status) if set_status not in (None, "") else None), out


@dataclass
class HcpInfo:
    """What the Host/Company/Preferences answers QBWC sends on the first sendRequestXML tell us."""

    max_version: tuple[int, int] | None
    #: {OwnerID (upper case): FileID value} of the private FileID DataExts stored on the company.
    file_ids: dict[str, str]


def read_hcp(xml: str) -> HcpInfo:
    """Read the HCP response leniently: real ones carry damaged tags (see the QuickBooks Pro 2014 capture)."""
    root = parse_fragment(xml, max_bytes=8_000_000, recover=True)
    versions = []
    for el in root.iter("SupportedQBXMLVersion"):
        try:
            major, _, minor = (el.text or "").strip().partition(".")
            versions.append((int(major), int(minor or 0)))
        except ValueError:
            continue
    file_ids = {}
    for ext in root.iter("DataExtRet"):
        if (ext.findtext("DataExtName") or "").strip() == "FileID":
            owner = (ext.findtext("OwnerID") or "").strip().upper()
            file_ids[owner] = (ext.findtext("DataExtValue") or "").strip()
    return HcpInfo(max(versions) if versions else None, file_ids)


# --- reconciliation probes -------------------------------------------------------------------------


@dataclass
class Probe:
    """A query that tells whether an unacknowledged Add landed, and how to recognise the record."""

    query_xml: str
    key: str  # what is matched (for the audit message)
    customer: str | None = None  # for transactions: the CustomerRef FullName/ListID that must match
    #: For a Mod: the EditSequence it was sent with; a record that no longer has it was modified.
    edit_sequence: str | None = None


_LIST_ADDS = {
    "CustomerAddRq": ("CustomerQueryRq", "CustomerAdd"),
    "VendorAddRq": ("VendorQueryRq", "VendorAdd"),
    "ItemServiceAddRq": ("ItemQueryRq", "ItemServiceAdd"),
    "ItemNonInventoryAddRq": ("ItemQueryRq", "ItemNonInventoryAdd"),
    "ItemInventoryAddRq": ("ItemQueryRq", "ItemInventoryAdd"),
}
_TXN_ADDS = {
    "InvoiceAddRq": ("InvoiceQueryRq", "InvoiceAdd"),
    "SalesOrderAddRq": ("SalesOrderQueryRq", "SalesOrderAdd"),
    "SalesReceiptAddRq": ("SalesReceiptQueryRq", "SalesReceiptAdd"),
}
_MODS = {
    "CustomerModRq": ("CustomerQueryRq", "CustomerMod", "ListID"),
    "ItemServiceModRq": ("ItemQueryRq", "ItemServiceMod", "ListID"),
    "ItemNonInventoryModRq": ("ItemQueryRq", "ItemNonInventoryMod", "ListID"),
    "ItemInventoryModRq": ("ItemQueryRq", "ItemInventoryMod", "ListID"),
    "InvoiceModRq": ("InvoiceQueryRq", "InvoiceMod", "TxnID"),
    "SalesOrderModRq": ("SalesOrderQueryRq", "SalesOrderMod", "TxnID"),
    "SalesReceiptModRq": ("SalesReceiptQueryRq", "SalesReceiptMod", "TxnID"),
}
#: Requests that change nothing: resent after a loss without asking.
SAFE_TO_RESEND_SUFFIXES = ("QueryRq",)
#: Writes whose replay QuickBooks refuses by itself (a stale EditSequence answers 3200).
EDIT_GUARDED_SUFFIXES = ("ModRq",)


def _child(el, name: str):
    return next((c for c in el if _local(c.tag) == name), None)


def probe_for(kind: str, request_xml: str, probe_id: str) -> Probe | None:
    """Build the probe query for an unacknowledged Add, or None when nothing identifies its result.

    Lists are found by full name (unique in QuickBooks); transactions by RefNumber plus customer,
    since QuickBooks allows duplicate RefNumbers and only the pair is a useful identity.
    """
    root = parse_fragment(request_xml)
    if kind in _MODS:
        query, agg, id_name = _MODS[kind]
        mod = _child(root, agg)
        ident = _child(mod, id_name) if mod is not None else None
        seq = _child(mod, "EditSequence") if mod is not None else None
        if ident is None or seq is None:
            return None
        value = (ident.text or "").strip()
        return Probe(
            f"<{query} requestID={quoteattr(probe_id)}><{id_name}>{escape(value)}</{id_name}></{query}>",
            key=f"{id_name} {value!r} no longer at EditSequence {(seq.text or '').strip()!r}",
            edit_sequence=(seq.text or "").strip(),
        )
    if kind in _LIST_ADDS:
        query, agg = _LIST_ADDS[kind]
        add = _child(root, agg)
        name = _child(add, "Name") if add is not None else None
        if name is None or not (name.text or "").strip():
            return None
        full = name.text.strip()
        parent = _child(add, "ParentRef")
        if parent is not None:
            parent_name = _child(parent, "FullName")
            if parent_name is None:
                return None  # parent given by ListID only: its full name is unknown here
            full = f"{parent_name.text.strip()}:{full}"
        return Probe(
            f"<{query} requestID={quoteattr(probe_id)}><FullName>{escape(full)}</FullName></{query}>",
            key=f"name {full!r}",
        )
    if kind in _TXN_ADDS:
        query, agg = _TXN_ADDS[kind]
        add = _child(root, agg)
        ref = _child(add, "RefNumber") if add is not None else None
        if ref is None or not (ref.text or "").strip():
            return None
        customer = None
        cref = _child(add, "CustomerRef")
        if cref is not None:
            node = _child(cref, "ListID") or _child(cref, "FullName")
            customer = (node.text or "").strip() if node is not None else None
        return Probe(
            f"<{query} requestID={quoteattr(probe_id)}><RefNumber>{escape(ref.text.strip())}</RefNumber>"
            f"</{query}>",
            key=f"RefNumber {ref.text.strip()!r}",
            customer=customer,
        )
    return None


def probe_match(probe: Probe, rs: RsInfo) -> Any | None:
    """The Ret element in a probe's response that is the unacknowledged Add's record, if any."""
    if rs.status_code != 0:
        return None
    for ret in rs.rets:
        if probe.edit_sequence is not None:
            return ret if (ret.findtext("EditSequence") or "").strip() != probe.edit_sequence else None
        if probe.customer is None:
            return ret
        cref = _child(ret, "CustomerRef")
        if cref is None:
            continue
        values = {(c.text or "").strip() for c in cref}
        if probe.customer in values:
            return ret
    return None
