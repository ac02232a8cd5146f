"""Errors of the qbXML library, placed in the package's one hierarchy (`erpsync.errors`).

    RecordError
    └── QbxmlValidationError   a request breaks the schema (order, unknown element, length, type)
    FatalSourceError
    ├── UnsafeXmlError         DTD, entity, oversize: refused before parsing, never retried
    └── MalformedXmlError      not well-formed XML (carries line and column)
        └── QbxmlResponseError a QuickBooks response that cannot be read as qbXML

`QbxmlValidationError` is a record error: one request is bad, the others in the batch go on.
"""

from __future__ import annotations

from typing import Any

from erpsync.errors import FatalSourceError, RecordError

__all__ = ["MalformedXmlError", "QbxmlResponseError", "QbxmlValidationError", "UnsafeXmlError"]

_SHOWN = 60


def shorten(value: Any) -> str:
    """Return `value` as a short printable repr, so an error never dumps a 4 KB memo into a log."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _SHOWN:
        return f"{text[:_SHOWN]!r}... ({len(text)} characters)"
    return repr(text) if isinstance(value, str) else text


class QbxmlValidationError(RecordError):
    """A qbXML request breaks the schema; `field` is the element path, `rule` what it broke.

    :param field: element path such as ``CustomerAdd/BillAddress/City``.
    :param rule: the broken rule in words (``maxLength 31``, ``must come before Phone``...).
    :param value: the offending value, if there is one.
    """

    def __init__(self, field: str, rule: str, value: Any = None, *, where: str | None = None):
        self.field, self.rule, self.value = field, rule, value
        shown = "" if value is None else f" (value {shorten(value)})"
        super().__init__(
            f"{field}: {rule}{shown}",
            where=where,
            details={"field": field, "rule": rule},
        )


class UnsafeXmlError(FatalSourceError):
    """The XML was refused before parsing: a DTD, an entity declaration, or too many bytes."""


class MalformedXmlError(FatalSourceError):
    """The XML is not well-formed; `line` and `column` say where the parser gave up."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None, **kwargs: Any):
        self.line, self.column = line, column
        if line is not None and "where" not in kwargs:
            kwargs["where"] = f"line {line}, column {column}"
        super().__init__(message, **kwargs)


class QbxmlResponseError(MalformedXmlError):
    """A response parsed as XML but is not a qbXML message set (no QBXMLMsgsRs, bad attributes)."""
