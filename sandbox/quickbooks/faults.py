"""Fault injection for the QuickBooks simulator: what a real company file does on a bad day."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUSY",
    "PARSE_ERROR",
    "PROBE_TEXTS",
    "Faults",
    "RequestProcessorError",
    "ResponseLostError",
    "probe_error",
]

#: HRESULTs the request processor (QBXMLRP2 ProcessRequest) throws; the Web Connector passes them to
#: receiveResponseXML as `hresult`/`message` with an empty response.
PARSE_ERROR = ("0x80040400", "QuickBooks found an error when parsing the provided XML text stream.")
BUSY = ("0x80040401", "Could not access QuickBooks.")


class RequestProcessorError(Exception):
    """The request processor refused the whole document (a COM error, not a qbXML status code)."""

    def __init__(self, hresult: str, message: str, *, detail: str | None = None):
        self.hresult, self.message, self.detail = hresult, message, detail
        super().__init__(f"{hresult}: {message}" + (f" ({detail})" if detail else ""))


class ResponseLostError(Exception):
    """Fault "crash after commit": QuickBooks applied the message set but the answer never came back.

    `response_xml` is what QuickBooks would have answered; tests may look, the bridge must not see it.
    """

    def __init__(self, response_xml: str, message_set_id: str | None):
        self.response_xml, self.message_set_id = response_xml, message_set_id
        super().__init__(f"response lost after commit (message set {message_set_id or 'none'})")


@dataclass
class Faults:
    """Faults to inject; counters count down as they fire. All fields are JSON-friendly.

    :param latency_seconds: sleep before answering each document.
    :param busy: the next N documents fail with HRESULT 0x80040401 (QuickBooks busy / not accessible).
    :param lose_responses: the next N documents are committed, then `ResponseLostError` is raised.
    :param lock_writes: the next N write requests answer 3180 ("failed to acquire the lock").
    :param locked_ids: ListID/TxnID -> N: the next N Mod/Del of that record answer 3175 (in use).
    :param probe_errors: query faults, in order: ``{"code": 1000, "count": 1, "kind": "InvoiceQuery"}``
        makes the next `count` queries of that kind (``kind`` left out: any query but the Web
        Connector's own Host/Company/Preferences queries) answer `code` instead of running.
        See `probe_error` for the texts QuickBooks gives.
    """

    latency_seconds: float = 0.0
    busy: int = 0
    lose_responses: int = 0
    lock_writes: int = 0
    locked_ids: dict[str, int] = field(default_factory=dict)
    probe_errors: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def fail_queries(self, code: int, count: int = 1, kind: str | None = None) -> None:
        """Make the next `count` queries (of `kind`, e.g. ``"CustomerQuery"``) answer status `code`."""
        entry = _probe_entry({"code": code, "count": count, **({"kind": kind} if kind else {})})
        with self._lock:
            self.probe_errors.append(entry)

    def take_probe_error(self, kind: str, *, hcp: bool = False) -> int | None:
        """Consume one shot of the first probe fault matching query `kind`; its status code or None.
        `hcp`: the query is one the Web Connector runs itself, matched only by an explicit kind."""
        with self._lock:
            for entry in self.probe_errors:
                wanted = entry.get("kind")
                if entry["count"] > 0 and (wanted == kind or (wanted is None and not hcp)):
                    entry["count"] -= 1
                    code = entry["code"]
                    self.probe_errors = [e for e in self.probe_errors if e["count"] > 0]
                    return code
            return None

    def take(self, name: str) -> bool:
        """Consume one shot of counter `name`; True if the fault fires."""
        with self._lock:
            left = getattr(self, name)
            if left > 0:
                setattr(self, name, left - 1)
                return True
            return False

    def take_locked(self, object_id: str) -> bool:
        with self._lock:
            left = self.locked_ids.get(object_id, 0)
            if left > 0:
                self.locked_ids[object_id] = left - 1
                return True
            return False

    def update(self, values: dict[str, Any]) -> None:
        """Set faults from a JSON body; unknown names raise ValueError naming them."""
        allowed = {"latency_seconds", "busy", "lose_responses", "lock_writes", "locked_ids", "probe_errors"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(
                f"unknown fault(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(allowed))}"
            )
        with self._lock:
            for name, value in values.items():
                if name == "locked_ids":
                    if not isinstance(value, dict) or not all(isinstance(v, int) for v in value.values()):
                        raise ValueError("locked_ids must map a ListID/TxnID to a count")
                    self.locked_ids = dict(value)
                elif name == "probe_errors":
                    if not isinstance(value, list):
                        raise ValueError("probe_errors must be a list of {code, count, kind} objects")
                    self.probe_errors = [_probe_entry(entry) for entry in value]
                elif name == "latency_seconds":
                    if not isinstance(value, int | float) or value < 0 or value > 60:
                        raise ValueError("latency_seconds must be a number between 0 and 60")
                    self.latency_seconds = float(value)
                else:
                    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                        raise ValueError(f"{name} must be a non-negative integer")
                    setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "latency_seconds": self.latency_seconds,
                "busy": self.busy,
                "lose_responses": self.lose_responses,
                "lock_writes": self.lock_writes,
                "locked_ids": dict(self.locked_ids),
                "probe_errors": [dict(entry) for entry in self.probe_errors],
            }


#: What QuickBooks says with the status codes a probe fault usually injects (Intuit's "Status codes in
#: response messages"; 3175 is the record-in-use text QuickBooks puts after its generic 3175 sentence).
PROBE_TEXTS: dict[int, str] = {
    1: "A query request did not find a matching object in QuickBooks",
    500: "The query request has not been fully completed. There was a required element that could not be "
    "found in QuickBooks.",
    1000: "There has been an internal error when processing the request.",
    1010: "System not available",
    3175: "There was an error when modifying a list, element. QuickBooks error message: This record is in "
    "use by another user.",
    3180: "There was an error when saving a list, element. QuickBooks error message: The list has been "
    "modified by another user and failed to acquire the lock.",
    3260: "Insufficient permission level to perform this action.",
}


def probe_error(code: int) -> tuple[int, str, str]:
    """(statusCode, statusSeverity, statusMessage) QuickBooks answers for status `code`: severity by
    Intuit's ranges (0-499 Info, 500-999 Warn, 1000 and up Error)."""
    severity = "Info" if code < 500 else "Warn" if code < 1000 else "Error"
    return code, severity, PROBE_TEXTS.get(code, f"QuickBooks answered status {code} (simulated fault).")


def _probe_entry(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or set(entry) - {"code", "count", "kind"}:
        raise ValueError("each probe error is {code, count, kind}")
    code, count, kind = entry.get("code"), entry.get("count", 1), entry.get("kind")
    for name, value in (("code", code), ("count", count)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"probe error {name} must be a non-negative integer")
    if kind is not None and (not isinstance(kind, str) or not kind.endswith("Query")):
        raise ValueError("probe error kind must name a query, e.g. CustomerQuery")
    return {"code": code, "count": count, **({"kind": kind} if kind else {})}
