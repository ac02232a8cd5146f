"""Validate qbXML requests against Intuit's XSD, or against the built-in rules when it is absent.

The XSD set is Intuit's and is not shipped: point ``ERPSYNC_QBXML_SCHEMA_DIR`` at a directory
holding ``qbxmlops130.xsd`` (and the files it includes). The compiled schema is cached per process
and directory; compiling it costs about 0.1-0.2 s (measured by tests/unit/test_qbxml_validate.py),
so the first validation pays that once. Without the setting, documents are checked with the order,
cardinality and length rules generated from the same XSD (`_rules.py`).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from erpsync.errors import ConfigError
from erpsync.qbwc_bridge.qbxml import _rules
from erpsync.qbwc_bridge.qbxml._check import check_content, check_text, children
from erpsync.qbwc_bridge.qbxml.errors import QbxmlValidationError
from erpsync.qbwc_bridge.qbxml.safe_xml import parse_xml

__all__ = [
    "ROOT_SCHEMA",
    "SCHEMA_DIR_ENV",
    "load_schema",
    "schema_dir",
    "schema_load_seconds",
    "validate_document",
    "validate_request",
    "validate_request_element",
    "validate_requests",
]

SCHEMA_DIR_ENV = "ERPSYNC_QBXML_SCHEMA_DIR"
_DECLARATION = re.compile(r"\A\s*<\?xml[^>]*\?>\s*")
ROOT_SCHEMA = "qbxmlops130.xsd"

_lock = threading.Lock()
_schemas: dict[Path, Any] = {}
_load_seconds: dict[Path, float] = {}
_by_env: dict[str, Any] = {}


def _env_dir() -> Path | None:
    found = schema_dir()
    return found.resolve() if found else None


def schema_dir() -> Path | None:
    """Return the configured schema directory, or None to use the built-in rules."""
    value = os.environ.get(SCHEMA_DIR_ENV, "").strip()
    return Path(value) if value else None


def load_schema(directory: Path | None = None) -> Any:
    """Compile ``qbxmlops130.xsd`` from `directory` once per process and return the lxml schema.

    :raises ConfigError: the directory or root file is missing, or the schema does not compile.
    """
    if directory is None:
        raw = os.environ.get(SCHEMA_DIR_ENV, "").strip()
        fast = _by_env.get(raw)
        if fast is not None:
            return fast  # hot path: no filesystem call per validation
    from lxml import etree

    directory = (directory or schema_dir() or Path()).resolve()
    with _lock:
        schema = _schemas.get(directory)
        if schema is not None:
            return schema
        root = directory / ROOT_SCHEMA
        if not root.is_file():
            raise ConfigError(
                f"qbXML schema {ROOT_SCHEMA} not found in {directory}; set {SCHEMA_DIR_ENV} to the folder "
                "that holds Intuit's qbXML 13.0 XSD files"
            )
        started = time.perf_counter()
        try:
            # A file path (not a string) so the relative xsd:include of the other files resolves.
            parser = etree.XMLParser(resolve_entities=False, no_network=True)
            schema = etree.XMLSchema(etree.parse(str(root), parser))
        except (etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
            raise ConfigError(f"qbXML schema in {directory} does not compile: {exc}") from None
        _load_seconds[directory] = time.perf_counter() - started
        _schemas[directory] = schema
        if directory == _env_dir():
            _by_env[os.environ.get(SCHEMA_DIR_ENV, "").strip()] = schema
        return schema


def schema_load_seconds(directory: Path | None = None) -> float | None:
    """Seconds the schema took to compile in this process (None if it was not loaded)."""
    directory = (directory or schema_dir() or Path()).resolve()
    return _load_seconds.get(directory)


def validate_document(xml: str | bytes, *, use_schema: bool | None = None) -> None:
    """Validate a whole qbXML request document; raise `QbxmlValidationError` naming the element.

    :param use_schema: force (True) or skip (False) the XSD; default: XSD when configured.
    """
    root = parse_xml(xml)
    if root.tag != "QBXML":
        raise QbxmlValidationError(root.tag, "the document root must be QBXML")
    directory = schema_dir()
    if use_schema is None:
        use_schema = directory is not None
    if use_schema:
        _validate_xsd(root, load_schema(), prefix="")
    else:
        _validate_rules(root)


def validate_request(rq_xml: str | bytes, *, use_schema: bool | None = None) -> None:
    """Validate one ``<...Rq>`` element by wrapping it in a minimal document."""
    if isinstance(rq_xml, bytes):
        rq_xml = rq_xml.decode("utf-8")
    # A request stored on its own may carry an XML declaration; inside the wrapper it would be illegal.
    rq_xml = _DECLARATION.sub("", rq_xml, count=1)
    document = f'<QBXML><QBXMLMsgsRq onError="continueOnError">{rq_xml}</QBXMLMsgsRq></QBXML>'
    root = parse_xml(document)
    requests = list(root[0]) if len(root) else []
    if len(requests) != 1:
        raise QbxmlValidationError("request", f"expected exactly one request element, found {len(requests)}")
    directory = schema_dir()
    if use_schema is None:
        use_schema = directory is not None
    if use_schema:
        # load_schema() without an argument takes the cached schema of the configured folder
        # without resolving its path (a filesystem walk per request otherwise).
        _validate_xsd(root, load_schema(), prefix="/QBXML/QBXMLMsgsRq/")
    else:
        _validate_rules(root)


def validate_requests(requests: Sequence[str]) -> dict[int, QbxmlValidationError]:
    """Validate many ``<...Rq>`` elements against the XSD in one pass; return index -> error.

    A valid batch costs one parse and one schema pass (what `xsd_later` builds rely on); only when
    it fails is each request checked alone, to name the invalid ones and their rule. Without a
    configured schema there is nothing to add to the builders' own rules: returns {}.
    """
    if schema_dir() is None or not requests:
        return {}
    body = "".join(_DECLARATION.sub("", rq, count=1) for rq in requests)
    document = f'<QBXML><QBXMLMsgsRq onError="continueOnError">{body}</QBXMLMsgsRq></QBXML>'
    root = parse_xml(document, max_bytes=max(len(document) * 4, 1024))
    if len(root[0]) == len(requests) and load_schema().validate(root):
        return {}
    errors: dict[int, QbxmlValidationError] = {}
    for n, rq in enumerate(requests):
        try:
            validate_request(rq)
        except QbxmlValidationError as exc:
            errors[n] = exc
    return errors


def validate_request_element(rq: Any, *, use_schema: bool | None = None) -> None:
    """Validate one already parsed ``<...Rq>`` element, as `validate_request` does for its text.

    For callers that hold the parsed element (the bridge's enqueue, the simulator's message sets):
    serializing it and parsing it again cost more than the checks themselves.
    """
    directory = schema_dir()
    if use_schema is None:
        use_schema = directory is not None
    if use_schema:
        import copy

        from lxml import etree

        root = etree.Element("QBXML")
        etree.SubElement(root, "QBXMLMsgsRq", onError="continueOnError").append(copy.deepcopy(rq))
        _validate_xsd(root, load_schema(), prefix="/QBXML/QBXMLMsgsRq/")
    else:
        _check_request(rq)


def _validate_xsd(root: Any, schema: Any, *, prefix: str) -> None:
    if schema.validate(root):
        return
    error = schema.error_log[0]
    path = error.path or ""
    field = path[len(prefix) :] if prefix and path.startswith(prefix) else path.lstrip("/")
    value = None
    if path:
        found = root.getroottree().xpath(path)
        if found and isinstance(found[0].tag, str) and len(found[0]) == 0:
            value = found[0].text
    message = error.message.replace("{http://www.w3.org/2001/XMLSchema}", "xs:")
    raise QbxmlValidationError(field or "document", message, value, where=f"line {error.line}")


def _validate_rules(root: Any) -> None:
    msgs = root[0] if len(root) else None
    if msgs is None or msgs.tag != "QBXMLMsgsRq":
        raise QbxmlValidationError("QBXML", "must contain QBXMLMsgsRq")
    _check_attrs(msgs, "QBXMLMsgsRq", "QBXMLMsgsRq")
    for rq in msgs:
        if isinstance(rq.tag, str):
            _check_request(rq)


def _check_request(rq: Any) -> None:
    if rq.tag not in _rules.AGGREGATES or not rq.tag.endswith("Rq"):
        raise QbxmlValidationError(
            rq.tag,
            f"is not covered by the built-in rules; set {SCHEMA_DIR_ENV} to validate it against the XSD",
        )
    _check_attrs(rq, rq.tag, rq.tag)
    _check_element(rq, rq.tag, rq.tag)


def _check_attrs(element: Any, message: str, where: str) -> None:
    allowed = _rules.MESSAGES[message]
    for name, value in element.attrib.items():
        facts = allowed.get(name)
        if facts is None:
            raise QbxmlValidationError(f"{where}@{name}", f"is not an attribute of {message}")
        enum = facts.get("enum")
        if enum is not None and value not in enum:
            raise QbxmlValidationError(f"{where}@{name}", f"must be one of: {', '.join(enum)}", value)
    for name, facts in allowed.items():
        if facts.get("required") and name not in element.attrib:
            raise QbxmlValidationError(f"{where}@{name}", "is a required attribute")


def _check_element(element: Any, key: str, where: str) -> None:
    used: list[list[Any]] = []
    kids = [kid for kid in element if isinstance(kid.tag, str)]
    for kid in kids:
        if used and used[-1][0] == kid.tag:
            used[-1][1] += 1
        else:
            used.append([kid.tag, 1])
    check_content(key, [(name, count) for name, count in used], where)
    slots = children(key)
    for kid in kids:
        child = slots[kid.tag]
        field = f"{where}/{kid.tag}"
        if child.key is not None:
            if kid.text and kid.text.strip():
                raise QbxmlValidationError(field, "is an aggregate and cannot hold text", kid.text)
            _check_element(kid, child.key, field)
        else:
            if len(kid):
                raise QbxmlValidationError(field, "holds text only, not sub-elements")
            check_text(kid.text or "", child, field)
