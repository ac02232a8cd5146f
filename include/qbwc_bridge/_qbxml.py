"""The few qbXML operations the bridge itself needs: inspect, re-tag, envelope, parse, probe.

The shared library `erpsync.qbwc_bridge.qbxml` validates requests against the schema (used at enqueue
when it is importable). What lives here is bridge-specific: rewriting a stored request's requestID and
iterator attributes, packing stored request strings into one message set, pulling each response's
status, ids and raw XML out of a (leniently parsed) response document, and the probe queries used to
reconcile an unacknowledged write.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from erpsync.errors import FatalSourceError, RecordError

__all__ = [
    "BadRequestXml",
    "HcpInfo",
    "Probe",
    "RsInfo",
    "Verdict",
    "envelope",
    "parse_response_doc",
    "prepare_request",
    "probe_for",
    "probe_verdict",
    "read_hcp",
    "retag",
]

MAX_REQUEST_ID = 50


class BadRequestXml(RecordError):
    """A request given to the jobs API is not one well-formed qbXML `*Rq` element."""


def message_set_id() -> str:
    """A fresh newMessageSetID: 22 random hex characters (QuickBooks allows 23)."""
    return secrets.token_hex(11)


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
        # An error-recovery answer may carry only the schema's ErrorRecovery aggregate instead of the
        # *Ret (ListID | TxnID, EditSequence): the ids settle the request all the same.
        ids = info.rets[0] if info.rets else _child(rs, "ErrorRecovery")
        if ids is not None:
            info.list_id = _first_text(ids, "ListID")
            info.txn_id = _first_text(ids, "TxnID")
            info.edit_sequence = _first_text(ids, "EditSequence")
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
    """A query that tells whether an unacknowledged write landed, and how to recognise the record."""

    query_xml: str
    key: str  # what is matched (for the audit message)
    #: For transactions: the CustomerRef value that must match, and which child holds it (ListID or
    #: FullName, as the request gave it; the Ret's CustomerRef is compared on that same child).
    customer: str | None = None
    customer_by: str = "FullName"
    #: For a Mod: the EditSequence it was sent with, and the Mod aggregate whose fields are compared.
    edit_sequence: str | None = None
    sent: Any = None


@dataclass
class Verdict:
    """What a probe answer proves: `found` (applied: `ret`), `absent` (safe to send again), `stale`
    (a Mod that is not there: resend with `ret`'s EditSequence) or `unknown` (no proof either way)."""

    outcome: str
    ret: Any = None
    status_code: int | None = None
    severity: str | None = None
    reason: str = ""


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
#: Writes whose replay QuickBooks refuses as a duplicate (3180: a value already exists for the object):
#: replayed after a lost answer, and that refusal then means the lost send had applied it.
REPLAY_SAFE_KINDS = ("DataExtAddRq",)
#: Probe answers that prove absence: 1 = the exact-key query matched nothing, 500 = no such object.
ABSENT_CODES = (1, 500)
_MOD_KEYS = {"ListID", "TxnID", "EditSequence"}


def _child(el, name: str):
    return next((c for c in el if _local(c.tag) == name), None)


def _text(el) -> str:
    return (el.text or "").strip() if el is not None else ""


def probe_for(kind: str, request_xml: str, probe_id: str) -> Probe | None:
    """Build the probe query for an unacknowledged write, or None when nothing identifies its result.

    Lists are found by full name (unique in QuickBooks); transactions by RefNumber plus customer,
    since QuickBooks allows duplicate RefNumbers and only the pair is a useful identity; a Mod by its
    ListID/TxnID, to compare the record as it is now with the fields sent.
    """
    root = parse_fragment(request_xml)
    if kind in _MODS:
        query, agg, id_name = _MODS[kind]
        mod = _child(root, agg)
        ident = _child(mod, id_name) if mod is not None else None
        seq = _child(mod, "EditSequence") if mod is not None else None
        if ident is None or seq is None:
            return None
        value = _text(ident)
        return Probe(
            f"<{query} requestID={quoteattr(probe_id)}><{id_name}>{escape(value)}</{id_name}></{query}>",
            key=f"{id_name} {value!r}",
            edit_sequence=_text(seq),
            sent=mod,
        )
    if kind in _LIST_ADDS:
        query, agg = _LIST_ADDS[kind]
        add = _child(root, agg)
        name = _child(add, "Name") if add is not None else None
        if not _text(name):
            return None
        full = _text(name)
        parent = _child(add, "ParentRef")
        if parent is not None:
            parent_name = _child(parent, "FullName")
            if parent_name is None:
                return None  # parent given by ListID only: its full name is unknown here
            full = f"{_text(parent_name)}:{full}"
        return Probe(
            f"<{query} requestID={quoteattr(probe_id)}><FullName>{escape(full)}</FullName></{query}>",
            key=f"name {full!r}",
        )
    if kind in _TXN_ADDS:
        query, agg = _TXN_ADDS[kind]
        add = _child(root, agg)
        ref = _text(_child(add, "RefNumber")) if add is not None else ""
        if not ref:
            return None
        customer, customer_by = None, "FullName"
        cref = _child(add, "CustomerRef")
        if cref is not None:
            # An element with text and no children is false in lxml: test for None, never truthiness.
            node = _child(cref, "ListID")
            if node is not None:
                customer_by = "ListID"
            else:
                node = _child(cref, "FullName")
            customer = _text(node) if node is not None else None
        return Probe(
            f"<{query} requestID={quoteattr(probe_id)}><RefNumber>{escape(ref)}</RefNumber></{query}>",
            key=f"RefNumber {ref!r}" + (f" for customer {customer_by} {customer!r}" if customer else ""),
            customer=customer,
            customer_by=customer_by,
        )
    return None


def probe_match(probe: Probe, rs: RsInfo) -> Any | None:
    """The Ret element in a probe's clean answer that is the unacknowledged Add's record, if any."""
    if rs.status_code != 0:
        return None
    for ret in rs.rets:
        if probe.customer is None:
            return ret
        cref = _child(ret, "CustomerRef")
        if cref is not None and _text(_child(cref, probe.customer_by)) == probe.customer:
            return ret
    return None


def probe_verdict(probe: Probe, rs: RsInfo | None) -> Verdict:
    """Read a probe answer. Only a clean answer proves anything: 0 (then the records decide), 1 or 500.

    Any other status (1000 internal error, 1010, 3260 permissions, a lock message...) or no answer at
    all says nothing about the write: `unknown`, so the request is probed again, never resent on it.
    """
    if rs is None:
        return Verdict("unknown", reason="QuickBooks returned no answer to the probe")
    answer = f"{rs.status_code} {rs.severity}: {rs.message}".strip()
    if rs.status_code in ABSENT_CODES:
        return Verdict("absent", status_code=rs.status_code, severity=rs.severity, reason=answer)
    if rs.status_code != 0 or rs.severity == "Error":
        return Verdict("unknown", status_code=rs.status_code, severity=rs.severity, reason=answer)
    if probe.sent is None:
        ret = probe_match(probe, rs)
        return Verdict("found" if ret is not None else "absent", ret=ret, reason=answer)
    if not rs.rets:
        return Verdict("unknown", status_code=0, severity=rs.severity, reason="status 0 without a record")
    ret = rs.rets[0]
    seq = _text(_child(ret, "EditSequence"))
    if seq == probe.edit_sequence:
        return Verdict("absent", ret=ret, reason=f"EditSequence still {seq!r}: the Mod did not run")
    if mod_applied(probe.sent, ret):
        return Verdict("found", ret=ret, reason=f"EditSequence {probe.edit_sequence!r} -> {seq!r}")
    return Verdict("stale", ret=ret, reason=f"EditSequence {probe.edit_sequence!r} -> {seq!r}")


def _same_value(sent: str, now: str) -> bool:
    if sent == now:
        return True
    if sent.lower() in {"true", "false"} and now.lower() in {"true", "false"}:
        return sent.lower() == now.lower()
    from decimal import Decimal, InvalidOperation

    try:
        return Decimal(sent) == Decimal(now)
    except (InvalidOperation, ValueError):
        return False


def _holds(sent, now, skip: frozenset[str] | set[str] = frozenset()) -> bool:
    """Whether the record element `now` holds every value of the sent element `sent` (but `skip`)."""
    kids = [c for c in sent if isinstance(c.tag, str) and _local(c.tag) not in skip]
    if not kids and not skip:
        return _same_value(_text(sent), _text(now))
    groups: dict[str, list[Any]] = {}
    for c in kids:
        groups.setdefault(_local(c.tag), []).append(c)
    for name, sent_kids in groups.items():
        now_kids = [c for c in now if _local(c.tag) == name] if now is not None else []
        if not now_kids and all(len(c) == 0 and not _text(c) for c in sent_kids):
            continue  # an empty element clears the field: absent from the record means cleared
        if len(now_kids) != len(sent_kids):
            return False  # e.g. a *LineMod has no same-named counterpart in the Ret: not comparable
        if not all(_holds(a, b) for a, b in zip(sent_kids, now_kids, strict=True)):
            return False
    return True


def mod_applied(mod, ret) -> bool:
    """Whether the record `ret` (a probe's *Ret) holds every field the Mod aggregate `mod` set."""
    return _holds(mod, ret, _MOD_KEYS)


def with_edit_sequence(request_xml: str, edit_sequence: str) -> str:
    """The stored Mod request with its EditSequence replaced (to resend it over a newer record)."""
    from lxml import etree

    root = parse_fragment(request_xml)
    mod = next((c for c in root if isinstance(c.tag, str)), None)
    seq = _child(mod, "EditSequence") if mod is not None else None
    if seq is None:
        raise BadRequestXml(f"{_local(root.tag)} has no EditSequence to replace")
    seq.text = edit_sequence
    return etree.tostring(root, encoding="unicode")
