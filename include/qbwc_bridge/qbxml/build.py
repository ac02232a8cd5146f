"""Build qbXML 13.0 requests in the schema's element order, whatever order the caller uses.

A request is built from a plain dict (nested dicts for aggregates such as ``BillAddress``, lists for
repeated elements such as invoice lines); the builder sorts the children by their schema position,
checks cardinality, alternatives, lengths and simple types against the rules generated from the XSD
(`_rules.py`), escapes the text and, when a schema directory is configured, validates the result
against the real XSD too. A request that would make QuickBooks reject the whole document
(HRESULT 0x80040400) therefore never leaves this module.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from erpsync.qbwc_bridge.qbxml import _rules
from erpsync.qbwc_bridge.qbxml._check import Child, check_content, check_text, children, format_leaf
from erpsync.qbwc_bridge.qbxml.errors import QbxmlValidationError

__all__ = [
    "QbRequest",
    "build_request",
    "envelope",
    "escape_attr",
    "escape_text",
    "kinds",
    "render_element",
]

#: QuickBooks answers statusCode 1060 when a requestID is longer than this.
MAX_REQUEST_ID = 50
#: QuickBooks refuses longer message-set ids with messageSetStatusCode 9004 (Intuit's recovery sample).
MAX_MESSAGE_SET_ID = 24
ON_ERROR = {"continue": "continueOnError", "stop": "stopOnError", "rollback": "rollbackOnError"}
_VERSION = re.compile(r"[0-9]{1,2}\.[0-9]")


@dataclass(frozen=True)
class QbRequest:
    """One qbXML request element, ready to go into `envelope()`.

    :param kind: the message kind without the ``Rq`` suffix, e.g. ``CustomerAdd``.
    :param request_id: the ``requestID`` attribute QuickBooks echoes on the response.
    :param xml: the serialized ``<CustomerAddRq requestID="...">...</CustomerAddRq>`` element.
    """

    kind: str
    request_id: str
    xml: str


def kinds() -> list[str]:
    """Return the request kinds the built-in rules cover (others need the schema directory)."""
    return sorted(k[:-2] for k in _rules.MESSAGES if k.endswith("Rq") and k != "QBXMLMsgsRq")


def escape_text(text: str) -> str:
    # \r would be normalised to \n by any XML parser; keep it as a character reference.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def escape_attr(text: str) -> str:
    return escape_text(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


def _serialize(
    key: str, content: Mapping[str, Any], where: str, out: list[str], checked: bool = True
) -> None:
    if not isinstance(content, Mapping):
        raise QbxmlValidationError(where, "needs a mapping of sub-elements", content)
    slots = children(key)
    items = []
    for name, value in content.items():
        if value is None:
            continue  # None means "leave it out", so callers can pass optional values straight through
        child = slots.get(name)
        if child is None:
            check_content(key, [(name, 1)], where)  # raises the "is not an element of" error
        values = list(value) if isinstance(value, list | tuple) else [value]
        if values:
            items.append((child.index, name, child, values))
    items.sort(key=lambda item: item[0])
    if checked:
        check_content(key, [(name, len(values)) for _, name, _, values in items], where)
    for _, name, child, values in items:
        for position, value in enumerate(values):
            field = f"{where}/{name}" + (f"[{position}]" if len(values) > 1 else "")
            if child.key is not None:
                if isinstance(value, str) and "FullName" in children(child.key):
                    value = {"FullName": value}  # a bare string for a *Ref is its FullName
                out.append(f"<{name}>")
                _serialize(child.key, value, field, out, checked)
                out.append(f"</{name}>")
            elif checked or not isinstance(value, str):
                out.append(f"<{name}>{escape_text(format_leaf(value, child, field))}</{name}>")
            else:
                out.append(f"<{name}>{escape_text(value)}</{name}>")


def render_element(
    name: str, data: Mapping[str, Any], *, key: str | None = None, checked: bool = True
) -> str:
    """Serialize one aggregate (a request part or a ``*Ret``) in schema order, with the same checks.

    :param name: the element name, e.g. ``CustomerRet``.
    :param key: its rules key when it differs from `name` (local aggregates such as ``X/Y``).
    :param checked: False for data that passed these checks on its way in (the simulator's stored
        records): elements still come in schema order and unknown ones are refused, but text is not
        checked again for length and format and the cardinality is not recounted.
    """
    out = [f"<{name}>"]
    _serialize(key or name, data, name, out, checked)
    out.append(f"</{name}>")
    return "".join(out)


def _attributes(rq: str, attrs: Mapping[str, Any], request_id: str) -> str:
    allowed = _rules.MESSAGES[rq]
    parts = [f'requestID="{escape_attr(request_id)}"']
    for name, value in attrs.items():
        if value is None:
            continue
        facts = allowed.get(name)
        if facts is None or name == "requestID":
            raise QbxmlValidationError(
                f"{rq}@{name}", f"is not an attribute of {rq} (allowed: {', '.join(allowed)})"
            )
        text = str(value)
        enum = facts.get("enum")
        if enum is not None and text not in enum:
            raise QbxmlValidationError(f"{rq}@{name}", f"must be one of: {', '.join(enum)}", text)
        parts.append(f'{name}="{escape_attr(text)}"')
    return " ".join(parts)


def _check_request_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not request_id:
        raise QbxmlValidationError("requestID", "must be a non-empty string", request_id)
    if len(request_id) > MAX_REQUEST_ID:
        raise QbxmlValidationError(
            "requestID",
            f"is {len(request_id)} characters; QuickBooks allows {MAX_REQUEST_ID} (status 1060)",
            request_id,
        )
    check_text(request_id, _ATTR_SLOT, "requestID")
    return request_id


#: Attributes (requestID, message-set ids) are plain strings: checked for XML-legal characters only.
_ATTR_SLOT = Child(-1, ("attribute", None, 0, 1, {"base": "STRTYPE"}, ()))


_XSD_LATER: contextvars.ContextVar[bool] = contextvars.ContextVar("qbxml_xsd_later", default=False)


@contextmanager
def xsd_later() -> Iterator[None]:
    """Build without the per-request XSD pass; the caller checks the batch with `validate_requests`.

    The builders' own rules (schema order, lengths, types) still run per request. One XSD pass over
    a few thousand requests costs a fraction of a parse and a pass per request.
    """
    token = _XSD_LATER.set(True)
    try:
        yield
    finally:
        _XSD_LATER.reset(token)


def build_request(
    kind: str,
    fields: Mapping[str, Any],
    *,
    request_id: str | None = None,
    attrs: Mapping[str, Any] | None = None,
    include_ret_elements: Sequence[str] | None = None,
    validate: bool = True,
) -> QbRequest:
    """Build one ``<{kind}Rq>`` element from `fields`, in schema order.

    For Add/Mod kinds `fields` are the children of the ``<{kind}>`` aggregate (``CustomerAdd``);
    for queries and deletes they are the children of the ``Rq`` element itself.

    :param kind: message kind without ``Rq``: ``CustomerAdd``, ``InvoiceQuery``, ``TxnDel``...
    :param fields: element name -> value; nested dicts for aggregates, lists for repeats, None omits.
    :param request_id: echoed on the response; max 50 characters. Generated when None.
    :param attrs: extra Rq attributes (``iterator``, ``iteratorID``, ``metaData``).
    :param include_ret_elements: names for ``IncludeRetElement`` (trim the returned record).
    :param validate: also validate against the XSD when ``ERPSYNC_QBXML_SCHEMA_DIR`` is set.
    :raises QbxmlValidationError: naming the field path, the value and the rule broken.
    """
    rq = f"{kind}Rq"
    if rq not in _rules.AGGREGATES:
        raise QbxmlValidationError(
            kind, f"is not a request kind the builders know (known: {', '.join(kinds())})"
        )
    request_id = _check_request_id(request_id or uuid.uuid4().hex[:16])
    slots = children(rq)
    first = next(iter(slots.values()))
    if first.name == kind and first.key is not None:
        content: dict[str, Any] = {kind: fields}
    else:
        content = dict(fields)
    if include_ret_elements:
        content["IncludeRetElement"] = list(include_ret_elements)
    out = [f"<{rq} {_attributes(rq, attrs or {}, request_id)}>"]
    _serialize(rq, content, rq, out)
    out.append(f"</{rq}>")
    request = QbRequest(kind=kind, request_id=request_id, xml="".join(out))
    if validate and not _XSD_LATER.get():
        from erpsync.qbwc_bridge.qbxml.validate import schema_dir, validate_request

        if schema_dir() is not None:
            validate_request(request.xml)
    return request


def envelope(
    requests: Sequence[QbRequest],
    *,
    on_error: str = "continueOnError",
    new_message_set_id: str | None = None,
    old_message_set_id: str | None = None,
    version: str = "13.0",
) -> str:
    """Wrap requests in one qbXML document (``<?qbxml version?>``, ``QBXML``, ``QBXMLMsgsRq``).

    :param on_error: ``continueOnError`` (each request stands alone, the default for batches),
        ``stopOnError`` or ``rollbackOnError``; ``continue``/``stop``/``rollback`` also work.
    :param new_message_set_id: ask QuickBooks to remember this message set's outcome (recovery);
        at most 24 characters.
    :param old_message_set_id: ask for the stored outcome of an earlier message set.
    :param version: the ``<?qbxml version?>``; never above what the host reports.
    :raises QbxmlValidationError: bad on_error or version, or a requestID used twice.
    """
    mode = ON_ERROR.get(on_error, on_error)
    if mode not in ON_ERROR.values():
        raise QbxmlValidationError(
            "QBXMLMsgsRq@onError", "must be continueOnError, stopOnError or rollbackOnError", on_error
        )
    if not _VERSION.fullmatch(version):
        raise QbxmlValidationError("qbxml version", "must look like 13.0", version)
    attrs = [f'onError="{mode}"']
    for name, value in (("newMessageSetID", new_message_set_id), ("oldMessageSetID", old_message_set_id)):
        if value is not None:
            check_text(str(value), _ATTR_SLOT, f"QBXMLMsgsRq@{name}")
            if not str(value) or len(str(value)) > MAX_MESSAGE_SET_ID:
                raise QbxmlValidationError(
                    f"QBXMLMsgsRq@{name}",
                    f"must be 1-{MAX_MESSAGE_SET_ID} characters; QuickBooks answers messageSetStatusCode 9004 otherwise",
                    value,
                )
            attrs.append(f'{name}="{escape_attr(str(value))}"')
    seen: set[str] = set()
    for request in requests:
        if request.request_id in seen:
            raise QbxmlValidationError(
                "QBXMLMsgsRq",
                "requestID is used twice; responses are matched back by requestID",
                request.request_id,
            )
        seen.add(request.request_id)
    body = "".join(request.xml for request in requests)
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<?qbxml version="{version}"?>\n'
        f"<QBXML><QBXMLMsgsRq {' '.join(attrs)}>{body}</QBXMLMsgsRq></QBXML>"
    )
