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

`SINCE` (generated, `_version_table.py`) holds the version Intuit's annotated 13.0 sample
(``qbxmlops130.xml``, the ``vX.Y`` in each element's comment) gives for the requests the simulator
answers and their elements; regenerate it with
``python -m erpsync.sandbox.quickbooks.versions DIR`` (DIR = Intuit's qbXML schema folder).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

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

_VERSION_TEXT = re.compile(r"[0-9]{1,2}\.[0-9]")


def version_key(version: str) -> tuple[int, int]:
    """Sort key of a version text such as ``"13.0"``; ValueError when it is not one."""
    if not _VERSION_TEXT.fullmatch(version or ""):
        raise ValueError(f"not a qbXML version: {version!r}")
    major, minor = version.split(".")
    return int(major), int(minor)


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


def first_too_new(request: Any, version: str) -> tuple[str, str] | None:
    """The first element of `request` (an ``*Rq`` lxml element, path from it) newer than `version`,
    with the version it needs; None when every element exists in `version`."""
    table, newest = _table()
    wanted = version_key(version)
    if wanted >= newest:
        return None  # everything in the table exists at this version: no walk per request

    def walk(element: Any, path: str) -> tuple[str, str] | None:
        since = table.get(path)
        if since is not None and version_key(since) > wanted:
            return path, since
        for child in element:
            if isinstance(child.tag, str):
                found = walk(child, f"{path}/{child.tag}")
                if found is not None:
                    return found
        return None

    return walk(request, request.tag)


@functools.cache
def _table() -> tuple[dict[str, str], tuple[int, int]]:
    """The generated table and the newest version in it."""
    from erpsync.sandbox.quickbooks._version_table import SINCE

    return SINCE, max((version_key(v) for v in SINCE.values()), default=(1, 0))


# -- generator ----------------------------------------------------------------------------------------
_ANNOTATED = re.compile(r"\bv([0-9]{1,2}\.[0-9])\b")


def build_table(ops_sample: Path, request_kinds: Sequence[str]) -> dict[str, str]:
    """Read Intuit's annotated ``qbxmlops130.xml``: element path -> version, for `request_kinds`.

    An element's annotation is the comment on its own line (``<!-- opt, v12.0 -->``); elements marked
    ``not in QBD`` are not QuickBooks Desktop's and are skipped (the schema refuses them anyway).
    Paths without an annotation exist since 1.0 and are left out.
    """
    from lxml import etree

    root = etree.parse(
        str(ops_sample), etree.XMLParser(remove_comments=False, resolve_entities=False)
    ).getroot()
    wanted = set(request_kinds)
    table: dict[str, str] = {}

    def note_of(element: Any) -> str:
        for node in (*element, element.getnext()):
            if node is not None and node.tag is etree.Comment and node.sourceline == element.sourceline:
                return node.text or ""
        return ""

    def walk(element: Any, path: str) -> None:
        note = note_of(element)
        if "not in QBD" in note:
            return
        found = _ANNOTATED.search(note)
        if found and found.group(1) != "1.0":
            table[path] = found.group(1)
        for child in element:
            if isinstance(child.tag, str):
                walk(child, f"{path}/{child.tag}")

    seen: set[str] = set()
    for request in root.iter():
        if isinstance(request.tag, str) and request.tag in wanted and request.tag not in seen:
            seen.add(request.tag)
            walk(request, request.tag)
    missing = wanted - seen
    if missing:
        raise ValueError(f"not in {ops_sample.name}: {', '.join(sorted(missing))}")
    return dict(sorted(table.items()))


def render_table(table: dict[str, str]) -> str:
    lines = [
        '"""Since which qbXML version each request the simulator answers, and each of its elements, exists.',
        "",
        "GENERATED from Intuit's annotated qbxmlops130.xml by `python -m erpsync.sandbox.quickbooks.versions DIR`;",
        "do not edit by hand. Paths not listed exist since 1.0. tests/integration/test_quickbooks_sim_versions.py",
        'proves it still matches the sample."""',
        "",
        "# fmt: off",
        "SINCE = {",
        *(f"    {path!r}: {since!r}," for path, since in table.items()),
        "}",
        "",
    ]
    return "\n".join(lines)


def request_kinds() -> list[str]:
    from erpsync.sandbox.quickbooks._handlers import HANDLERS

    return sorted(f"{kind}Rq" for kind in HANDLERS)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m erpsync.sandbox.quickbooks.versions QBXML_SCHEMA_DIR", file=sys.stderr)
        return 2
    table = build_table(Path(args[0]) / "qbxmlops130.xml", request_kinds())
    target = Path(__file__).with_name("_version_table.py")
    target.write_text(render_table(table), encoding="utf-8")
    print(f"wrote {len(table)} paths to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
