"""Dutch street lines split into street / number / addition and rejoined normalised (orders flow rule 5)."""

from __future__ import annotations

import pytest

from erpsync.addresses import DutchStreet, normalise_postcode, normalise_street, split_dutch_street


@pytest.mark.parametrize(
    ("typed", "parts"),
    [
        ("Keizersgracht 123", ("Keizersgracht", "123", "")),
        ("Keizersgracht  123a", ("Keizersgracht", "123", "A")),
        ("Keizersgracht 123 - A", ("Keizersgracht", "123", "A")),
        ("Keizersgracht 0123-2", ("Keizersgracht", "123", "2")),
        ("Keizersgracht 123/2", ("Keizersgracht", "123", "2")),
        ("Keizersgracht 123 2", ("Keizersgracht", "123", "2")),
        ("Straat 12 hs", ("Straat", "12", "HS")),
        ("Straat 12-III", ("Straat", "12", "III")),
        ("Straat 12-2hg", ("Straat", "12", "2HG")),
        ("Laan, 5 bis", ("Laan", "5", "BIS")),
        # a number in the street name stays there; a street may start with one
        ("Plein 1940-45 12", ("Plein 1940-45", "12", "")),
        ("2e Hugo de Grootstraat 4", ("2e Hugo de Grootstraat", "4", "")),
        ("Burgemeester Visserpark 7c", ("Burgemeester Visserpark", "7", "C")),
    ],
)
def test_dutch_street_lines_split(typed, parts):
    assert split_dutch_street(typed) == DutchStreet(*parts)


@pytest.mark.parametrize(
    "typed", ["Keizersgracht", "123 Main Street", "Straat 12 abcde", "Straat 0", "", None]
)
def test_lines_without_a_trailing_house_number_do_not_split(typed):
    assert split_dutch_street(typed) is None


def test_only_dutch_addresses_are_rewritten():
    assert normalise_street("  Oudegracht 12bis ", "NL") == "Oudegracht 12 BIS"
    assert normalise_street("Oudegracht 12bis", "nl") == "Oudegracht 12 BIS"
    # elsewhere the text is kept as typed (spacing collapsed): "12bis" may mean something else there
    assert normalise_street("Rue de la Loi  16bis", "BE") == "Rue de la Loi 16bis"
    assert normalise_street("Oudegracht 12bis", None) == "Oudegracht 12bis"
    assert normalise_street("Keizersgracht", "NL") == "Keizersgracht"
    assert normalise_street("   ", "NL") is None and normalise_street(None, "NL") is None


def test_dutch_postcodes_as_postnl_writes_them():
    assert normalise_postcode("3511ab", "NL") == "3511 AB"
    assert normalise_postcode(" 3511  AB", "NL") == "3511 AB"
    assert normalise_postcode("0511 AB", "NL") == "0511 AB"  # not a Dutch postcode: as typed
    assert normalise_postcode("1000", "BE") == "1000"
    assert normalise_postcode("sw1a 1aa", "GB") == "sw1a 1aa"
    assert normalise_postcode(None, "NL") is None
