"""qbXML versions: which ones a QuickBooks installation speaks, and since when each request and element exists.

A QuickBooks installation speaks every U.S. qbXML version up to the one of its release (QuickBooks
2002 = 1.0/1.1, 2003 = 2.0/2.1, ... 2014 = 13.0, 2018 = 14.0, 2022 = 15.0, 2023/2024 = 16.0) and
lists them in ``HostRet/SupportedQBXMLVersion`` (captured QuickBooks Pro 2014 answer: 1.0 ... 13.0).
The request processor checks the document's ``<?qbxml version="X.Y"?>``:

- a version the installation does not speak: ProcessRequest throws HRESULT 0x80040423 "The version
  of qbXML that was requested is not supported or is unknown." (QBXMLRP2's HRESULT list; Intuit's
  IntuitDeveloper/QBXML_SDK_Samples ``US_CDN_UK_CustomerQuery`` catches that very text as a COM error
  raised by the request, not as a statusCode), and nothing in the document runs;
- a request or element newer than the document's version is not in that version's schema, so the
  document fails validation as a whole: HRESULT 0x80040400, like any other parse error.

Since which version each request and element exists (`first_too_new`, `version_key`) comes from the
qbXML library (``erpsync.qbwc_bridge.qbxml.versions``: one table generated from Intuit's annotated
``qbxmlops130.xml``, the one the bridge checks requests against at enqueue); this module keeps what
is the simulator's own: which versions an installation speaks, its HostRet values and the HRESULT.
"""

from __future__ import annotations

from collections.abc import Iterable

from erpsync.qbwc_bridge.qbxml.versions import first_too_new, version_key

__all__ = [
    "KNOWN_VERSIONS",
    "UNSUPPORTED_VERSION",
    "first_too_new",
    "host_product",
    "supported_versions",
    "version_key",
]

#: The U.S. qbXML versions, oldest first.
KNOWN_VERSIONS = (
    "1.0", "1.1", "2.0", "2.1", "3.0", "4.0", "4.1", "5.0", "6.0", "7.0", "8.0", "9.0", "10.0",
    "11.0", "12.0", "13.0", "14.0", "15.0", "16.0",
)  # fmt: skip

#: HRESULT of ProcessRequest for a ``<?qbxml version?>`` the installation does not speak (see above).
UNSUPPORTED_VERSION = (
    "0x80040423",
    "The version of qbXML that was requested is not supported or is unknown.",
)

#: The newest qbXML version -> (QuickBooks release year, HostRet MajorVersion) of the release that brought it.
_RELEASES = {"14.0": ("2018", 28), "15.0": ("2022", 32), "16.0": ("2024", 34)}


def supported_versions(
    versions: Iterable[str] | None = None, *, max_version: str | None = None
) -> tuple[str, ...]:
    """The versions an installation speaks: `versions` as given (sorted), or every known one up to
    `max_version` (all known ones when both are None)."""
    if versions is not None:
        chosen = sorted(set(versions), key=version_key)
        if not chosen:
            raise ValueError("a QuickBooks installation speaks at least one qbXML version")
    else:
        chosen = list(KNOWN_VERSIONS)
    if max_version is not None:
        top = version_key(max_version)
        chosen = [v for v in chosen if version_key(v) <= top]
        if not chosen:
            raise ValueError(f"no qbXML version at or below {max_version}")
    return tuple(chosen)


def host_product(max_version: str) -> tuple[str, str]:
    """(ProductName, MajorVersion) of the QuickBooks release whose newest qbXML is `max_version`."""
    if max_version in _RELEASES:
        year, major = _RELEASES[max_version]
    else:  # 1.0 (2002) ... 13.0 (2014): one qbXML major version per yearly release
        number = version_key(max_version)[0]
        year, major = str(2001 + number), 11 + number
    return f"QuickBooks Pro {year} (erpsync simulator)", str(major)
