"""Salesforce record Ids: 15-character case-sensitive and 18-character case-insensitive forms.

The API returns 18-character Ids and accepts both; the last three characters encode which of the
first fifteen are upper case, so an 18-character Id survives case-insensitive systems (Excel, SQL).
"""

from __future__ import annotations

import re

__all__ = ["make_id", "normalize_id", "to_18"]

_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_CHARS = re.compile(r"^[0-9A-Za-z]+$")


def to_18(id15: str) -> str:
    """Append the case-encoding suffix to a 15-character Id."""
    suffix = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        flags = sum(1 << i for i, c in enumerate(chunk) if "A" <= c <= "Z")
        suffix += _SUFFIX[flags]
    return id15 + suffix


def normalize_id(value: object) -> str | None:
    """Return the canonical 18-character Id for a 15- or 18-character Id, or None if it is malformed."""
    if not isinstance(value, str) or len(value) not in (15, 18) or not _ID_CHARS.match(value):
        return None
    if len(value) == 15:
        return to_18(value)
    chars = list(value[:15])
    for n, s in enumerate(value[15:].upper()):
        pos = _SUFFIX.find(s)
        if pos < 0:
            return None
        for i in range(5):
            c = chars[n * 5 + i]
            chars[n * 5 + i] = c.upper() if pos & (1 << i) else c.lower()
    return to_18("".join(chars))


def make_id(prefix: str, counter: int, pod: str = "Dn") -> str:
    """Return the 18-character Id number `counter` of the object with key prefix `prefix`."""
    digits = ""
    n = counter
    while n:
        n, r = divmod(n, 62)
        digits = _BASE62[r] + digits
    return to_18(prefix + pod + digits.rjust(10, "0"))
