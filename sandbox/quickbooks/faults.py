"""Fault injection for the QuickBooks simulator: what a real company file does on a bad day."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BUSY", "PARSE_ERROR", "Faults", "RequestProcessorError", "ResponseLostError"]

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
    """

    latency_seconds: float = 0.0
    busy: int = 0
    lose_responses: int = 0
    lock_writes: int = 0
    locked_ids: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

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
        allowed = {"latency_seconds", "busy", "lose_responses", "lock_writes", "locked_ids"}
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
            }
