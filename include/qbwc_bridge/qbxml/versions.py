"""Since which qbXML version each request of this package, and each of its elements, exists.

The 13.0 XSD says nothing about versions (a 16.0 document using 13.0 elements validates, and so does
an 11.0 one using 12.0 elements), but Intuit's annotated sample ``qbxmlops130.xml`` marks each newer
element with ``vX.Y`` in its comment. A company file whose QuickBooks speaks only 11.0 rejects a whole
document holding a 12.0 element (HRESULT 0x80040400), so the bridge refuses such a request when it is
enqueued (`first_too_new`) instead of letting it break a batch later, and the QuickBooks simulator
(``erpsync.sandbox.quickbooks``) answers such a document with that HRESULT from the same table.

`SINCE` (generated, `_since.py`) covers the requests the library builds and validates (`_xsd_model.KINDS`,
also every request the simulator answers); regenerate it with
``python -m erpsync.qbwc_bridge.qbxml.versions DIR`` (DIR = Intuit's qbXML schema folder). Paths not
listed exist since 1.0; requests of other kinds are not checked.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["first_too_new", "newest", "version_key"]

_VERSION_TEXT = re.compile(r"[0-9]{1,2}\.[0-9]")
_ANNOTATED = re.compile(r"\bv([0-9]{1,2}\.[0-9])\b")


def version_key(version: str) -> tuple[int, int]:
    """Sort key of a version text such as ``"13.0"``; ValueError when it is not one."""
    if not _VERSION_TEXT.fullmatch(version or ""):
        raise ValueError(f"not a qbXML version: {version!r}")
    major, minor = version.split(".")
    return int(major), int(minor)


def newest() -> str:
    """The newest version any listed element needs: a company at or above it takes every request."""
    return _table()[1]


def first_too_new(request: Any, version: str) -> tuple[str, str] | None:
    """The first element of `request` (an ``*Rq`` lxml element) that `version` does not have, as
    (path from the request, version it needs); None when every element exists in `version`."""
    table, top = _table()
    wanted = version_key(version)
    if wanted >= version_key(top):
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
def _table() -> tuple[dict[str, str], str]:
    """The generated table and the newest version in it."""
    from erpsync.qbwc_bridge.qbxml._since import SINCE

    return SINCE, max(SINCE.values(), key=version_key, default="1.0")


# -- generator ----------------------------------------------------------------------------------------


def build_table(ops_sample: Path, request_kinds: Sequence[str]) -> dict[str, str]:
    """Read ``qbxmlops130.xml``: element path -> version for `request_kinds` (``*Rq`` names).

    An element's annotation is the comment on its own line (``<!-- opt, v12.0 -->``); elements marked
    ``not in QBD`` are not QuickBooks Desktop's and are skipped (the schema refuses them anyway).
    """
    from lxml import etree

    parser = etree.XMLParser(remove_comments=False, resolve_entities=False, no_network=True)
    root = etree.parse(str(ops_sample), parser).getroot()
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
        '"""Since which qbXML version each request of the library, and each of its elements, exists.',
        "",
        "GENERATED from Intuit's annotated qbxmlops130.xml by `python -m erpsync.qbwc_bridge.qbxml.versions DIR`;",
        "do not edit by hand. Paths not listed exist since 1.0. tests/unit/test_qbxml_versions.py proves it",
        'still matches the sample."""',
        "",
        "# fmt: off",
        "SINCE = {",
        *(f"    {path!r}: {since!r}," for path, since in table.items()),
        "}",
        "",
    ]
    return "\n".join(lines)


def request_kinds() -> list[str]:
    from erpsync.qbwc_bridge.qbxml._xsd_model import KINDS

    return sorted(f"{kind}Rq" for kind in KINDS)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m erpsync.qbwc_bridge.qbxml.versions QBXML_SCHEMA_DIR", file=sys.stderr)
        return 2
    table = build_table(Path(args[0]) / "qbxmlops130.xml", request_kinds())
    target = Path(__file__).with_name("_since.py")
    target.write_text(render_table(table), encoding="utf-8")
    print(f"wrote {len(table)} paths to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
