"""The `retry_keys` param (issue 15): a list from the trigger form / REST API, or one text of keys
from a hand-written --conf; anything else is a clear error naming the param."""

from __future__ import annotations

import pytest

from erpsync.errors import ConfigError
from erpsync.flows import sync_params
from erpsync.operators.sync import _as_keys


@pytest.mark.parametrize(
    ("value", "keys"),
    [
        (None, []),
        ("", []),
        ([], []),
        (["A-1", " B-2 ", "", None], ["A-1", "B-2"]),
        ("A-1, B-2\nC-3", ["A-1", "B-2", "C-3"]),
        ([101, 102], ["101", "102"]),
    ],
)
def test_retry_keys_accepts_lists_and_text(value, keys):
    assert _as_keys(value) == keys


@pytest.mark.parametrize("value", [{"key": "A"}, [["A"]], 42])
def test_retry_keys_of_another_shape_is_a_clear_error(value):
    with pytest.raises(ConfigError, match="retry_keys must be a list of source keys"):
        _as_keys(value)


def test_every_flow_offers_retry_keys_in_its_trigger_form():
    param = sync_params()["retry_keys"]
    assert param.value == [] and param.schema["type"] == "array"
