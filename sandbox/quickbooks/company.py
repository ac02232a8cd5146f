"""A simulated QuickBooks Desktop company file that answers qbXML 13.0 the way QuickBooks does.

`CompanyFile.process(request_xml)` is the request processor's ``ProcessRequest``: it validates the
document (XSD when ``ERPSYNC_QBXML_SCHEMA_DIR`` is set, the built-in rules otherwise), refuses a
malformed one as a whole with HRESULT 0x80040400, and answers each request with QuickBooks' status
codes: 3100 duplicate name, 3120 object not found, 3130 bad parent, 3140 bad list reference in a
transaction, 3200 stale EditSequence, 3070 string too long, 500 (warn) when a query names ids that do
not exist, 1 (info) when filters match nothing. Every answer is built in schema order, so it
validates against the XSD like the real one.

Error recovery (Intuit's SDK guide, "error recovery"; messageSetStatusCode values from Intuit's
sample): a message set with ``newMessageSetID`` is stored with its answers, atomically with its
writes. Sending that id again (or old == new) is a status check: the stored answers come back and
nothing runs (9001 if the requests differ). ``oldMessageSetID`` puts the old set's stored answers
first (messageSetStatusCode 0, or 600 when none is stored) and then runs the document's own requests,
typically probe queries. Ids over 24 characters get 9004. Real QuickBooks keeps only the most recent
set per application; ``recovery_history`` sets how many are kept here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from erpsync.qbwc_bridge.qbxml.build import escape_attr, render_element
from erpsync.qbwc_bridge.qbxml.errors import MalformedXmlError, QbxmlValidationError, UnsafeXmlError
from erpsync.qbwc_bridge.qbxml.safe_xml import parse_xml
from erpsync.qbwc_bridge.qbxml.validate import validate_request_element
from erpsync.sandbox.quickbooks._common import (
    FAMILY_LABEL,
    ITEM_KINDS,
    LIST_KINDS,
    MAX_MESSAGE_SET_ID,
    NOT_FOUND_TAIL,
    REF_FAMILIES,
    Failure,
    list_name,
)
from erpsync.sandbox.quickbooks._handlers import HANDLERS
from erpsync.sandbox.quickbooks._store import Store
from erpsync.sandbox.quickbooks.faults import (
    BUSY,
    PARSE_ERROR,
    Faults,
    RequestProcessorError,
    ResponseLostError,
)

__all__ = ["CompanyFile"]


#: (Initial, the person's name) of the sales reps every company file has.
SEED_SALES_REPS = (
    ("ADM", "Administrator"),
    ("AV", "Anna de Vries"),
    ("BJ", "Bram Jansen"),
    ("CB", "Carla Bakker"),
)


class CompanyFile:
    """One QuickBooks company file.

    :param path: SQLite file to keep it in (survives restarts); None keeps it in memory.
    :param clock: returns epoch seconds; tests inject one to control TimeModified and EditSequence.
    :param tz: the company's local time zone (TimeCreated/TimeModified carry its offset).
    :param recovery_history: how many message sets to remember for ``oldMessageSetID``. Real
        QuickBooks keeps the most recent one per application; the default keeps more so a bridge
        with several batches in flight can be tested, ``1`` simulates the strict behaviour.
    :param company_name: shown by CompanyQuery.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        tz: dt.tzinfo | None = None,
        recovery_history: int = 1000,
        company_name: str = "Sandbox Trading Co",
        iterator_ttl_seconds: float = 600.0,
    ):
        self.path = path
        self.store = Store(path)
        self.clock = clock
        self.tz = tz or dt.timezone(dt.timedelta(hours=-5))
        self.recovery_history = recovery_history
        self.company_name = company_name
        self.iterator_ttl_seconds = iterator_ttl_seconds
        self.faults = Faults()
        self._iterators: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self.stats = {"documents": 0, "requests": 0, "parse_errors": 0}
        if self.store.get_meta("created") is None:
            with self.store.transaction():
                self.store.set_meta("created", self._now_text())
                self._seed_lists()
        if self.store.get_meta("sales_reps") is None:  # also for company files made before sales reps
            with self.store.transaction():
                self.store.set_meta("sales_reps", self._now_text())
                self._seed_sales_reps()

    # -- public API ---------------------------------------------------------------------------------
    def close(self) -> None:
        self.store.close()

    def end_session(self, session: str = "default") -> None:
        """Forget the iterators of a Web Connector session (QuickBooks drops them at EndSession)."""
        with self._lock:  # the same lock as process(): inspections never see a half-done message set
            for key in [k for k, v in self._iterators.items() if v["session"] == session]:
                del self._iterators[key]

    def register_application(self, owner_id: str, file_id: str) -> None:
        """Store the Web Connector's private ``FileID`` DataExt on the company, as QBWC does on first run."""
        with self._lock, self.store.transaction():
            if self.store.get_def(owner_id, "FileID") is None:
                self.store.put_def(
                    owner_id, "FileID", self._def_ret(owner_id, "FileID", "STR255TYPE", ["Company"])
                )
            self.store.set_ext(owner_id, "FileID", "company", file_id)

    def process(self, request_xml: str | bytes, *, session: str = "default") -> str:
        """Answer one qbXML request document with a response document, as ProcessRequest does.

        :raises RequestProcessorError: the document is not parseable/valid (0x80040400) or QuickBooks
            is busy (fault); no request in it was executed.
        :raises ResponseLostError: fault "crash after commit": executed and stored, answer lost.
        """
        if self.faults.latency_seconds:
            time.sleep(self.faults.latency_seconds)
        with self._lock:
            self.stats["documents"] += 1
            if self.faults.take("busy"):
                raise RequestProcessorError(*BUSY)
            msgs, requests, too_long = self._read_document(request_xml)
            response, set_id = self._process_set(msgs, requests, too_long, session)
            if self.faults.take("lose_responses"):
                raise ResponseLostError(response, set_id)
            return response

    def reset(self, *, seed: bool = False) -> None:
        """Empty the company file (and reseed the base lists; `seed` adds the demo data)."""
        with self._lock:
            self.store.reset()
            self._iterators.clear()
            with self.store.transaction():
                self.store.set_meta("created", self._now_text())
                self._seed_lists()
        if seed:
            from erpsync.sandbox.quickbooks.seed import seed_company

            seed_company(self)

    # -- inspection (admin API, tests) --------------------------------------------------------------
    def records(self, kind: str) -> list[dict[str, Any]]:
        """Return the stored ``*Ret`` dicts of one kind (``Customer``, ``Item`` = all items, ``Invoice``...)."""
        kinds = ITEM_KINDS if kind == "Item" else (kind,)
        with self._lock:
            return [self._with_ext(data) for _, data in self.store.all(kinds)]

    def count(self, kind: str) -> int:
        with self._lock:
            return self.store.count(ITEM_KINDS if kind == "Item" else (kind,))

    def data_ext(self, owner_id: str, name: str, object_id: str) -> str | None:
        with self._lock:
            return self.store.get_ext(owner_id, name, object_id)

    # -- document level -------------------------------------------------------------------------------
    def _read_document(self, request_xml: str | bytes) -> tuple[Any, list[Any], dict[int, tuple[str, str]]]:

        try:
            root = parse_xml(request_xml)
        except (MalformedXmlError, UnsafeXmlError) as exc:
            self.stats["parse_errors"] += 1
            raise RequestProcessorError(*PARSE_ERROR, detail=str(exc)) from None
        msgs = root.find("QBXMLMsgsRq") if root.tag == "QBXML" else None
        if msgs is None or msgs.get("onError") not in ("stopOnError", "continueOnError", "rollbackOnError"):
            self.stats["parse_errors"] += 1
            raise RequestProcessorError(
                *PARSE_ERROR, detail="QBXML/QBXMLMsgsRq with a valid onError is required"
            )
        requests = [rq for rq in msgs if isinstance(rq.tag, str)]
        too_long: dict[int, tuple[str, str]] = {}
        for index, rq in enumerate(requests):
            try:
                validate_request_element(rq)
            except QbxmlValidationError as exc:
                # QuickBooks parses structure strictly but checks lengths per request (3070).
                if "maxLength" in exc.rule or "maxLength" in str(exc):
                    field = exc.field.rsplit("/", 1)[-1].split("[")[0]
                    too_long[index] = (field, exc.value or "")
                    continue
                self.stats["parse_errors"] += 1
                raise RequestProcessorError(*PARSE_ERROR, detail=str(exc)) from None
        return msgs, requests, too_long

    def _process_set(self, msgs, requests, too_long, session) -> tuple[str, str | None]:
        from lxml import etree

        new_id, old_id = msgs.get("newMessageSetID"), msgs.get("oldMessageSetID")
        for set_id in (new_id, old_id):
            if set_id is not None and len(set_id) > MAX_MESSAGE_SET_ID:
                return self._document([], {"messageSetStatusCode": "9004"}), None
        checksum = hashlib.sha256(b"".join(etree.tostring(rq) for rq in requests)).hexdigest()
        if new_id is not None and (old_id is None or old_id == new_id):
            # A newMessageSetID QuickBooks already holds (or old == new) is a status check: answer
            # from the stored record, execute nothing.
            stored = self.store.get_message_set(new_id)
            if stored is not None:
                if old_id is None and stored[0] != checksum:
                    return self._document(
                        [], {"newMessageSetID": new_id, "messageSetStatusCode": "9001"}
                    ), None
                return self._document(
                    [stored[1]], {"newMessageSetID": new_id, "messageSetStatusCode": "0"}
                ), new_id
            if old_id is not None:
                return self._document([], {"messageSetStatusCode": "9002"}), None
        prefix: list[str] = []
        set_status: str | None = None
        if old_id is not None:
            # Recovery: report the old message set's stored answers first, then run this document's
            # own requests (typically probe queries) as usual.
            stored = self.store.get_message_set(old_id)
            set_status = "0" if stored is not None else "600"
            if stored is not None:
                prefix.append(stored[1])
        mode = msgs.get("onError")
        include_none = msgs.get("responseData") == "includeNone"
        parts: list[str] = []
        with self.store.transaction():
            try:
                with self.store.savepoint("msgset"):
                    failed = False
                    for index, rq in enumerate(requests):
                        self.stats["requests"] += 1
                        part, ok = self._answer(rq, too_long.get(index), session, include_none)
                        parts.append(part)
                        if not ok:
                            failed = True
                            if mode == "stopOnError":
                                break
                    if failed and mode == "rollbackOnError":
                        raise _Rollback
            except _Rollback:
                pass
            body = "".join(parts)
            if new_id is not None:
                self.store.put_message_set(new_id, checksum, body, self.recovery_history)
        attrs = {"newMessageSetID": new_id, "messageSetStatusCode": set_status}
        return self._document([*prefix, body], attrs), new_id or old_id

    def _document(self, bodies: list[str], attrs: dict[str, str]) -> str:
        shown = "".join(f' {k}="{escape_attr(v)}"' for k, v in attrs.items() if v is not None)
        return f'<?xml version="1.0" ?>\n<QBXML>\n<QBXMLMsgsRs{shown}>\n{"".join(bodies)}</QBXMLMsgsRs>\n</QBXML>\n'

    def _answer(
        self, rq: Any, too_long: tuple[str, str] | None, session: str, include_none: bool = False
    ) -> tuple[str, bool]:
        kind = rq.tag[:-2]
        request_id = rq.get("requestID")
        attrs: dict[str, str] = {}
        try:
            if too_long is not None:
                field, value = too_long
                raise Failure(3070, f'The string "{value}" in the field "{field}" is too long.')
            handler = HANDLERS.get(kind)
            if handler is None:
                raise Failure(3250, f"{kind} is not implemented by the QuickBooks simulator.")
            with self.store.savepoint("rq"):
                body, attrs, status = handler(self, rq, session)
            code, severity, message = status
            ok = True
            if include_none:
                body = ""  # responseData="includeNone": statuses only, no *Ret
        except Failure as failure:
            body, code, severity, message, ok = "", failure.code, failure.severity, failure.message, False
        head = f"<{kind}Rs"
        if request_id is not None:
            head += f' requestID="{escape_attr(request_id)}"'
        head += f' statusCode="{code}" statusSeverity="{severity}" statusMessage="{escape_attr(message)}"'
        head += "".join(f' {k}="{escape_attr(str(v))}"' for k, v in attrs.items())
        text = f"{head}>{body}</{kind}Rs>\n" if body else f"{head} />\n"
        return text, ok or severity != "Error"

    # -- helpers ------------------------------------------------------------------------------------------
    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), self.tz).replace(microsecond=0)

    def _now_text(self) -> str:
        return self._now().isoformat()

    def _edit_sequence(self, previous: str | None = None) -> str:
        value = int(self.clock())
        if previous is not None and previous.isdigit() and value <= int(previous):
            value = int(previous) + 1  # EditSequence must change on every Mod, even within a second
        return str(value)

    def _new_list_id(self) -> str:
        return f"{self.store.next_counter('list_id', 0x80000001):08X}-{int(self.clock())}"

    def _new_txn_id(self) -> str:
        return f"{self.store.next_counter('txn_id', 0x100):X}-{int(self.clock())}"

    def _resolve(self, ref: Any, family: str, context: str) -> dict[str, str]:
        """Find a referenced list object by ListID or FullName; 3140 names the missing one."""
        if not isinstance(ref, dict):
            ref = {"FullName": str(ref)}
        found = None
        if ref.get("ListID"):
            got = self.store.get(ref["ListID"])
            if got is not None and LIST_KINDS.get(got[0]) == family:
                found = got[1]
        elif ref.get("FullName"):
            got = self.store.by_name(family, ref["FullName"])
            found = got[1] if got else None
        if found is None:
            label = FAMILY_LABEL.get(family, family)
            shown = ref.get("ListID") or ref.get("FullName") or ""
            raise Failure(
                3140,
                f'There is an invalid reference to QuickBooks {label} "{shown}" in the {context}.  {NOT_FOUND_TAIL}',
            )
        return {"ListID": found["ListID"], "FullName": list_name(found)}

    def _resolve_refs(self, data: dict[str, Any], context: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in data.items():
            if name in REF_FAMILIES:
                out[name] = self._resolve(value, REF_FAMILIES[name], context)
            elif isinstance(value, dict):
                out[name] = self._resolve_refs(value, context)
            else:
                out[name] = value
        return out

    def _with_ext(self, data: dict[str, Any], owner_ids: list[str] | None = None) -> dict[str, Any]:
        object_id = data.get("ListID") or data.get("TxnID")
        if not object_id:
            return data
        owners = owner_ids if owner_ids is not None else [d["OwnerID"] for d in self.store.defs(None)]
        exts = []
        for owner, name, value in self.store.exts_for(object_id, sorted(set(owners)) or ["0"]):
            definition = self.store.get_def(owner, name) or {}
            ret = {
                "DataExtName": name,
                "DataExtType": definition.get("DataExtType", "STR255TYPE"),
                "DataExtValue": value,
            }
            if owner != "0":
                ret = {"OwnerID": owner, **ret}
            exts.append(ret)
        return {**data, "DataExtRet": exts} if exts else data

    def _render(self, ret_key: str, data: dict[str, Any]) -> str:
        # Stored records were checked when they came in; the tests validate answers against the XSD.
        return render_element(ret_key, data, checked=False)

    def _def_ret(self, owner_id: str, name: str, data_type: str, assign_to: list[str]) -> dict[str, Any]:
        return {
            "OwnerID": owner_id,
            "DataExtID": str(self.store.next_counter("data_ext_id", 1)),
            "DataExtName": name,
            "DataExtType": data_type,
            "AssignToObject": assign_to,
            "DataExtListRequire": "false",  # the 13.0 schema requires these three on every DataExtDefRet
            "DataExtTxnRequire": "false",
            "DataExtFormatString": "",
        }

    def _seed_lists(self) -> None:
        """The lists a fresh QuickBooks company already has (accounts, payment methods, tax codes, terms)."""
        accounts = [
            ("Accounts Receivable", "AccountsReceivable"),
            ("Undeposited Funds", "OtherCurrentAsset"),
            ("Inventory Asset", "OtherCurrentAsset"),
            ("Sales", "Income"),
            ("Services", "Income"),
            ("Cost of Goods Sold", "CostOfGoodsSold"),
            ("Purchases", "CostOfGoodsSold"),
        ]
        for name, account_type in accounts:
            self._put_simple("Account", name, {"AccountType": account_type})
        for name in ("Cash", "Check", "Visa", "MasterCard", "American Express"):
            self._put_simple("PaymentMethod", name, {})
        for name in ("Tax", "Non"):
            self._put_simple("SalesTaxCode", name, {})
        for name in ("Net 15", "Net 30", "Due on receipt"):
            self._put_simple("StandardTerms", name, {})

    def _seed_sales_reps(self) -> None:
        """Sales reps: the administrator, and three of the Salesforce sandbox's users (the others
        have none, so the accounts flow's lookup falls back to its default, ADM). A rep is named by
        its Initial; the employee, vendor or other name behind it is not modelled as a list here."""
        for initial, person in SEED_SALES_REPS:
            entity = {"ListID": self._new_list_id(), "FullName": person}
            self._put_simple(
                "SalesRep", initial, {"Initial": initial, "SalesRepEntityRef": entity}, named=False
            )

    def _put_simple(self, kind: str, name: str, extra: dict[str, Any], *, named: bool = True) -> None:
        """Store a list object as QuickBooks has it ready; `named=False` for a kind with no Name element."""
        now = self._now_text()
        data = {
            "ListID": self._new_list_id(),
            "TimeCreated": now,
            "TimeModified": now,
            "EditSequence": self._edit_sequence(),
            **({"Name": name, "FullName": name} if named else {}),
            "IsActive": "true",
            **extra,
        }
        self.store.put(data["ListID"], kind, LIST_KINDS[kind], name.lower(), data)


class _Rollback(Exception):
    """Raised inside the message-set savepoint to undo every write (rollbackOnError)."""
