"""`QuickBooksAdapter`: QuickBooks Desktop customers as a `SystemAdapter`, through the Web Connector bridge.

Every read and write is a bridge JOB (an ordered list of qbXML requests with an idempotency key) that
the Web Connector picks up on its next poll; the bridge packs a job's requests into exchanges and pages
iterator queries. The adapter waits for each job (long-polling the bridge); the deferrable
`erpsync.operators.quickbooks_upsert.QuickBooksUpsertOperator` runs the same `UpsertProgram` but waits
in the triggerer instead.

What each call costs (N customers in the company file, K keys, R rows to write):

- `describe`: nothing; lengths and createable/updateable come from the qbXML 13.0 rules of the library.
- `read_by_keys` by `ListID`: one job, one CustomerQuery naming all K ListIDs (QuickBooks fails the
  whole query with status 500 when one id is missing; then a second job asks for each id alone).
- `read_by_keys` by `Name`/`FullName`: one job of K CustomerQuery requests, one name each (a missing
  name fails only its own request), packed into ceil(K / batch) exchanges.
- `read_by_keys` by anything else (`dataext.SalesforceId`, `Email`, `CompanyName`...): QuickBooks cannot
  filter by a DataExt value or an e-mail, so one job reads every customer with an iterator
  (`OwnerID 0` returns the public DataExts) = ceil(N / page_size) exchanges, filtered here. The scan is
  kept until this adapter writes, so a plan's repeated calls (match rules, key batches) pay it once.
- `read`: one job, one iterator query over the modified-date window.
- `upsert`: up to four jobs, each ONE job whatever R is: (1) the current EditSequence + DataExts of the
  rows to modify; (2) every CustomerAdd and CustomerMod (plus one DataExtDefQuery the first time);
  (3) only after a stale EditSequence (3200): re-read those rows and resend their Mods once;
  (4) the DataExtAdd/DataExtMod of the identity for the new ListIDs. Step 4 cannot join step 2:
  qbXML 13.0 list Adds have no DataExt child, and a DataExtAdd by FullName in the same message set
  would attach the Salesforce Id to the *other* customer when the Add fails with 3100 (name in use).

Idempotency: each job's key is `<prefix>/<phase>/<hash of the batch and the requests>`. The prefix is
`dag_id/run_id/task_id[/map_index]` inside an Airflow task (or `idempotency_prefix=`), so a retried
task replays the same keys and the bridge returns the jobs it already has: nothing is posted twice,
and because every later request is built from an earlier job's stored answers, the replay rebuilds the
same requests. Queries made for planning and verifying carry a fresh key each time.

`SalesRep` (the mapping's `sales_reps` lookup): one SalesRepQuery for every rep, active or not.
SalesRepRet carries the person only as SalesRepEntityRef's FullName, split into FirstName (the first
word) and LastName (the rest) so a Salesforce owner's names match it.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from erpsync.adapters.base import RESULT_COLUMNS, CallLog, FieldMeta, ObjectMeta, ReadWindow
from erpsync.errors import ConfigError, FatalSourceError, RetriableSourceError, SyncError

if TYPE_CHECKING:
    import pandas as pd

    from erpsync.qbwc_bridge.qbxml import QbRequest

__all__ = [
    "DATAEXT_PREFIX",
    "BridgeJob",
    "QuickBooksAdapter",
    "UpsertProgram",
    "customer_meta",
    "flatten_record",
    "idempotency_prefix",
    "job_key",
    "records_of",
]


#: Columns named `dataext.<Name>` are public (OwnerID 0) custom fields of the record.
DATAEXT_PREFIX = "dataext."
OWNER_ID = "0"
DATAEXT_TYPE = "STR255TYPE"
TERMINAL_STATES = frozenset({"completed", "failed", "cancelled", "expired"})
_SALES_REP_COLUMNS = ["ListID", "Initial", "FirstName", "LastName", "IsActive"]
_TYPES = {
    "BOOLTYPE": "boolean",
    "AMTTYPE": "number",
    "PRICETYPE": "number",
    "QUANTYPE": "number",
    "PERCENTTYPE": "number",
    "INTTYPE": "integer",
    "DATETYPE": "date",
    "DATETIMETYPE": "datetime",
}


# ---- metadata -------------------------------------------------------------------------------------


def _leaf_fields(kind: str) -> dict[str, FieldMeta]:
    """Flatten a qbXML Add/Mod aggregate's single-valued children into dotted field names."""
    from erpsync.qbwc_bridge.qbxml._check import children

    out: dict[str, FieldMeta] = {}
    for name, child in children(kind).items():
        if child.max is None or child.max > 1:
            continue  # repeated aggregates (ShipToAddress, Contacts) are not flat columns
        if child.key is None:
            base = child.facts.get("base", "STRTYPE")
            out[name] = FieldMeta(
                name,
                type=_TYPES.get(base, "string"),
                length=child.facts.get("maxlen"),
                required=child.min > 0,
            )
            continue
        sub = children(child.key)
        if "FullName" in sub and "ListID" in sub:  # a *Ref: written by FullName (or ListID)
            for leaf in ("FullName", "ListID"):
                out[f"{name}.{leaf}"] = FieldMeta(f"{name}.{leaf}", length=sub[leaf].facts.get("maxlen"))
            continue
        for leaf, grandchild in sub.items():
            if grandchild.key is None and (grandchild.max or 1) == 1:
                base = grandchild.facts.get("base", "STRTYPE")
                out[f"{name}.{leaf}"] = FieldMeta(
                    f"{name}.{leaf}", type=_TYPES.get(base, "string"), length=grandchild.facts.get("maxlen")
                )
    return out


