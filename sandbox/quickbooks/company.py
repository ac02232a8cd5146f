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
set (per application); so does the simulator by default (``recovery_history=1``; more can be kept to
test a bridge against a lenient QuickBooks). ``recovery_shape`` says how stored answers come back:
``"full"`` replays each ``*Rs`` as it was sent; ``"error_recovery"`` answers as the schema's
``ErrorRecovery`` aggregate allows (qbXML 11.0 and later): each Add/Mod ``*Rs`` keeps its status
attributes and carries only ``<ErrorRecovery>`` (ListID | OwnerID | TxnID, TxnNumber, EditSequence,
ExternalGUID), queries keep only their status (QuickBooks saves the state of what a message set changed,
not query results: Intuit's SDK guide, "error recovery"; no query ``*Rs`` type has an ErrorRecovery
slot), deletes keep their required ``*DelRet`` fields. Below qbXML 11.0 an Add/Mod comes back with its
status only.

qbXML versions (`versions`): the company file speaks `supported_versions` (default every U.S. version
up to 16.0; ``max_version="11.0"`` for a QuickBooks 2012) and says so in ``HostRet``. A document whose
``<?qbxml version?>`` it does not speak is refused whole with HRESULT 0x80040423; a request or element
newer than the document's version is refused whole with 0x80040400 (not in that version's schema). A
document without the processing instruction is read at the newest supported version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
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
    TXN_KINDS,
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
    probe_error,
)
from erpsync.sandbox.quickbooks.versions import (
    UNSUPPORTED_VERSION,
    first_too_new,
    version_key,
)
from erpsync.sandbox.quickbooks.versions import supported_versions as supported_versions_for

__all__ = ["RECOVERY_SHAPES", "CompanyFile"]

