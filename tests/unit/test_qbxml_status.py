"""Status codes map to what the bridge should do, checked against reference/qbwc.md section 5.8."""

from __future__ import annotations

import pytest

from erpsync.errors import FatalSourceError, RecordError, RetriableSourceError, StaleRecordError
from erpsync.qbwc_bridge.qbxml import Outcome, QbResponse, error_for, outcome_for


def _rs(code: int, message: str = "", severity: str = "Error") -> QbResponse:
    return QbResponse(
        request_id="r-1", kind="CustomerMod", status_code=code, severity=severity, message=message
    )


@pytest.mark.parametrize(
    ("code", "message", "outcome", "error_class"),
    [
        (0, "Status OK", Outcome.OK, None),
        (1, "A query request did not find a matching object in QuickBooks", Outcome.EMPTY, None),
        (500, "There was a required element that could not be found", Outcome.EMPTY, None),
        (550, "notes not saved", Outcome.OK, None),
        (3200, 'The provided edit sequence "1" is out-of-date.', Outcome.REFRESH_RETRY, StaleRecordError),
        (3175, "This list has been modified by another user.", Outcome.RETRY, RetriableSourceError),
        (3176, "The record is in use by another user", Outcome.RETRY, RetriableSourceError),
        (3180, "internals could not be locked", Outcome.RETRY, RetriableSourceError),
        (3170, 'The string "x" is too long', Outcome.RECORD_ERROR, RecordError),
        (1000, "internal error", Outcome.RETRY, RetriableSourceError),
        (1010, "system not available", Outcome.RETRY, RetriableSourceError),
        (3100, 'The name "A" of the list element is already in use.', Outcome.RECORD_ERROR, RecordError),
        (3140, "invalid reference to QuickBooks Customer", Outcome.RECORD_ERROR, RecordError),
        (3120, "Object cannot be found", Outcome.RECORD_ERROR, RecordError),
        (3070, "string too long", Outcome.RECORD_ERROR, RecordError),
        (3250, "This feature is not enabled", Outcome.FATAL, FatalSourceError),
        (3260, "Insufficient permission level", Outcome.FATAL, FatalSourceError),
        (3261, "personal data", Outcome.FATAL, FatalSourceError),
        (1060, "requestID too long", Outcome.FATAL, FatalSourceError),
        (9999, "unknown specific error", Outcome.RECORD_ERROR, RecordError),
        (1999, "unknown general error", Outcome.FATAL, FatalSourceError),
        (777, "unknown warning", Outcome.OK, None),
    ],
)
def test_status_codes_map_to_outcomes_and_error_classes(code, message, outcome, error_class):
    assert outcome_for(code, message) is outcome
    error = error_for(_rs(code, message))
    if error_class is None:
        assert error is None
    else:
        assert isinstance(error, error_class)
        assert error.where == "requestID r-1" and error.details["status_code"] == code
        assert str(code) in str(error) and message in str(error)


def test_stale_edit_sequence_is_retriable_but_distinct():
    error = error_for(_rs(3200, "out-of-date"))
    assert isinstance(error, StaleRecordError) and isinstance(error, RetriableSourceError)
    assert error.details["outcome"] == "refresh_retry"


def test_document_level_hresults():
    from erpsync.qbwc_bridge.qbxml.status import error_for_hresult

    parse = error_for_hresult(
        "0x80040400", "QuickBooks found an error when parsing the provided XML text stream."
    )
    assert isinstance(parse, FatalSourceError) and "0x80040400" in str(parse) and "parsing" in str(parse)
    assert isinstance(error_for_hresult("0x80040408", "Could not start QuickBooks."), RetriableSourceError)
    assert isinstance(error_for_hresult("0x8004040d"), RetriableSourceError)  # case-insensitive
    assert isinstance(error_for_hresult("0x8004FFFF", "new"), RetriableSourceError)
    assert error_for_hresult("") is None
