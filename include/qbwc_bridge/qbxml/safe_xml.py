"""Parse untrusted XML (SOAP bodies, qbXML from QuickBooks) without DTDs, entities or network.

Both the bridge and the simulator read XML that arrives over a socket, so every parse goes through
here: a size cap first, then a refusal of any DOCTYPE (XXE and billion-laughs payloads need one),
then lxml with entity resolution, DTD loading, network access and huge trees switched off.
lxml is imported inside the functions so DAG files that import this module stay light.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from erpsync.qbwc_bridge.qbxml.errors import MalformedXmlError, UnsafeXmlError

if TYPE_CHECKING:
    from lxml import etree

__all__ = ["DEFAULT_MAX_BYTES", "parse_xml"]

#: 10 MB: a 100-request qbXML batch with full records is well under 1 MB; anything far bigger is
#: a mistake or an attack. Callers that page large queries can raise it per call.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024

_DOCTYPE = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)
_DECLARED_ENCODING = re.compile(r"""\A(\s*<\?xml[^>]*?\bencoding\s*=\s*)(["'])[^"']*\2""")


def _clean(message: str) -> str:
    """Drop libxml2's trailing ", line L, column C": the error carries them in its own fields."""
    return re.sub(r",? line \d+, column \d+$", "", message or "").strip()


def _parser(*, recover: bool = False) -> etree.XMLParser:
    from lxml import etree

    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=False,
        recover=recover,
    )


def _as_bytes(data: str | bytes) -> bytes:
    if isinstance(data, str):
        # A str is already decoded: whatever its XML declaration claims (QuickBooks may say
        # ISO-8859-1), it is re-encoded as UTF-8 and the declaration is made to say so.
        return _DECLARED_ENCODING.sub(r'\1"utf-8"', data, count=1).encode("utf-8")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"XML must be str or bytes, not {type(data).__name__}")


def check_safe(data: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Return `data` as bytes after the size and DOCTYPE checks, or raise `UnsafeXmlError`."""
    raw = _as_bytes(data)
    if len(raw) > max_bytes:
        raise UnsafeXmlError(f"XML document is {len(raw)} bytes, over the {max_bytes}-byte limit")
    match = _DOCTYPE.search(raw)
    if match:
        line = raw.count(b"\n", 0, match.start()) + 1
        column = match.start() - raw.rfind(b"\n", 0, match.start())
        raise UnsafeXmlError(
            "XML document declares a DTD or entity; DTDs are refused (XXE / entity expansion)",
            where=f"line {line}, column {column}",
        )
    if not raw.strip():
        raise MalformedXmlError("XML document is empty", line=1, column=1)
    return raw


def parse_xml(data: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, recover: bool = False) -> Any:
    """Parse `data` and return the root element (an lxml ``_Element``).

    :param data: the document, str or bytes.
    :param max_bytes: refuse larger documents before parsing.
    :param recover: let libxml2 repair damaged markup instead of failing (used only by the
        lenient response parser, which reports what it repaired); DTDs stay refused either way.
    :raises UnsafeXmlError: DTD/entity declaration or oversize input.
    :raises MalformedXmlError: not well-formed; the message carries line and column.
    """
    from lxml import etree

    raw = check_safe(data, max_bytes=max_bytes)
    try:
        root = etree.fromstring(raw, _parser(recover=recover))
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (None, None)
        raise MalformedXmlError(
            f"XML is not well-formed: {_clean(exc.msg)}", line=line, column=column
        ) from None
    if root is None:
        raise MalformedXmlError("XML document has no root element", line=1, column=1)
    _refuse_doctype(root)
    return root


def _refuse_doctype(root: Any) -> None:
    """Second line of defence: a DOCTYPE the byte scan missed (UTF-16/32 input) is refused here.

    Entities were not resolved and no DTD was loaded, so nothing was expanded; the document is
    refused anyway because a legitimate qbXML or SOAP message never carries a DTD.
    """
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise UnsafeXmlError(
            "XML document declares a DTD; DTDs are refused (XXE / entity expansion)", where="prolog"
        )


def recovered_errors(data: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Any, list[str]]:
    """Parse in recover mode and return (root, ["line L, column C: message", ...]) for the damage."""
    from lxml import etree

    raw = check_safe(data, max_bytes=max_bytes)
    parser = _parser(recover=True)
    try:
        root = etree.fromstring(raw, parser)
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (None, None)
        raise MalformedXmlError(
            f"XML is not well-formed: {_clean(exc.msg)}", line=line, column=column
        ) from None
    if root is not None:
        _refuse_doctype(root)
    problems = [f"line {e.line}, column {e.column}: {e.message.strip()}" for e in parser.error_log]
    if root is None:
        raise MalformedXmlError(
            "XML document has no root element: " + "; ".join(problems[:3]), line=1, column=1
        )
    return root, problems
