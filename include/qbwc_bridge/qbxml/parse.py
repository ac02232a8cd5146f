"""Parse QuickBooks qbXML responses leniently into typed results.

Real QuickBooks output does not always follow the schema: element order inside ``*Ret`` varies
between versions (hotglue's captured batches put CompanyName before Sublevel), and the one real
Web Connector startup response we have is not even well-formed (a ``DataExtType`` end tag was
damaged). "Lenient" here means:

- elements are read by name, never by position, and unknown elements are kept as they are;
- when the document is not well-formed, it is cut into its top-level ``*Rs`` elements and each is
  parsed on its own, so one damaged response does not take the others with it. A damaged response
  is repaired by libxml2's recover mode and returned with ``damaged=True`` and the parser's
  ``problems`` (absolute line and column); its status attributes are still trustworthy, its record
  contents may not be. If no ``*Rs`` can be found at all, `MalformedXmlError` is raised.

The hardened parser (no DTD, no entities, no network, size cap) is used throughout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from erpsync.qbwc_bridge.qbxml import _rules
from erpsync.qbwc_bridge.qbxml._check import children
from erpsync.qbwc_bridge.qbxml.errors import MalformedXmlError, QbxmlResponseError
from erpsync.qbwc_bridge.qbxml.safe_xml import DEFAULT_MAX_BYTES, check_safe, parse_xml, recovered_errors
from erpsync.qbwc_bridge.qbxml.status import MALFORMED

__all__ = ["QbResponse", "QbResponseSet", "parse_response", "record_to_dict"]


@dataclass
class QbResponse:
    """One ``*Rs`` element: status, the returned records and the ids a caller usually needs."""

    request_id: str | None
    kind: str
    status_code: int
    severity: str
    message: str
    records: list[dict[str, Any]] = field(default_factory=list)
    list_id: str | None = None
    txn_id: str | None = None
    edit_sequence: str | None = None
    iterator_id: str | None = None
    iterator_remaining_count: int | None = None
    ret_count: int | None = None
    error_recovery: dict[str, Any] | None = None
    xml: str = ""
    damaged: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when QuickBooks reports success or a harmless warning (see `status.outcome_for`)."""
        from erpsync.qbwc_bridge.qbxml.status import Outcome, outcome_for

        return outcome_for(self.status_code, self.message) in (Outcome.OK, Outcome.EMPTY)


@dataclass
class QbResponseSet:
    """A parsed ``QBXMLMsgsRs``: the responses in document order and the message-set facts."""

    responses: list[QbResponse]
    message_set_id: str | None = None
    message_set_status_code: int | None = None
    warnings: list[str] = field(default_factory=list)

    def by_request_id(self) -> dict[str, QbResponse]:
        """Map requestID -> response (responses without a requestID are left out)."""
        return {r.request_id: r for r in self.responses if r.request_id}


_MSGS_START = re.compile(rb"<QBXMLMsgsRs\b([^>]*?)(/?)>")
_RS_CHUNK = re.compile(
    rb"<(?!QBXMLMsgsRs\b)([A-Za-z][A-Za-z0-9]*Rs)\b[^>]*?/>|<(?!QBXMLMsgsRs\b)([A-Za-z][A-Za-z0-9]*Rs)\b[^>]*>.*?</\2\s*>",
    re.DOTALL,
)
_ATTR = re.compile(rb'([A-Za-z]+)\s*=\s*"([^"]*)"')


