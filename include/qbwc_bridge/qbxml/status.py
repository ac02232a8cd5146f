"""What to do about a qbXML status code: one table, not `if`s scattered over the bridge.

Codes and classes follow reference/qbwc.md section 5.8 (Intuit's status-code page, checked against
the open-source bridges): 0-499 info, 500-999 warnings, 1000+ errors. The 317x/3180 family means
"could not add/modify/save" for many reasons; only the lock / in-use / modified-by-another-user texts
are worth a retry, so those codes are classified by message as well.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from erpsync.errors import FatalSourceError, RecordError, RetriableSourceError, StaleRecordError, SyncError

if TYPE_CHECKING:
    from erpsync.qbwc_bridge.qbxml.parse import QbResponse

__all__ = [
    "HRESULT_ACTIONS",
    "MALFORMED",
    "MESSAGE_SET_STATUS",
    "STATUS_ACTIONS",
    "Outcome",
    "QbFatalStatusError",
    "QbRecordRejectedError",
    "QbRetryLaterError",
    "QbStaleEditSequenceError",
    "error_for",
    "error_for_hresult",
    "outcome_for",
]

#: Status code the parser gives a response whose statusCode it could not read.
MALFORMED = -1


class Outcome(enum.Enum):
    OK = "ok"  # done; store ids / EditSequence
    EMPTY = "empty"  # query found nothing (1), or asked-for ids/names do not exist (500)
    RETRY = "retry"  # transient: locked record, QuickBooks busy; send again later
    REFRESH_RETRY = "refresh_retry"  # stale EditSequence: re-read the record, then resend the Mod
    RECORD_ERROR = "record_error"  # this record's data is wrong; quarantine it, go on
    FATAL = "fatal"  # permissions, feature off, our own bug; stop and tell a human


STATUS_ACTIONS: Mapping[int, Outcome] = {
    0: Outcome.OK,
    1: Outcome.EMPTY,  # "A query request did not find a matching object in QuickBooks"
    # 500: a ListID/FullName/TxnID the query named does not exist; QuickBooks then fails the whole
    # query ("...a required element (X) that could not be found"), so for us it means "not there".
    500: Outcome.EMPTY,
    501: Outcome.OK,  # object cannot be represented in this spec version (warning)
    510: Outcome.OK,  # object could not be returned (warning)
    530: Outcome.RECORD_ERROR,  # field not supported by this edition
    531: Outcome.RECORD_ERROR,  # enum value not supported by this edition
    550: Outcome.OK,  # saved, but notes were not
    560: Outcome.OK,  # deprecated field
    570: Outcome.OK,  # could not link to a closed transaction
    600: Outcome.OK,  # no cleared state (error recovery)
    1000: Outcome.RETRY,  # internal error
    1010: Outcome.RETRY,  # system not available
    1030: Outcome.FATAL,  # unsupported message: our bug
    1060: Outcome.FATAL,  # requestID over 50 characters: our bug
    3000: Outcome.RECORD_ERROR,  # invalid object id
    3010: Outcome.RECORD_ERROR,
    3020: Outcome.RECORD_ERROR,
    3030: Outcome.RECORD_ERROR,
    3031: Outcome.RECORD_ERROR,
    3070: Outcome.RECORD_ERROR,  # string too long
    3100: Outcome.RECORD_ERROR,  # name already in use (the caller may link the existing record)
    3120: Outcome.RECORD_ERROR,  # object referenced/specified cannot be found
    3130: Outcome.RECORD_ERROR,  # invalid parent reference
    3140: Outcome.RECORD_ERROR,  # invalid list reference in a transaction
    3170: Outcome.RECORD_ERROR,  # refined by message, see _LOCKED
    3175: Outcome.RECORD_ERROR,
    3176: Outcome.RECORD_ERROR,
    3180: Outcome.RECORD_ERROR,
    3200: Outcome.REFRESH_RETRY,  # EditSequence out of date
    3210: Outcome.RECORD_ERROR,  # business rule (invalid value)
    # 3391: the iteratorID is not valid (expired, or from another Web Connector session): the page
    # cannot be resent as is; start the query again with iterator="Start".
    3391: Outcome.REFRESH_RETRY,
    3250: Outcome.FATAL,  # feature not enabled in this company file / edition
    3260: Outcome.FATAL,  # insufficient permission level
    3261: Outcome.FATAL,  # no access to personal data
    MALFORMED: Outcome.FATAL,
}

_LOCK_CODES = frozenset({3170, 3175, 3176, 3180})
_LOCKED = re.compile(
    r"modified by another user|could not be locked|failed to acquire the lock|is in use|"
    r"being (used|edited) by another user|record is locked|busy",
    re.IGNORECASE,
)


#: messageSetStatusCode on QBXMLMsgsRs when a message set carried newMessageSetID/oldMessageSetID
#: (Intuit's error-recovery sample): 0 means the stored responses follow.
MESSAGE_SET_STATUS: Mapping[int, str] = {
    0: "stored response returned",
    600: "oldMessageSetID matches no stored message set (and no newMessageSetID was given)",
    9001: "newMessageSetID matches the stored id but the requests differ (checksum)",
    9002: "no stored response was found",
    9004: "message set id longer than 24 characters",
    9005: "QuickBooks could not store the response",
}


def outcome_for(status_code: int, message: str = "") -> Outcome:
    """Classify one status code (and, for 317x/3180, its message)."""
    if status_code in _LOCK_CODES and _LOCKED.search(message or ""):
        return Outcome.RETRY
    found = STATUS_ACTIONS.get(status_code)
    if found is not None:
        return found
    if 0 <= status_code < 500:
        return Outcome.OK
    if 500 <= status_code < 1000:
        return Outcome.OK  # unknown warnings: the request was done
    if 1000 <= status_code < 3000:
        return Outcome.FATAL  # general / unsupported-by-QuickBooks errors: a human must look
    return Outcome.RECORD_ERROR  # 3000+: specific to this record


class QbStatusError(SyncError):
    """Mixin data of every status-code error: code, severity, kind and requestID."""

    status_code: int
    request_id: str | None


class QbRetryLaterError(RetriableSourceError):
    """QuickBooks could not do it now (record locked or in use, QuickBooks busy); resend later."""


class QbStaleEditSequenceError(StaleRecordError):
    """The Mod carried an old EditSequence (3200); re-read the record and resend."""


class QbRecordRejectedError(RecordError):
    """QuickBooks refused this record's data (duplicate name, bad reference, too long...)."""


