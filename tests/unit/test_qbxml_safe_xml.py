"""The hardened parser refuses XXE, entity expansion and oversize input, and locates bad markup."""

from __future__ import annotations

import pytest

from erpsync.errors import FatalSourceError
from erpsync.qbwc_bridge import qbxml as q
from erpsync.qbwc_bridge.qbxml.safe_xml import parse_xml

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE QBXML [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<QBXML><QBXMLMsgsRs><CustomerAddRs statusCode="0" statusMessage="&secret;"/></QBXMLMsgsRs></QBXML>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<QBXML>&lol3;</QBXML>"""

EXTERNAL_DTD = b'<?xml version="1.0"?><!DOCTYPE QBXML SYSTEM "http://evil.example/qbxml.dtd"><QBXML/>'


@pytest.mark.parametrize(
    "payload", [XXE, BILLION_LAUGHS, EXTERNAL_DTD], ids=["xxe", "billion-laughs", "external-dtd"]
)
def test_dtds_and_entities_are_refused_with_a_clear_error(payload):
    with pytest.raises(q.UnsafeXmlError, match="DTD") as caught:
        q.parse_response(payload)
    assert isinstance(caught.value, FatalSourceError)
    assert caught.value.where.startswith("line 2") or caught.value.where.startswith("line 1")
    with pytest.raises(q.UnsafeXmlError):
        q.validate_document(payload)


def test_doctype_hidden_in_lowercase_or_utf16_is_still_refused():
    with pytest.raises(q.UnsafeXmlError):
        parse_xml(b"<!doctype x><x/>")
    utf16 = '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'.encode("utf-16")
    with pytest.raises(q.UnsafeXmlError, match="DTD"):
        parse_xml(utf16)


def test_entity_references_without_a_dtd_are_not_expanded():
    with pytest.raises(q.MalformedXmlError, match="Entity 'secret' not defined"):
        parse_xml(b"<x>&secret;</x>")


def test_oversize_input_is_refused_before_parsing():
    big = b"<QBXML>" + b" " * (2 * 1024 * 1024) + b"</QBXML>"
    with pytest.raises(q.UnsafeXmlError, match="over the 1048576-byte limit"):
        q.parse_response(big, max_bytes=1024 * 1024)
    twenty_mb = b"<x>" + b"a" * (20 * 1024 * 1024) + b"</x>"
    with pytest.raises(q.UnsafeXmlError, match="bytes, over the"):
        parse_xml(twenty_mb)


def test_malformed_xml_names_line_and_column():
    with pytest.raises(q.MalformedXmlError) as caught:
        parse_xml(b"<QBXML>\n  <QBXMLMsgsRs>\n    <Bad attr=x/>\n</QBXML>")
    error = caught.value
    assert (error.line, error.where) == (3, f"line 3, column {error.column}")
    assert "not well-formed" in str(error) and "line 3" in str(error)


def test_non_xml_types_are_refused():
    with pytest.raises(TypeError, match="str or bytes"):
        parse_xml(123)  # type: ignore[arg-type]


def test_declared_encodings_are_honoured_for_bytes_and_ignored_for_text():
    body = '<QBXML><QBXMLMsgsRs><CustomerAddRs statusCode="0" statusSeverity="Info" statusMessage="Café"/></QBXMLMsgsRs></QBXML>'
    latin1 = ('<?xml version="1.0" encoding="ISO-8859-1"?>' + body).encode("iso-8859-1")
    assert q.parse_response(latin1).responses[0].message == "Café"
    as_text = '<?xml version="1.0" encoding="ISO-8859-1" ?>' + body  # already decoded by the SOAP layer
    assert q.parse_response(as_text).responses[0].message == "Café"