def customer_meta(data_ext_names: Iterable[str] = ("SalesforceId",)) -> ObjectMeta:
    """Return Customer's fields from the qbXML 13.0 rules (CustomerAdd + CustomerMod), no network call."""
    from dataclasses import replace

    add, mod = _leaf_fields("CustomerAdd"), _leaf_fields("CustomerMod")
    fields: dict[str, FieldMeta] = {}
    for name in dict.fromkeys([*add, *mod]):
        if name in ("ListID", "EditSequence"):
            continue
        meta = add.get(name) or mod[name]
        fields[name] = replace(meta, createable=name in add, updateable=name in mod)
    for name in ("ListID", "EditSequence", "FullName", "TimeCreated", "TimeModified"):
        fields[name] = FieldMeta(
            name,
            type="datetime" if name.startswith("Time") else "string",
            length=36 if name == "ListID" else 16 if name == "EditSequence" else None,
            createable=False,
            updateable=False,
        )
    for ext in data_ext_names:
        fields[f"{DATAEXT_PREFIX}{ext}"] = FieldMeta(f"{DATAEXT_PREFIX}{ext}", length=255, external_id=True)
    return ObjectMeta("Customer", fields, id_field="ListID", modified_field="TimeModified")


def sales_rep_meta() -> ObjectMeta:
    """SalesRep's fields (qbXML 13.0 SalesRepRet: Initial 5; names come from the linked entity)."""
    fields = {
        "ListID": FieldMeta("ListID", length=36, createable=False, updateable=False),
        "Initial": FieldMeta("Initial", length=5, required=True),
        "FirstName": FieldMeta("FirstName", length=25),
        "LastName": FieldMeta("LastName", length=25),
        "IsActive": FieldMeta("IsActive", type="boolean"),
    }
    return ObjectMeta("SalesRep", fields, id_field="ListID", modified_field=None)


# ---- records ----------------------------------------------------------------------------------------


def flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """Turn a parsed ``CustomerRet`` into flat columns: ``BillAddress.City``, ``dataext.SalesforceId``.

    Empty text becomes None, as the mapped rows have it (a cleared field and a missing one are alike).
    """
    out: dict[str, Any] = {}
    for name, value in record.items():
        if name == "DataExtRet":
            for ext in value if isinstance(value, list) else [value]:
                if isinstance(ext, dict) and ext.get("DataExtName"):
                    out[f"{DATAEXT_PREFIX}{ext['DataExtName']}"] = ext.get("DataExtValue")
        elif isinstance(value, dict):
            for leaf, inner in value.items():
                if not isinstance(inner, (dict, list)):
                    out[f"{name}.{leaf}"] = inner or None
        elif isinstance(value, list):
            out[name] = json.dumps(value, default=str)  # repeated aggregates stay whole, as JSON text
        else:
            out[name] = value or None  # QuickBooks has no empty text: an empty element is a cleared field
    return out


def records_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the ``*Ret`` records of one bridge result (all iterator pages are merged by the bridge)."""
    from erpsync.qbwc_bridge.qbxml import parse_response

    xml = result.get("response_xml")
    if not xml:
        return []
    parsed = parse_response(f"<QBXML><QBXMLMsgsRs>{xml}</QBXMLMsgsRs></QBXML>", max_bytes=512_000_000)
    return [rec for rs in parsed.responses for rec in rs.records]


def _clean(value: Any) -> Any:
    """Return None for missing values (None, NaN, NA), the plain Python value otherwise."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if type(value).__name__ in {"NAType", "NaTType"}:
        return None
    return value


def _clearable(column: str) -> bool:
    """True for a top-level text field of CustomerMod, which an empty element clears in QuickBooks."""
    from erpsync.qbwc_bridge.qbxml._check import children

    slot = children("CustomerMod").get(column)
    return slot is not None and slot.key is None and slot.facts.get("base", "STRTYPE") == "STRTYPE"