#: How stored message-set answers come back (see the module docstring).
RECOVERY_SHAPES = ("full", "error_recovery")
#: The ErrorRecovery aggregate exists since qbXML 11.0 (Intuit's annotated qbxmlops130.xml: "opt, v11.0").
ERROR_RECOVERY_SINCE = "11.0"
#: The queries the Web Connector runs itself (HCP); fault schedules for probes leave them alone.
_HCP_QUERIES = ("HostQuery", "CompanyQuery", "PreferencesQuery")


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
        QuickBooks keeps the most recent one (per application), as does the default; more simulates
        a lenient QuickBooks.
    :param recovery_shape: ``"full"`` (stored ``*Rs`` replayed whole) or ``"error_recovery"`` (Add/Mod
        answers carry only the ``ErrorRecovery`` aggregate, queries only their status).
    :param supported_versions: the qbXML versions this installation speaks (HostRet
        SupportedQBXMLVersion); default every U.S. version up to 16.0.
    :param max_version: keep only the supported versions up to this one (``"11.0"`` = QuickBooks 2012).
    :param company_name: shown by CompanyQuery.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        tz: dt.tzinfo | None = None,
        recovery_history: int = 1,
        recovery_shape: str = "full",
        supported_versions: Sequence[str] | None = None,
        max_version: str | None = None,
        company_name: str = "Sandbox Trading Co",
        iterator_ttl_seconds: float = 600.0,
    ):
        self.path = path
        self.store = Store(path)
        self.clock = clock
        self.tz = tz or dt.timezone(dt.timedelta(hours=-5))
        self._lock = threading.RLock()
        self.recovery_history = 1
        self.recovery_shape = "full"
        self.supported_versions: tuple[str, ...] = ()
        self.configure(
            recovery_history=recovery_history,
            recovery_shape=recovery_shape,
            supported_versions=supported_versions,
            max_version=max_version,
        )
        self.company_name = company_name
        self.iterator_ttl_seconds = iterator_ttl_seconds
        self.faults = Faults()
        self._iterators: dict[str, dict[str, Any]] = {}
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

    @property
    def max_version(self) -> str:
        """The newest qbXML version this installation speaks (what the Web Connector passes on)."""
        return self.supported_versions[-1]

    def configure(
        self,
        *,
        recovery_history: int | None = None,
        recovery_shape: str | None = None,
        supported_versions: Sequence[str] | None = None,
        max_version: str | None = None,
    ) -> dict[str, Any]:
        """Change settings; None leaves a setting as it is. Passing either version argument rebuilds the
        range from both (`supported_versions` None = every U.S. version). ValueError names a bad value."""
        if recovery_history is not None and (
            isinstance(recovery_history, bool)
            or not isinstance(recovery_history, int)
            or recovery_history < 1
        ):
            raise ValueError("recovery_history must be a positive integer")
        if recovery_shape is not None and recovery_shape not in RECOVERY_SHAPES:
            raise ValueError(f"recovery_shape must be one of {', '.join(RECOVERY_SHAPES)}")
        versions = None
        if supported_versions is not None or max_version is not None or not self.supported_versions:
            versions = supported_versions_for(supported_versions, max_version=max_version)
        with self._lock:
            if recovery_history is not None:
                self.recovery_history = recovery_history
            if recovery_shape is not None:
                self.recovery_shape = recovery_shape
            if versions is not None:
                self.supported_versions = versions
        return self.settings()

    def settings(self) -> dict[str, Any]:
        """The settings `configure` takes, as JSON-friendly values."""
        return {
            "recovery_history": self.recovery_history,
            "recovery_shape": self.recovery_shape,
            "supported_versions": list(self.supported_versions),
            "max_version": self.max_version,
        }

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
            msgs, requests, too_long, version = self._read_document(request_xml)
            response, set_id = self._process_set(msgs, requests, too_long, session, version)
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

    def user_edit(self, kind: str, key: str, **fields: Any) -> dict[str, Any]:
        """Change a record as a QuickBooks user does in the desktop window (between two exchanges).

        `key` is the record's ListID/TxnID, or its FullName (lists) / RefNumber (transactions). The
        given ``*Ret`` fields replace the record's (an aggregate such as BillAddress whole; a
        reference such as ``SalesRepRef="BJ"`` by name or ``{"ListID": ...}``), the EditSequence
        changes and TimeModified becomes now, as after any edit in QuickBooks; a renamed list object
        must keep a unique name and its sub-objects follow. Transaction lines are not edited here.
        Returns the record as a query shows it. KeyError: no such record; ValueError: a field the
        ``*Ret`` does not have, a bad reference or a name in use.
        """
        from erpsync.qbwc_bridge.qbxml._check import children
        from erpsync.sandbox.quickbooks._handlers import _rename_children, fit

        if kind not in LIST_KINDS and kind not in TXN_KINDS:
            raise ValueError(
                f"user_edit does not know {kind!r}; known: {', '.join([*LIST_KINDS, *TXN_KINDS])}"
            )
        fixed = {"ListID", "TxnID", "EditSequence", "TimeCreated", "TimeModified", "FullName", "TxnNumber"}
        slots = children(f"{kind}Ret")
        lines = f"{TXN_KINDS[kind]}Ret" if kind in TXN_KINDS else None
        bad = sorted(name for name in fields if name not in slots or name in fixed or name == lines)
        if bad:
            raise ValueError(f"a user cannot set {', '.join(bad)} on a {kind} here")
        with self._lock, self.store.transaction():
            record = self._find_record(kind, key)
            if record is None:
                raise KeyError(f"no {kind} {key!r} in the company file")
            object_id = record.get("ListID") or record["TxnID"]
            try:
                changes = self._resolve_refs(fields, kind)
            except Failure as failure:
                raise ValueError(failure.message) from None
            old_name = list_name(record)
            record.update(changes)
            family = LIST_KINDS.get(kind)
            if family is not None and "Name" in fields:
                parent = record.get("ParentRef")
                record["FullName"] = f"{parent['FullName']}:{fields['Name']}" if parent else fields["Name"]
                clash = self.store.by_name(family, record["FullName"])
                if clash is not None and clash[1]["ListID"] != object_id:
                    raise ValueError(
                        f'The name "{record["FullName"]}" of the list element is already in use.'
                    )
            record["EditSequence"] = self._edit_sequence(record["EditSequence"])
            record["TimeModified"] = self._now_text()
            record = fit(record, f"{kind}Ret")
            name_key = list_name(record).lower() if family is not None else None
            self.store.put(object_id, kind, family or "txn", name_key, record)
            if family is not None and old_name != list_name(record) and "FullName" in record:
                _rename_children(self, kind, family, old_name, record["FullName"])
            return self._with_ext(record)

    def _find_record(self, kind: str, key: str) -> dict[str, Any] | None:
        got = self.store.get(key)
        if got is not None and got[0] == kind:
            return got[1]
        if kind in LIST_KINDS:
            got = self.store.by_name(LIST_KINDS[kind], key)
            return got[1] if got is not None and got[0] == kind else None
        return next((r for _, r in self.store.all((kind,)) if r.get("RefNumber") == key), None)

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
    def _read_document(
        self, request_xml: str | bytes
    ) -> tuple[Any, list[Any], dict[int, tuple[str, str]], str]:
        try:
            root = parse_xml(request_xml)
        except (MalformedXmlError, UnsafeXmlError) as exc:
            self.stats["parse_errors"] += 1
            raise RequestProcessorError(*PARSE_ERROR, detail=str(exc)) from None
        version = self._document_version(root)
        msgs = root.find("QBXMLMsgsRq") if root.tag == "QBXML" else None
        if msgs is None or msgs.get("onError") not in ("stopOnError", "continueOnError", "rollbackOnError"):
            self.stats["parse_errors"] += 1
            raise RequestProcessorError(
                *PARSE_ERROR, detail="QBXML/QBXMLMsgsRq with a valid onError is required"
            )
        requests = [rq for rq in msgs if isinstance(rq.tag, str)]
        too_long: dict[int, tuple[str, str]] = {}
        for index, rq in enumerate(requests):
            newer = first_too_new(rq, version)
            if newer is not None:
                self.stats["parse_errors"] += 1
                raise RequestProcessorError(
                    *PARSE_ERROR, detail=f"{newer[0]} needs qbXML {newer[1]}; the document asks for {version}"
                )
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
        return msgs, requests, too_long, version

    def _document_version(self, root: Any) -> str:
        """The ``<?qbxml version?>`` before the root (the newest supported one when there is none);
        HRESULT 0x80040423 when this installation does not speak it."""
        asked = None
        for node in root.itersiblings(preceding=True):
            if getattr(node, "target", None) == "qbxml":
                asked = (node.get("version") or "").strip()
        if asked is None:
            return self.max_version
        if asked not in self.supported_versions:
            raise RequestProcessorError(
                *UNSUPPORTED_VERSION,
                detail=f"qbXML {asked!r} asked; this QuickBooks speaks {', '.join(self.supported_versions)}",
            )
        return asked

    def _process_set(self, msgs, requests, too_long, session, version) -> tuple[str, str | None]:
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
                    [self._replay(stored[1], version)],
                    {"newMessageSetID": new_id, "messageSetStatusCode": "0"},
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
                prefix.append(self._replay(stored[1], version))
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

    def _replay(self, body: str, version: str) -> str:
        """A stored message set's answers in this file's `recovery_shape`, for a document at `version`."""
        if self.recovery_shape == "full" or not body:
            return body
        from lxml import etree

        holder = etree.fromstring(f"<stored>{body}</stored>")
        with_recovery = version_key(version) >= version_key(ERROR_RECOVERY_SINCE)
        parts = []
        for rs in holder:
            kind = rs.tag[:-2]
            ret = next((c for c in rs if isinstance(c.tag, str) and c.tag.endswith("Ret")), None)
            if ret is not None and kind.endswith(("Add", "Mod")):
                for child in list(rs):
                    rs.remove(child)
                if with_recovery:
                    rs.append(_error_recovery(ret))
            elif kind.endswith("Query"):
                for child in list(rs):
                    rs.remove(child)
            rs.text = None
            rs.tail = "\n"
            parts.append(etree.tostring(rs, encoding="unicode"))
        return "".join(parts)

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
            if kind.endswith("Query"):
                injected = self.faults.take_probe_error(kind, hcp=kind in _HCP_QUERIES)
                if injected is not None:  # fault: this query answers a status instead of running
                    code, severity, message = probe_error(injected)
                    raise Failure(code, message, severity)
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


def _error_recovery(ret: Any) -> Any:
    """The schema's ErrorRecovery aggregate for one stored ``*Ret``: (ListID | OwnerID | TxnID),
    TxnNumber, EditSequence, ExternalGUID, each when the record has it."""
    from lxml import etree

    recovery = etree.Element("ErrorRecovery")
    found = {child.tag: child.text or "" for child in ret if isinstance(child.tag, str)}
    if "DataExtName" in found:  # a DataExt or DataExtDef answer is keyed by its owner ("0" = public)
        found.setdefault("OwnerID", "0")
    key = next((k for k in ("ListID", "TxnID", "OwnerID") if k in found), None)
    for name in (key, "TxnNumber", "EditSequence", "ExternalGUID"):
        if name is not None and name in found:
            etree.SubElement(recovery, name).text = found[name]
    return recovery


class _Rollback(Exception):
    """Raised inside the message-set savepoint to undo every write (rollbackOnError)."""