class QbFatalStatusError(FatalSourceError):
    """QuickBooks refused for a reason no retry fixes (permissions, feature off, our bug)."""


_ERROR_CLASS: dict[Outcome, type[SyncError]] = {
    Outcome.RETRY: QbRetryLaterError,
    Outcome.REFRESH_RETRY: QbStaleEditSequenceError,
    Outcome.RECORD_ERROR: QbRecordRejectedError,
    Outcome.FATAL: QbFatalStatusError,
}


def error_for(response: QbResponse) -> SyncError | None:
    """Return the error to raise (or record) for `response`, or None when it succeeded."""
    outcome = outcome_for(response.status_code, response.message)
    cls = _ERROR_CLASS.get(outcome)
    if cls is None:
        return None
    error = cls(
        f"QuickBooks {response.kind} status {response.status_code} ({response.severity}): {response.message}",
        where=f"requestID {response.request_id}" if response.request_id else response.kind,
        details={
            "status_code": response.status_code,
            "severity": response.severity,
            "kind": response.kind,
            "request_id": response.request_id,
            "outcome": outcome.value,
        },
    )
    error.status_code = response.status_code  # type: ignore[attr-defined]
    error.request_id = response.request_id  # type: ignore[attr-defined]
    return error


#: HRESULTs the Web Connector passes to receiveResponseXML when the request processor threw instead of
#: answering (reference/qbwc.md 2.6 and 5.8). The whole document failed; no request in it ran.
HRESULT_ACTIONS: Mapping[str, Outcome] = {
    "0x80040400": Outcome.FATAL,  # not parseable: element order, unknown element, encoding (our bug)
    "0x80040401": Outcome.RETRY,  # could not access QuickBooks
    "0x80040402": Outcome.RETRY,  # unexpected error (see qbsdklog.txt)
    "0x80040408": Outcome.RETRY,  # could not start QuickBooks
    "0x8004040D": Outcome.RETRY,  # ticket parameter invalid (session ended)
}


def error_for_hresult(hresult: str, message: str = "") -> SyncError | None:
    """Return the error for a document-level HRESULT (empty/None hresult means no error).

    Unknown HRESULTs are treated as transient: QuickBooks did not run the document, so sending it
    again later cannot post twice.
    """
    if not hresult:
        return None
    key = hresult.strip()
    key = "0x" + key[2:].upper() if key.lower().startswith("0x") else key
    outcome = HRESULT_ACTIONS.get(key, Outcome.RETRY)
    cls = QbFatalStatusError if outcome is Outcome.FATAL else QbRetryLaterError
    return cls(
        f"QuickBooks refused the whole document (HRESULT {key}): {message or 'no message'}",
        details={"hresult": key, "outcome": outcome.value},
    )