def _nest(row: dict[str, Any], *, clear: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a flat row into (nested qbXML fields, DataExt values).

    Empty values are left out, except with `clear` (a Mod): a top-level text field that is empty in the
    row is sent as an empty element, which clears it in QuickBooks. Address aggregates are sent whole
    by the Mod, so their empty lines are cleared by being left out.
    """
    fields: dict[str, Any] = {}
    exts: dict[str, Any] = {}
    for column, raw in row.items():
        if column.startswith("_"):
            continue
        value = _clean(raw)
        if column.startswith(DATAEXT_PREFIX):
            if value not in (None, ""):
                exts[column[len(DATAEXT_PREFIX) :]] = str(value)
            continue
        if value in (None, ""):
            if clear and "." not in column and column != "Name" and _clearable(column):
                fields[column] = ""
            continue
        if isinstance(value, datetime):
            value = value.isoformat(timespec="seconds")
        head, _, leaf = column.partition(".")
        if leaf:
            fields.setdefault(head, {})[leaf] = value
        else:
            fields[column] = value
    return fields, exts


def _norm(value: Any, casefold: bool) -> str | None:
    value = _clean(value)
    if value in (None, ""):
        return None
    text = str(value)
    return " ".join(text.split()).casefold() if casefold else text


# ---- jobs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BridgeJob:
    """One job to enqueue: its phase name, its qbXML requests and its idempotency key."""

    phase: str
    requests: list[QbRequest]
    key: str


def idempotency_prefix(explicit: str | None = None) -> str:
    """Return `explicit`, else `dag_id/run_id/task_id[/map_index]` of the running Airflow task, else a
    fresh random prefix (a call outside Airflow that must be retried safely passes `explicit`)."""
    if explicit:
        return explicit
    try:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
    except (ImportError, RuntimeError, KeyError):
        return f"adhoc-{uuid.uuid4().hex}"
    key = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}"
    map_index = getattr(ti, "map_index", -1)
    return f"{key}/{map_index}" if map_index is not None and map_index >= 0 else key


def job_key(prefix: str, phase: str, digest: str, requests: list[QbRequest]) -> str:
    """Idempotency key of a job: same prefix, phase, batch and requests -> same key (max 255 chars)."""
    body = hashlib.sha256(json.dumps([digest, [r.xml for r in requests]]).encode()).hexdigest()[:24]
    if len(prefix) > 200:
        prefix = prefix[:160] + "~" + hashlib.sha256(prefix.encode()).hexdigest()[:16]
    return f"{prefix}/{phase}/{body}"


def _failed_request(result: dict[str, Any]) -> bool:
    code = result.get("status_code")
    return result.get("state") in ("failed", "cancelled", "in_doubt") or code is None or code >= 1000


def _query_error(result: dict[str, Any], what: str) -> SyncError:
    """The error of a failed query request (a read that failed is a whole-call failure)."""
    from erpsync.qbwc_bridge.qbxml import QbResponse, error_for

    if result.get("status_code") is None:
        return RetriableSourceError(
            f"{what}: request was not answered ({result.get('state')}): {result.get('status_message')}",
            where=f"requestID {result.get('request_id')}",
        )
    err = error_for(
        QbResponse(
            request_id=result.get("request_id"),
            kind=str(result.get("kind") or "Query").removesuffix("Rq"),
            status_code=int(result["status_code"]),
            severity=result.get("status_severity") or "",
            message=result.get("status_message") or "",
        )
    )
    return err or FatalSourceError(f"{what}: {result.get('status_message')}")


def _not_found(result: dict[str, Any]) -> bool:
    """Status 1 (nothing matched) or 500 (a named ListID/FullName does not exist)."""
    return result.get("status_code") in (1, 500)


# ---- the upsert program -----------------------------------------------------------------------------


def _result_row(key: Any, target_id: Any, action: str, error=None, code=None, retriable=False) -> dict:
    return {
        "_source_key": key,
        "target_id": target_id,
        "action": action,
        "error": error,
        "error_code": code,
        "retriable": bool(retriable),
    }


def _refusal(result: dict[str, Any], label: str) -> tuple[str, str, bool]:
    """(message, code, retriable) for a request QuickBooks refused; the message names the record."""
    from erpsync.qbwc_bridge.qbxml import Outcome, outcome_for

    code = result.get("status_code")
    message = result.get("status_message") or result.get("state") or "no answer"
    if result.get("state") == "in_doubt":
        # Sent, never acknowledged, and the bridge could not find out whether QuickBooks applied it:
        # neither written nor safe to send again. Quarantined (never retried) for someone to check.
        return f"{label}: in doubt, not counted as written and not re-sent: {message}", "in_doubt", False
    if code is None:
        return f"{label}: not applied ({message})", str(result.get("state") or "unanswered"), True
    outcome = outcome_for(int(code), message)
    return (
        f"{label}: QuickBooks refused it with status {code}: {message.strip()}",
        str(code),
        outcome in (Outcome.RETRY, Outcome.REFRESH_RETRY),
    )


class UpsertProgram:
    """Create or modify customers in as few bridge jobs as possible; a generator of `BridgeJob`s.

    Pure: it never talks to the bridge itself. `run()` yields the next job and is sent back that job's
    per-request results (the bridge's `results` list, in request order); when it stops, `results`
    holds one RESULT_COLUMNS row per input row. Driving it twice with the same stored jobs gives the
    same requests, which is what makes a retried task safe.

    :param rows: flat rows: `_source_key`, optional `_target_id` (modify that ListID), target columns.
    :param identity: the identity column (e.g. ``dataext.SalesforceId``), written as a DataExt.
    :param prefix: idempotency prefix (see `idempotency_prefix`).
    """

    def __init__(
        self,
        rows: list[dict[str, Any]],
        *,
        identity: str,
        prefix: str,
        obj: str = "Customer",
        prebuilt: dict[str, Any] | None = None,
    ):
        if obj != "Customer":
            raise ConfigError(f"QuickBooks upsert supports Customer only, not {obj!r}", where="quickbooks")
        self.rows = rows
        self.identity = identity
        self.prefix = prefix
        self.results: list[dict[str, Any] | None] = [None] * len(rows)
        self.jobs: list[str] = []  # bridge job ids, in order (for the report)
        # Requests built by an earlier execution of this program (build key -> [kind, xml]): a resume
        # replays its phases without building and checking them again; `built` is what to save.
        self.prebuilt: dict[str, Any] = dict(prebuilt or {})
        self.built: dict[str, list[str]] = {}
        self.digest = hashlib.sha256(json.dumps(rows, default=str, sort_keys=True).encode()).hexdigest()
        self._fields: list[dict[str, Any]] = []
        self._exts: list[dict[str, Any]] = []
        for row in rows:
            fields, exts = _nest(row, clear=_clean(row.get("_target_id")) not in (None, ""))
            self._fields.append(fields)
            self._exts.append(exts)

    def _label(self, i: int) -> str:
        row = self.rows[i]
        name = self._fields[i].get("Name")
        target = _clean(row.get("_target_id"))
        what = f"Customer {target}" if target else f"new Customer {name!r}"
        return f"{what} (source {row.get('_source_key')})"

    def _fail(self, i: int, message: str, code: str, retriable: bool = False) -> None:
        row = self.rows[i]
        self.results[i] = _result_row(
            row.get("_source_key"), _clean(row.get("_target_id")), "failed", message, code, retriable
        )

    def _job(self, phase: str, requests: list[QbRequest]) -> BridgeJob:
        return BridgeJob(phase, requests, job_key(self.prefix, phase, self.digest, requests))

    def _build(self, i: int, builder: Callable[[], QbRequest]) -> QbRequest | None:
        """Build one request; a request the schema refuses fails its row only (named field, rule)."""
        from erpsync.qbwc_bridge.qbxml import QbxmlValidationError

        try:
            return builder()
        except QbxmlValidationError as exc:
            self._invalid(i, exc)
            return None

    def _invalid(self, i: int, exc: Any) -> None:
        code = "3070" if "maxLength" in exc.rule else "invalid_field"
        self._fail(i, f"{self._label(i)}: {exc.field}: {exc.rule}", code)

    def _build_all(
        self, builds: list[tuple[int, str, Callable[[], QbRequest]]]
    ) -> list[tuple[int, QbRequest]]:
        """Build one phase's requests, row by row, and check them against the XSD in one pass
        (`xsd_later`): the same requests and row failures as building each alone, at a fraction of
        the cost of parsing and validating every request on its own. Returns (position in `builds`,
        request) for the valid ones, in order. Each build has a key unique in the program; one in
        `prebuilt` is taken as saved (it was checked when first built)."""
        from erpsync.qbwc_bridge.qbxml import QbRequest, validate_requests, xsd_later

        built: list[tuple[int, QbRequest]] = []  # (position in builds, request)
        fresh: list[int] = []  # positions in `built` of requests built here, to check
        with xsd_later():
            for n, (i, key, builder) in enumerate(builds):
                saved = self.prebuilt.get(key)
                if saved is not None:
                    rq = QbRequest(kind=saved[0], request_id=saved[1], xml=saved[2])
                else:
                    rq = self._build(i, builder)
                    if rq is None:
                        continue
                    fresh.append(len(built))
                built.append((n, rq))
        errors = validate_requests([built[m][1].xml for m in fresh])
        bad = {fresh[k] for k in errors}
        for k, exc in errors.items():
            self._invalid(builds[built[fresh[k]][0]][0], exc)
        out = [(n, rq) for m, (n, rq) in enumerate(built) if m not in bad]
        for n, rq in out:
            self.built[builds[n][1]] = [rq.kind, rq.request_id, rq.xml]
        return out

    def _read_current(self, phase: str, indexes: list[int]) -> Generator[BridgeJob, list, dict[str, dict]]:
        """Read ListID, EditSequence and DataExts of `indexes`' target records; a missing one fails its row."""
        from erpsync.qbwc_bridge.qbxml import customer_query

        ids = list(dict.fromkeys(str(_clean(self.rows[i]["_target_id"])) for i in indexes))
        include = ["ListID", "EditSequence", "Name", "DataExtRet"]
        found: dict[str, dict] = {}
        res = yield self._job(
            phase,
            [customer_query(request_id="r0", list_ids=ids, owner_id=OWNER_ID, include_ret_elements=include)],
        )
        if _not_found(res[0]) and len(ids) > 1:
            # One missing ListID fails the whole query (500): ask for each id alone.
            res = yield self._job(
                phase + "-each",
                [
                    customer_query(
                        request_id=f"r{n}", list_ids=[lid], owner_id=OWNER_ID, include_ret_elements=include
                    )
                    for n, lid in enumerate(ids)
                ],
            )
        for r in res:
            if _not_found(r):
                continue
            if _failed_request(r):
                raise _query_error(r, "reading the customers to modify")
            for rec in records_of(r):
                found[rec["ListID"]] = flatten_record(rec)
        for i in indexes:
            if str(_clean(self.rows[i]["_target_id"])) not in found:
                self._fail(i, f"{self._label(i)}: no such customer in QuickBooks (deleted?)", "500")
        return found

    def _mod_requests(self, indexes: list[int], current: dict[str, dict], tag: str) -> list[tuple[int, Any]]:
        from erpsync.qbwc_bridge.qbxml import customer_mod

        builds = []
        for i in indexes:
            if self.results[i] is not None:
                continue
            lid = str(_clean(self.rows[i]["_target_id"]))
            seq = current[lid]["EditSequence"]
            builds.append(
                (
                    i,
                    f"{tag}{i}",
                    lambda i=i, lid=lid, seq=seq: customer_mod(
                        lid, seq, self._fields[i], request_id=f"{tag}{i}"
                    ),
                )
            )
        return [(builds[n][0], rq) for n, rq in self._build_all(builds)]

    def run(self) -> Generator[BridgeJob, list[dict[str, Any]], None]:
        """Yield the jobs to run, one after the other; send each one's results back in."""
        from erpsync.qbwc_bridge.qbxml import customer_add, data_ext_def_query

        updates = [i for i, r in enumerate(self.rows) if _clean(r.get("_target_id")) not in (None, "")]
        creates = [i for i, r in enumerate(self.rows) if _clean(r.get("_target_id")) in (None, "")]
        current: dict[str, dict] = {}
        if updates:
            current = yield from self._read_current("read", updates)

        # Phase 2: every Add and Mod in one job (plus the DataExt definition check when needed).
        writes: list[tuple[int | None, Any]] = []
        wants_ext = any(self._exts)
        if wants_ext:
            # Without OwnerID: every definition (the simulator fails on an OwnerID filter here, see the report).
            writes.append((None, data_ext_def_query(request_id="defs")))
        adds = [(i, f"a{i}", lambda i=i: customer_add(self._fields[i], request_id=f"a{i}")) for i in creates]
        writes.extend((adds[n][0], rq) for n, rq in self._build_all(adds))
        writes.extend(self._mod_requests(updates, current, "m"))
        defined: set[str] = set()
        stale: list[int] = []
        written: dict[int, dict] = {}
        if any(i is not None for i, _ in writes):
            res = yield self._job("write", [rq for _, rq in writes])
            for (i, _rq), r in zip(writes, res, strict=True):
                if i is None:
                    if not _failed_request(r):
                        defined = {
                            rec.get("DataExtName")
                            for rec in records_of(r)
                            if str(rec.get("OwnerID", OWNER_ID)) == OWNER_ID
                        }
                elif r.get("status_code") == 3200 and r.get("state") != "in_doubt":
                    stale.append(i)
                elif _failed_request(r):
                    self._fail(i, *_refusal(r, self._label(i)))
                else:
                    written[i] = r

        # Phase 3: a stale EditSequence (someone edited the customer since we read it): re-read, resend once.
        if stale:
            fresh = yield from self._read_current("reread", stale)
            current.update(fresh)
            retry = self._mod_requests(stale, current, "s")
            if retry:
                res = yield self._job("rewrite", [rq for _, rq in retry])
                for (i, _rq), r in zip(retry, res, strict=True):
                    if _failed_request(r):
                        self._fail(i, *_refusal(r, self._label(i) + " (after re-reading its EditSequence)"))
                    else:
                        written[i] = r

        # Phase 4: the DataExts, now that every new ListID is known.
        yield from self._write_exts(written, current, defined)
        for i, r in written.items():
            if self.results[i] is None:
                action = "updated" if _clean(self.rows[i].get("_target_id")) not in (None, "") else "created"
                self.results[i] = _result_row(self.rows[i].get("_source_key"), r.get("list_id"), action)

    def _write_exts(self, written: dict[int, dict], current: dict[str, dict], defined: set[str]):
        from erpsync.qbwc_bridge.qbxml import data_ext_add, data_ext_def_add, data_ext_mod

        builds: list[tuple[int, str, Callable[[], QbRequest]]] = []
        names: list[str] = []
        for i, r in sorted(written.items()):
            lid = r.get("list_id")
            have = current.get(str(_clean(self.rows[i].get("_target_id"))), {})
            for name, value in self._exts[i].items():
                old = _clean(have.get(f"{DATAEXT_PREFIX}{name}"))
                if old == value:
                    continue
                build = data_ext_add if old in (None, "") else data_ext_mod
                tag = "x" if build is data_ext_add else "y"
                builds.append(
                    (
                        i,
                        f"{tag}{i}.{name}",
                        lambda b=build, n=name, v=value, lid=lid, t=tag, i=i: b(
                            OWNER_ID, n, "Customer", lid, v, request_id=f"{t}{i}.{n}"[:50]
                        ),
                    )
                )
                names.append(name)
        requests: list[tuple[int | None, Any]] = []
        needed: set[str] = set()
        for n, rq in self._build_all(builds):
            requests.append((builds[n][0], rq))
            needed.add(names[n])
        if not requests:
            return
        head = [
            (
                None,
                data_ext_def_add(OWNER_ID, name, DATAEXT_TYPE, ["Customer"], request_id=f"def.{name}"[:50]),
            )
            for name in sorted(needed - defined)
        ]
        res = yield self._job("dataext", [rq for _, rq in [*head, *requests]])
        for (i, _rq), r in zip([*head, *requests], res, strict=True):
            if i is None:
                if _failed_request(r) and r.get("status_code") != 3100:  # 3100: defined meanwhile
                    raise _query_error(r, "defining the DataExt field")
                continue
            if _failed_request(r) and self.results[i] is None:
                message, code, retriable = _refusal(r, self._label(i))
                self._fail(
                    i,
                    f"{message} (the customer itself was written as ListID {written[i].get('list_id')}; "
                    "its DataExt was not, so the next run matches it by its other fields)",
                    code,
                    retriable,
                )
                self.results[i]["target_id"] = written[i].get("list_id")


def drive(program: UpsertProgram, run_job: Callable[[BridgeJob], list[dict[str, Any]]]) -> list[dict]:
    """Run `program` to the end, running each job with `run_job` (enqueue + wait + results)."""
    gen = program.run()
    try:
        job = next(gen)
        while True:
            job = gen.send(run_job(job))
    except StopIteration:
        pass
    return [r for r in program.results if r is not None]


# ---- the adapter ---------------------------------------------------------------------------------------


class QuickBooksAdapter:
    """QuickBooks Desktop through the Web Connector bridge (`SystemAdapter`; Customer and SalesRep).

    :param conn_id: the `qbwc_bridge` connection (host, token, `company` extra).
    :param company: company name on the bridge; default the connection's `company` extra.
    :param page_size: MaxReturned per iterator page of a full customer scan.
    :param wait_timeout: seconds to wait for the Web Connector to run a job before failing (retriable).
    :param long_poll: seconds each wait request asks the bridge to hold the answer.
    :param idempotency_prefix: prefix of the write jobs' keys; default dag_id/run_id/task_id.
    :param data_ext_names: DataExt fields `describe` lists (default SalesforceId).
    """

    name = "quickbooks"
    #: ids a caller may hand read_by_keys at once (verify): each job is one Web Connector visit, so
    #: four queries of 500 ListIDs travel in one job instead of four.
    keys_per_read = 2000

    def __init__(
        self,
        conn_id: str | None = "qbwc_bridge_default",
        company: str | None = None,
        *,
        page_size: int = 500,
        wait_timeout: float = 3600.0,
        long_poll: float = 30.0,
        idempotency_prefix: str | None = None,
        data_ext_names: Iterable[str] = ("SalesforceId",),
    ):
        if page_size < 1:
            raise ConfigError(f"page_size must be at least 1, got {page_size}", where="quickbooks")
        self.conn_id = conn_id or "qbwc_bridge_default"
        self.company = company
        self.page_size = int(page_size)
        self.wait_timeout = float(wait_timeout)
        self.long_poll = float(long_poll)
        self._prefix = idempotency_prefix
        self.data_ext_names = tuple(data_ext_names)
        self.call_log = CallLog()
        self._hook = None
        self._scan: list[dict[str, Any]] | None = None
        self.job_ids: list[str] = []

    @property
    def hook(self):
        if self._hook is None:
            from erpsync.hooks.qbwc_bridge import QbwcBridgeHook

            self._hook = QbwcBridgeHook(self.conn_id, company=self.company)
        return self._hook

    # ---- jobs ----------------------------------------------------------------------------------------

    def run_job(self, job: BridgeJob) -> list[dict[str, Any]]:
        """Enqueue `job` (its key returns an existing job), wait until it is done, return its results."""
        with self.call_log.timed(f"job:{job.phase}", "-", rows=len(job.requests)):
            queued = self.hook.enqueue([r.xml for r in job.requests], idempotency_key=job.key)
            self.job_ids.append(queued["id"])
            done = self.hook.wait(queued["id"], timeout=self.wait_timeout, long_poll=self.long_poll)
        return job_results(done, len(job.requests))

    def _query(self, phase: str, requests: list[QbRequest]) -> list[dict[str, Any]]:
        return self.run_job(BridgeJob(phase, requests, f"query/{phase}/{uuid.uuid4().hex}"))

    # ---- SystemAdapter ---------------------------------------------------------------------------------

    def check_connection(self) -> tuple[bool, str]:
        with self.call_log.timed("check_connection", "-"):
            return self.hook.test_connection()

    def describe(self, obj: str) -> ObjectMeta:
        with self.call_log.timed("describe", obj):
            if obj == "Customer":
                return customer_meta(self.data_ext_names)
            if obj == "SalesRep":
                return sales_rep_meta()
        raise ConfigError(
            f"the QuickBooks adapter knows Customer and SalesRep, not {obj!r}", where="quickbooks"
        )

    def read(
        self,
        obj: str,
        *,
        window: ReadWindow | None = None,
        columns: list[str] | None = None,
        chunk_rows: int = 50_000,
    ) -> Iterator[pd.DataFrame]:

        meta = self.describe(obj)
        if obj == "SalesRep":
            yield _frame(meta, self._sales_reps(), columns or _SALES_REP_COLUMNS)
            return
        start = window.start if window else None
        end = window.end if window else None
        rows = self._scan_customers(start, end)
        if end is not None:  # ToModifiedDate is inclusive; the window is half-open
            rows = [r for r in rows if _when(r.get("TimeModified")) < end]
        rows.sort(key=lambda r: (str(r.get("TimeModified")), str(r.get("ListID"))))
        for offset in range(0, len(rows), max(1, chunk_rows)):
            yield _frame(meta, rows[offset : offset + chunk_rows], columns)

    def read_by_keys(
        self,
        obj: str,
        field: str,
        keys: Iterable[Any],
        *,
        columns: list[str] | None = None,
        casefold: bool = False,
    ) -> pd.DataFrame:
        from erpsync.qbwc_bridge.qbxml import customer_query

        meta = self.describe(obj)
        if obj != "Customer":
            raise ConfigError(f"read_by_keys supports Customer, not {obj!r}", where="quickbooks")
        wanted = {w for k in keys if (w := _norm(k, casefold or field in ("Name", "FullName"))) is not None}
        cols = None if columns is None else list(dict.fromkeys([meta.id_field, field, *columns]))
        if not wanted:
            return _frame(meta, [], cols)
        with self.call_log.timed("read_by_keys", obj) as entry:
            if field == "ListID":  # ids are case-sensitive: ask with the keys as given
                found = self._by_list_ids(sorted({str(k) for k in keys if _clean(k) not in (None, "")}))
            elif field in ("Name", "FullName"):
                res = self._query(
                    "by-name",
                    [
                        customer_query(request_id=f"n{n}", full_names=[k], owner_id=OWNER_ID)
                        for n, k in enumerate(sorted(wanted))
                    ],
                )
                found = self._flat(res, "reading customers by name")
            else:
                found = self._scan_customers(None, None, cached=True)
            hits = [
                r for r in found if _norm(r.get(field), casefold or field in ("Name", "FullName")) in wanted
            ]
            entry["rows"] = len(hits)
        return _frame(meta, hits, cols)

    def upsert(self, obj: str, rows: pd.DataFrame, *, identity: str) -> pd.DataFrame:
        import pandas as pd

        records = [{k: _clean(v) for k, v in r.items()} for r in rows.to_dict("records")]
        program = UpsertProgram(records, identity=identity, prefix=idempotency_prefix(self._prefix), obj=obj)
        with self.call_log.timed("upsert", obj, rows=len(records)):
            self._scan = None  # whatever we read before no longer holds
            results = drive(program, self.run_job)
        return pd.DataFrame(results, columns=RESULT_COLUMNS)

    # ---- internals ------------------------------------------------------------------------------------

    def _flat(self, results: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
        out = []
        for r in results:
            if _not_found(r):
                continue
            if _failed_request(r):
                raise _query_error(r, what)
            out.extend(flatten_record(rec) for rec in records_of(r))
        return out

    def _by_list_ids(self, ids: list[str]) -> list[dict[str, Any]]:
        """Customers by ListID: one job of queries of `page_size` ids each (a caller may pass up to
        `keys_per_read` ids: one Web Connector visit instead of one per `page_size`)."""
        from erpsync.qbwc_bridge.qbxml import customer_query

        groups = [ids[n : n + self.page_size] for n in range(0, len(ids), self.page_size)]
        res = self._query(
            "by-id",
            [customer_query(request_id=f"i{n}", list_ids=g, owner_id=OWNER_ID) for n, g in enumerate(groups)],
        )
        # One missing ListID fails its whole query (500): ask for each id of such a query alone.
        again = [i for g, r in zip(groups, res, strict=True) if _not_found(r) and len(g) > 1 for i in g]
        if again:
            res = [r for g, r in zip(groups, res, strict=True) if not (_not_found(r) and len(g) > 1)]
            res += self._query(
                "by-id-each",
                [
                    customer_query(request_id=f"i{n}", list_ids=[i], owner_id=OWNER_ID)
                    for n, i in enumerate(again)
                ],
            )
        return self._flat(res, "reading customers by ListID")

    def _sales_reps(self) -> list[dict[str, Any]]:
        """Every sales rep, active or not, in one query (the list is short: no iterator in qbXML).

        SalesRepRet names its person only through SalesRepEntityRef's FullName ("Anna de Vries"):
        FirstName is its first word and LastName the rest, which is how a Salesforce owner's first
        and last name are matched against it.
        """
        from erpsync.qbwc_bridge.qbxml import sales_rep_query

        # One call in the log, the bridge job (as a customer scan is).
        rows = self._flat(
            self._query("sales-reps", [sales_rep_query(request_id="reps", active_status="All")]),
            "reading sales reps",
        )
        for row in rows:
            first, _, last = (row.get("SalesRepEntityRef.FullName") or "").strip().partition(" ")
            row["FirstName"], row["LastName"] = first or None, last.strip() or None
        return rows

    def _scan_customers(
        self, start: datetime | None, end: datetime | None, *, cached: bool = False
    ) -> list[dict[str, Any]]:
        """Read every customer (active or not) modified in [start, end], all iterator pages, one job."""
        from erpsync.qbwc_bridge.qbxml import customer_query

        if cached and self._scan is not None:
            return self._scan
        rq = customer_query(
            request_id="scan",
            iterator="Start",
            max_returned=self.page_size,
            active_status="All",
            modified_from=_qb_time(start),
            modified_to=_qb_time(end),
            owner_id=OWNER_ID,
        )
        rows = self._flat(self._query("scan", [rq]), "reading customers")
        if cached or (start is None and end is None):
            self._scan = rows
        return rows


def job_results(job: dict[str, Any], expected: int) -> list[dict[str, Any]]:
    """Return a finished job's per-request results in request order; raise for a job that did not run."""
    state = job.get("state")
    if state in ("cancelled", "expired"):
        raise RetriableSourceError(
            f"bridge job {job.get('id')} was {state} before QuickBooks answered: {job.get('error') or ''}",
            where=f"job {job.get('id')}",
        )
    results = sorted(job.get("results") or [], key=lambda r: r["index"])
    if len(results) != expected:
        raise FatalSourceError(
            f"bridge job {job.get('id')} holds {len(results)} results for {expected} requests",
            where=f"job {job.get('id')}",
        )
    return results


def _qb_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat(timespec="seconds")


def _when(text: Any) -> datetime:
    value = datetime.fromisoformat(str(text))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _frame(meta: ObjectMeta, rows: list[dict[str, Any]], columns: list[str] | None) -> pd.DataFrame:
    import pandas as pd

    if columns is None:
        columns = list(dict.fromkeys([meta.id_field, "EditSequence", *(c for r in rows for c in r)]))
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