def parse_response(xml: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> QbResponseSet:
    """Parse a QuickBooks response document (``<QBXML><QBXMLMsgsRs>...``) into a `QbResponseSet`.

    :raises UnsafeXmlError: DTD/entity or oversize input.
    :raises MalformedXmlError: not XML, and no ``*Rs`` element could be salvaged.
    :raises QbxmlResponseError: well-formed XML that holds no ``QBXMLMsgsRs``.
    """
    raw = check_safe(xml, max_bytes=max_bytes)
    try:
        root = parse_xml(raw, max_bytes=max_bytes)
    except MalformedXmlError as exc:
        return _salvage(raw, exc, max_bytes)
    msgs = root if root.tag == "QBXMLMsgsRs" else root.find(".//QBXMLMsgsRs")
    if msgs is None:
        raise QbxmlResponseError(
            f"response has no QBXMLMsgsRs element (root element is {root.tag!r})",
            line=root.sourceline,
            column=1,
        )
    result = QbResponseSet(responses=[], **_set_facts(dict(msgs.attrib)))
    for element in msgs:
        if isinstance(element.tag, str):
            result.responses.append(_response(element))
    return result


def _set_facts(attrs: dict[str, str]) -> dict[str, Any]:
    code = attrs.get("messageSetStatusCode")
    return {
        "message_set_id": attrs.get("newMessageSetID") or attrs.get("oldMessageSetID") or None,
        "message_set_status_code": int(code) if code and code.lstrip("-").isdigit() else None,
    }


def _position(raw: bytes, offset: int) -> tuple[int, int]:
    line = raw.count(b"\n", 0, offset) + 1
    return line, offset - raw.rfind(b"\n", 0, offset)


def _salvage(raw: bytes, original: MalformedXmlError, max_bytes: int) -> QbResponseSet:
    start = _MSGS_START.search(raw)
    if start is None:
        raise original
    attrs = {k.decode(): v.decode("utf-8", "replace") for k, v in _ATTR.findall(start.group(1))}
    result = QbResponseSet(responses=[], **_set_facts(attrs))
    result.warnings.append(f"response is not well-formed ({original}); each *Rs was parsed on its own")
    for chunk in _RS_CHUNK.finditer(raw, start.end()):
        text = chunk.group(0)
        try:
            element = parse_xml(text, max_bytes=max_bytes)
            result.responses.append(_response(element))
            continue
        except MalformedXmlError:
            pass
        element, problems = recovered_errors(text, max_bytes=max_bytes)
        line0, col0 = _position(raw, chunk.start())
        absolute = []
        for problem in problems:
            match = re.match(r"line (\d+), column (\d+): (.*)", problem)
            if match:
                line, col = int(match.group(1)), int(match.group(2))
                col = col + col0 - 1 if line == 1 else col
                absolute.append(f"line {line0 + line - 1}, column {col}: {match.group(3)}")
            else:
                absolute.append(problem)
        response = _response(element)
        response.damaged, response.problems = True, absolute
        result.responses.append(response)
        result.warnings.append(
            f"{response.kind}Rs requestID={response.request_id!r} was damaged: {absolute[0]}"
        )
    if not result.responses:
        raise original
    return result


def _response(element: Any) -> QbResponse:
    from lxml import etree

    tag = element.tag
    kind = tag[:-2] if tag.endswith("Rs") else tag
    attrs = element.attrib
    problems: list[str] = []
    raw_code = attrs.get("statusCode")
    try:
        code = int(raw_code)
    except (TypeError, ValueError):
        code = MALFORMED
        problems.append(f"line {element.sourceline}: {tag} has statusCode {raw_code!r}, not an integer")
    severity = attrs.get("statusSeverity") or ("Error" if code == MALFORMED else "")
    message = attrs.get("statusMessage") or ""
    if code == MALFORMED:
        message = f"malformed response: {problems[0]}" + (f" ({message})" if message else "")
    response = QbResponse(
        request_id=attrs.get("requestID") or None,
        kind=kind,
        status_code=code,
        severity=severity,
        message=message,
        iterator_id=attrs.get("iteratorID") or None,
        iterator_remaining_count=_int(attrs.get("iteratorRemainingCount")),
        ret_count=_int(attrs.get("retCount")),
        xml=etree.tostring(element, encoding="unicode", with_tail=False),
        problems=problems,
    )
    rs_key = tag if tag in _rules.AGGREGATES else None
    loose: dict[str, Any] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue
        child_key = _child_key(rs_key, child.tag)
        if child.tag.endswith("Ret"):
            response.records.append(record_to_dict(child, child_key))
        elif child.tag == "ErrorRecovery":
            response.error_recovery = record_to_dict(child, child_key)
        else:
            loose[child.tag] = child.text or "" if len(child) == 0 else record_to_dict(child, child_key)
    if not response.records and loose:
        response.records.append(loose)  # ListDelRs / TxnDelRs answer with bare fields, not a *Ret
    first = response.records[0] if response.records else (response.error_recovery or {})
    response.list_id = _str(first.get("ListID"))
    response.txn_id = _str(first.get("TxnID"))
    response.edit_sequence = _str(first.get("EditSequence"))
    return response


def _slot(parent_key: str | None, name: str):
    if parent_key is None or parent_key not in _rules.AGGREGATES:
        return None
    return children(parent_key).get(name)


def _child_key(parent_key: str | None, name: str) -> str | None:
    slot = _slot(parent_key, name)
    if slot is not None:
        return slot.key
    return name if name in _rules.AGGREGATES else None


def _repeats(parent_key: str | None, name: str) -> bool:
    slot = _slot(parent_key, name)
    return slot is not None and (slot.max is None or slot.max > 1)


def record_to_dict(element: Any, key: str | None = None) -> dict[str, Any]:
    """Turn a ``*Ret`` element into a dict: leaves as text, aggregates as dicts, repeats as lists.

    An element the schema allows more than once (lines, DataExtRet, SupportedQBXMLVersion) is always
    a list, so callers need not check; an unknown element becomes a list only if it repeats.
    """
    out: dict[str, Any] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue
        child_key = _child_key(key, child.tag)
        value: Any = record_to_dict(child, child_key) if len(child) else (child.text or "")
        if _repeats(key, child.tag):
            out.setdefault(child.tag, []).append(value)
        elif child.tag in out:
            existing = out[child.tag]
            out[child.tag] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            out[child.tag] = value
    return out


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
