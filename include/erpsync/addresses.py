"""Dutch street lines: split into street / house number / addition, and written back normalised.

The APIcenter seed's default field list maps a street *and* a number for both the invoice and the
delivery address. Salesforce keeps one free-text street (``BillingStreet``, ``ShippingStreet``) and
Exact Online has no house-number fields either: its addresses (``crm/Accounts`` and
``crm/Addresses``) carry ``AddressLine1..3`` only (the field lists Exact generates into its clients
name no ``HouseNumber``). So the split is used to write one normalised ``AddressLine1``:

    "street number addition"   e.g. "Keizersgracht  123a" -> "Keizersgracht 123 A"

single spaces, the number without leading zeros, the addition (huisletter or huisnummertoevoeging,
as the BAG names them: ``A``, ``2``, ``III``, ``HS``, ``BIS``, ``2HG``) upper case, separated by a
space, whatever separator the user typed (``123-A``, ``123 a``, ``123/2``). A street line that does
not end in a house number ("Postbus" without a number, a foreign format) is kept as typed, with its
whitespace collapsed. Dutch postcodes are written as PostNL does ("3511 AB"). Only Dutch addresses
(country ``NL``) are split: the same text in another country may put the number first or mean
something else.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["DutchStreet", "normalise_postcode", "normalise_street", "split_dutch_street"]

#: street (must hold a letter), house number, optional addition of one token of 1-4 letters/digits.
_DUTCH = re.compile(
    r"^(?P<street>.*?[^\W\d_].*?)[\s,]+(?P<number>\d{1,5})"
    r"(?:\s*[-/]?\s*(?P<addition>[^\W_]{1,4}))?$"
)


_DUTCH_POSTCODE = re.compile(r"^([1-9]\d{3})\s*([A-Za-z]{2})$")


class DutchStreet(NamedTuple):
    street: str
    number: str
    addition: str

    def line(self) -> str:
        """The normalised street line: "street number addition"."""
        return " ".join(p for p in (self.street, self.number, self.addition) if p)


def split_dutch_street(value: str | None) -> DutchStreet | None:
    """Split a Dutch street line; None when it has no trailing house number.

    The street is the shortest start that still leaves a number and at most one short addition, so a
    number inside the street name stays there ("Plein 1940-45 12" -> "Plein 1940-45", "12") and a
    street that starts with a number keeps it ("2e Hugo de Grootstraat 4").
    """
    if value is None:
        return None
    text = " ".join(str(value).split())
    match = _DUTCH.match(text)
    if match is None:
        return None
    street = match["street"].rstrip(" ,")
    number = str(int(match["number"]))
    addition = (match["addition"] or "").upper()
    if number == "0":
        return None
    return DutchStreet(street, number, addition)


def normalise_street(value: str | None, country: str | None) -> str | None:
    """The street line Exact gets: Dutch lines (country NL) split and rejoined, others as typed."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    if not text:
        return None
    if (country or "").strip().upper() == "NL":
        parts = split_dutch_street(text)
        if parts is not None:
            return parts.line()
    return text


def normalise_postcode(value: str | None, country: str | None) -> str | None:
    """A Dutch postcode as PostNL writes it ("3511ab" -> "3511 AB"); others as typed, spacing collapsed."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    if not text:
        return None
    if (country or "").strip().upper() == "NL" and (m := _DUTCH_POSTCODE.match(text)):
        return f"{m[1]} {m[2].upper()}"
    return text
