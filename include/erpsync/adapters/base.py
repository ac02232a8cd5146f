"""The small interface every system adapter implements, and the call log reports are built from.

An adapter is the only thing the generic operators know about a system. The real ones wrap the
hooks (Salesforce, Exact Online, the QuickBooks bridge); `MemoryAdapter` is the reference
implementation the tests use. Frames in and out are pandas DataFrames, one column per field
(dotted names such as `BillAddress.City` are plain column names).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RESULT_COLUMNS",
    "CallLog",
    "FieldMeta",
    "ObjectMeta",
    "ReadWindow",
    "SystemAdapter",
]

#: Columns of the frame `upsert` returns, one row per input row, in input order.
RESULT_COLUMNS = ["_source_key", "target_id", "action", "error", "error_code", "retriable"]


@dataclass(frozen=True)
class FieldMeta:
    """What the target says about one field (Salesforce describe, Exact metadata, qbXML schema)."""

    name: str
    type: str = "string"
    length: int | None = None
    required: bool = False
    createable: bool = True
    updateable: bool = True
    external_id: bool = False


@dataclass(frozen=True)
class ObjectMeta:
    """An object's fields, the field holding the system's own id, and its modification timestamp."""

    name: str
    fields: dict[str, FieldMeta]
    id_field: str = "Id"
    modified_field: str | None = None

    def field(self, name: str) -> FieldMeta | None:
        return self.fields.get(name)


@dataclass(frozen=True)
class ReadWindow:
    """Half-open window [start, end) on the modification timestamp; None on a side means open."""

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"window start {self.start} is after its end {self.end}")


@dataclass
class CallLog:
    """Every call an adapter made: method, object, rows and seconds (for the run report)."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    @contextmanager
    def timed(self, method: str, obj: str, rows: int = 0) -> Iterator[dict[str, Any]]:
        entry = {"method": method, "object": obj, "rows": rows, "seconds": 0.0}
        started = time.perf_counter()
        try:
            yield entry
        finally:
            entry["seconds"] = round(time.perf_counter() - started, 6)
            self.calls.append(entry)

    def summary(self, slowest: int = 5) -> dict[str, Any]:
        """Return a small JSON summary: total calls, calls per method, the slowest calls."""
        by_method: dict[str, int] = {}
        for c in self.calls:
            by_method[c["method"]] = by_method.get(c["method"], 0) + 1
        top = sorted(self.calls, key=lambda c: c["seconds"], reverse=True)[:slowest]
        return {"total": len(self.calls), "by_method": by_method, "slowest": [dict(c) for c in top]}


@runtime_checkable
class SystemAdapter(Protocol):
    """What the operators need from a system; each method is one or a few API calls."""

    name: str
    call_log: CallLog

    def check_connection(self) -> tuple[bool, str]:
        """Make one cheap real call; return (ok, message)."""

    def describe(self, obj: str) -> ObjectMeta:
        """Return the object's field metadata (types, lengths, required, createable/updateable)."""

    def read(
        self,
        obj: str,
        *,
        window: ReadWindow | None = None,
        columns: list[str] | None = None,
        chunk_rows: int = 50_000,
    ) -> Iterator[pd.DataFrame]:
        """Yield the records modified in `window` (all when None), at most `chunk_rows` per frame."""

    def read_by_keys(
        self,
        obj: str,
        field: str,
        keys: Iterable[Any],
        *,
        columns: list[str] | None = None,
        casefold: bool = False,
    ) -> pd.DataFrame:
        """Return the records whose `field` is one of `keys` (with the id field always included).

        With `casefold`, compare trimmed and case-insensitively (match rules on names and e-mails);
        a system that cannot filter that way returns a superset and the planner compares again.
        """

    def upsert(self, obj: str, rows: pd.DataFrame, *, identity: str) -> pd.DataFrame:
        """Create or update `rows`; return one result per row (columns `RESULT_COLUMNS`).

        A row with a non-empty `_target_id` updates that record; otherwise the record whose
        `identity` field equals the row's value is updated, or a new one created. Per-row refusals
        come back as results with `error`; failures of the whole call raise `erpsync.errors` classes.
        """
