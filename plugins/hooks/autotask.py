"""Autotask PSA hook: zone discovery, the three auth headers, filtered queries, writes, and a request budget.

Rules this module keeps (reference `autotask.md` §1-§9, §12):

1. **The tenant's 10,000 requests an hour are shared.** Every integration on an Autotask database draws
   on one rolling hourly threshold, and one noisy caller disables the API for all of them (§8, §12 #1).
   So the hook never spends more than ``budget_share`` (default 50 %) of the threshold in any rolling
   hour (its own calls, counted in a ledger that every task on the host shares, or every task on every
   host with ``ledger_url``: each call is reserved there before it is sent, check and count in one
   locked step, so tasks calling at the same moment never pass the share together), and it reads
   ``ThresholdInformation`` at the start and at least once a minute (``threshold_share_ttl``, default and
   most 60 s), and near the lines (the estimate at half ``tenant_slowdown_share`` or more) also every
   ``threshold_every`` calls of this package (all tasks, from the ledger's counter). A reading is shared
   through the ledger with the other tasks while it is fresh by these rules; a refusal, a wait or a 429
   drops it for everybody. The tenant's count is estimated as the reading plus this package's calls
   since (counted exactly); what a reading cannot see, other integrations' calls, grows with time, hence
   the minute. A ``ThresholdInformation`` read is itself a call and is sent only when it fits the share. From ``tenant_slowdown_share``
   of the tenant's count (ours and everybody else's) it paces its calls, and before the count could
   reach ``tenant_stop_share`` it stops with `RateLimitedError` (``retry_after`` set) instead of letting
   the tenant trip 429. A wait shorter than ``max_wait`` is waited out in place.
2. **A 429 is backed off, never hammered** (§8, §12 #2): ``Retry-After`` when sent, else exponential
   from ``rate_limit_backoff`` seconds, bounded by ``max_wait`` in total; then `RateLimitedError`.
   A 429 means the call was refused, so even a create is sent again.
3. **Zone discovery is cached and redone after a 401** (§1): per process and in the ledger file (so the
   tasks of a run discover once), keyed by user; a 401 drops the cached zone and retries once; a second
   401 is `AuthError`. A ``zone_url`` in the connection skips discovery (and a 401 is then final).
4. **Only the documented operators go out** (§4.1, §12 #3): the filter builders below and `check_filter`
   refuse anything else, more than one UDF condition and more than 500 OR conditions, before sending.
5. **Pages follow ``nextPageUrl``** (500 rows each, §4.2); a repeated or foreign next link stops the
   query instead of looping.
6. **Writes are PATCHes of the changed fields only** (§3, §12 #7); Contacts are created and updated
   under ``Companies/{companyID}/Contacts`` (§3, §12 #9). A create is never resent after a 5xx or a
   lost answer: it may have been stored (§9); look the record up by its key (UDF) first.
7. **Metadata is read seldom**: ``entityInformation`` fields and UDF definitions are kept in the ledger
   for ``metadata_ttl`` seconds (default a day) and shared by the tasks; picklist values (the tenant's
   data a mapping resolves labels against) are read again after ``picklist_ttl`` (default 15 minutes).
   A write refused for a picklist value or a UDF drops the entity's entries (once per hook) so the next
   read asks Autotask again, and creating a UDF definition drops them all. Reference rows (Countries) are
   kept ``reference_ttl`` (a day); identity pairs a task read are kept ``identity_ttl`` (5 minutes) for
   the run's next task (`recall_ids`).
8. **Errors are classified by status and message** (§9, §12 #8): Autotask answers validation and
   permission failures with HTTP 500 and ``{"errors": [...]}``.

Connection (type ``autotask``, default id ``autotask_default``):

* login / password: the API-only user name and its secret.
* host (optional): the zone-discovery base, default ``https://webservices.autotask.net`` (the sandbox
  URL in tests; ``/atservicesrest/v1.0/zoneInformation`` is appended unless the path already names it).
* extra ``integration_code`` (required): the integration's tracking identifier (``ApiIntegrationCode``).
* extra ``zone_url``: the zone's REST root (``https://webservices14.autotask.net/ATServicesRest/``);
  skips discovery.
* extra ``impersonation_resource_id``: writes are attributed to this resource.
* extra ``ca_bundle``: a PEM file of CAs to trust (the sandbox CA). Verification is never turned off.
* extra ``budget_share`` (0-1, default 0.5): this package's share of the tenant's hourly threshold.
* further extras (defaults in `_Settings`): ``timeout``, ``max_wait``, ``max_retries``, ``retry_backoff``,
  ``rate_limit_backoff``, ``tenant_slowdown_share``, ``tenant_stop_share``, ``slowdown_seconds``,
  ``threshold_every``, ``threshold_share_ttl``, ``metadata_ttl``, ``picklist_ttl``, ``reference_ttl``,
  ``identity_ttl``, ``zone_cache_ttl``, ``ledger_path`` (SQLite
  file shared by the tasks on a host; default ``$AIRFLOW_HOME/erpsync/autotask-ledger.sqlite``),
  ``budget_key`` (connections that share one budget; default the user name).
* extra ``ledger_url``: a PostgreSQL URL (``postgresql+psycopg://user@db-host/erpsync``) for one ledger
  shared by the workers of every host (Celery, Kubernetes): the budget, the threshold reading, zones and
  cached metadata are then kept there (tables ``erpsync_autotask_ledger_*``, created when missing) and
  ``ledger_path`` is not used. Without it, tasks on two hosts would each spend the whole share.

Precedence: hook argument > connection extra > default. Errors follow `erpsync.errors`:

    AuthError            401 after a fresh zone discovery; an unknown API user at discovery
    ConfigError          incomplete connection, untrusted certificate, a filter Autotask would misread
    RateLimitedError     budget or tenant threshold reached (retry_after), 429 beyond max_wait
    RetriableSourceError transport errors, 5xx without a validation message, transient messages
    FatalSourceError     403/405, refusals of reads (unknown field, bad query), malformed answers
    RecordError          a write refused for this record (validation message, unknown id)

The module is cheap to import: httpx, sqlite3 and SQLAlchemy load on first use, never at DAG parse time.
The ledgers live in `erpsync.hooks._autotask_ledger`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from erpsync.errors import (
    AuthError,
    ConfigError,
    FatalSourceError,
    RateLimitedError,
    RecordError,
    RetriableSourceError,
    SyncError,
)
from erpsync.hooks._autotask_ledger import SqliteLedger, SqlLedger, default_ledger_path, open_ledger

if TYPE_CHECKING:
    import httpx

__all__ = [
    "CHILD_ENTITIES",
    "CONNECTION_TYPE_INFO",
    "DISCOVERY_BASE",
    "MAX_OR_CONDITIONS",
    "OPERATORS",
    "PAGE_SIZE",
    "AutotaskHook",
    "BudgetStatus",
    "and_",
    "begins_with",
    "check_filter",
    "contains",
    "ends_with",
    "eq",
    "everything",
    "exist",
    "gt",
    "gte",
    "in_",
    "lt",
    "lte",
    "not_exist",
    "not_in",
    "noteq",
    "or_",
    "udf",
]

log = logging.getLogger(__name__)

#: The tenant's requests per rolling hour (§8), assumed until a `ThresholdInformation` reading says otherwise.
DEFAULT_THRESHOLD = 10_000
#: Where zone discovery lives for every tenant (§1).
DISCOVERY_BASE = "https://webservices.autotask.net"
#: The operators Autotask documents (§4.1); an unknown one is silently dropped by the service (§12 #3).
OPERATORS = frozenset(
    {
        "eq",
        "noteq",
        "gt",
        "gte",
        "lt",
        "lte",
        "beginsWith",
        "endsWith",
        "contains",
        "exist",
        "notExist",
        "in",
        "notIn",
    }
)
GROUP_OPERATORS = frozenset({"and", "or"})
#: Rows per page, the service's maximum (§4.2).
PAGE_SIZE = 500
#: OR conditions per query (§4.1, §8); `in` values count too, to be safe.
MAX_OR_CONDITIONS = 500
#: Entities created and updated under a parent (§3): entity -> (parent path, parent id field).
CHILD_ENTITIES: dict[str, tuple[str, str]] = {"Contacts": ("Companies", "companyID")}

# The connection form is declared with the provider info (erpsync.provider_info), which Airflow
# loads during provider discovery, so it must not import this module.
from erpsync.provider_info import AUTOTASK_CONNECTION as CONNECTION_TYPE_INFO  # noqa: E402

# ---- filters (§4.1) ---------------------------------------------------------------------------------------


def _wire_value(value: Any) -> Any:
    """Dates go out as UTC `yyyy-mm-ddThh:mm:ss.fff` (§3); booleans stay literal true/false."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    if isinstance(value, date):
        return value.strftime("%Y-%m-%dT00:00:00.000")
    return value


def _cond(op: str, field_name: str, value: Any = None, *, has_value: bool = True) -> dict[str, Any]:
    if not field_name or not isinstance(field_name, str):
        raise ConfigError(f"filter condition '{op}' needs a field name, got {field_name!r}")
    cond: dict[str, Any] = {"op": op, "field": field_name}
    if has_value:
        cond["value"] = _wire_value(value)
    return cond


def eq(field_name: str, value: Any) -> dict[str, Any]:
    """Return the condition `field = value`."""
    return _cond("eq", field_name, value)


def noteq(field_name: str, value: Any) -> dict[str, Any]:
    """Return `field <> value` (Autotask spells it `noteq`; `ne` would be ignored, §12 #3)."""
    return _cond("noteq", field_name, value)


def gt(field_name: str, value: Any) -> dict[str, Any]:
    """Return `field > value`."""
    return _cond("gt", field_name, value)


def gte(field_name: str, value: Any) -> dict[str, Any]:
    """Return `field >= value`."""
    return _cond("gte", field_name, value)


def lt(field_name: str, value: Any) -> dict[str, Any]:
    """Return `field < value`."""
    return _cond("lt", field_name, value)


def lte(field_name: str, value: Any) -> dict[str, Any]:
    """Return `field <= value`."""
    return _cond("lte", field_name, value)


def begins_with(field_name: str, value: str) -> dict[str, Any]:
    """Return `field LIKE 'value%'`."""
    return _cond("beginsWith", field_name, value)


def ends_with(field_name: str, value: str) -> dict[str, Any]:
    """Return `field LIKE '%value'`."""
    return _cond("endsWith", field_name, value)


def contains(field_name: str, value: str) -> dict[str, Any]:
    """Return `field LIKE '%value%'`."""
    return _cond("contains", field_name, value)


def exist(field_name: str) -> dict[str, Any]:
    """Return `field IS NOT NULL` (no value on the wire)."""
    return _cond("exist", field_name, has_value=False)


def not_exist(field_name: str) -> dict[str, Any]:
    """Return `field IS NULL`."""
    return _cond("notExist", field_name, has_value=False)


def in_(field_name: str, values: Iterable[Any]) -> dict[str, Any]:
    """Return `field IN (values)`; at most 500 values (`AutotaskHook.query_in` splits longer lists)."""
    return _cond("in", field_name, [_wire_value(v) for v in values])


def not_in(field_name: str, values: Iterable[Any]) -> dict[str, Any]:
    """Return `field NOT IN (values)`."""
    return _cond("notIn", field_name, [_wire_value(v) for v in values])


def udf(name: str, value: Any = None, op: str = "eq") -> dict[str, Any]:
    """Return a condition on a user-defined field by its name (only one per query, §4.1).

    :param name: the UDF's name exactly as defined, e.g. ``"Salesforce Company ID"``.
    :param op: any operator; ``exist``/``notExist`` take no value.
    """
    if op not in OPERATORS:
        raise ConfigError(f"unknown Autotask filter operator {op!r}; use one of {sorted(OPERATORS)}")
    cond = _cond(op, name, value, has_value=op not in ("exist", "notExist"))
    cond["udf"] = True
    return cond


def and_(*items: Mapping[str, Any]) -> dict[str, Any]:
    """Return a group whose conditions must all hold."""
    return {"op": "and", "items": [dict(i) for i in items]}


def or_(*items: Mapping[str, Any]) -> dict[str, Any]:
    """Return a group of which one condition must hold."""
    return {"op": "or", "items": [dict(i) for i in items]}


def everything() -> dict[str, Any]:
    """Return the condition that matches every record (Autotask needs at least one, §4.1)."""
    return gte("id", 0)


def _as_filter(flt: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    if flt is None:
        return [everything()]
    if isinstance(flt, Mapping):
        return [dict(flt)]
    items = [dict(i) for i in flt]
    return items or [everything()]


def check_filter(flt: Sequence[Mapping[str, Any]], *, where: str = "filter") -> None:
    """Refuse a filter Autotask would reject or, worse, misread (§4.1, §12 #3).

    Checks: documented operators only, a field on each condition, a list value for `in`/`notIn`,
    no value for `exist`/`notExist`, at most one UDF condition, at most 500 OR conditions.
    """
    udfs = 0
    ors = 0

    def walk(node: Any, path: str) -> None:
        nonlocal udfs, ors
        if not isinstance(node, Mapping):
            raise ConfigError(f"filter item {node!r} is not an object", where=path)
        op = node.get("op")
        if op in GROUP_OPERATORS:
            items = node.get("items")
            if not isinstance(items, list) or not items:
                raise ConfigError(f"'{op}' group needs a non-empty 'items' list", where=path)
            if op == "or":
                ors += len(items)
            for i, item in enumerate(items):
                walk(item, f"{path}.{op}[{i}]")
            return
        if op not in OPERATORS:
            raise ConfigError(
                f"unknown Autotask filter operator {op!r} (Autotask would ignore it and return unfiltered "
                f"rows); use one of {sorted(OPERATORS)}",
                where=path,
            )
        if not node.get("field"):
            raise ConfigError(f"'{op}' condition without a field", where=path)
        if op in ("in", "notIn"):
            if not isinstance(node.get("value"), list):
                raise ConfigError(f"'{op}' on {node['field']} needs a list value", where=path)
            if op == "in":
                ors += len(node["value"])
        elif op in ("exist", "notExist"):
            if "value" in node:
                raise ConfigError(f"'{op}' on {node['field']} takes no value", where=path)
        elif "value" not in node:
            raise ConfigError(f"'{op}' on {node['field']} needs a value", where=path)
        if node.get("udf"):
            udfs += 1

    for i, node in enumerate(flt):
        walk(node, f"{where}[{i}]")
    if udfs > 1:
        raise ConfigError(f"{udfs} UDF conditions in one query; Autotask supports only one", where=where)
    if ors > MAX_OR_CONDITIONS:
        raise ConfigError(
            f"{ors} OR conditions in one query; Autotask allows {MAX_OR_CONDITIONS} (split the query)",
            where=where,
        )


# ---- settings -----------------------------------------------------------------------------------------------


def _blank_to_none(value: Any) -> Any:
    # The connection form stores empty strings for untouched fields; treat them as "not set".
    return None if isinstance(value, str) and not value.strip() else value


@dataclass(frozen=True)
class _Settings:
    conn_id: str
    user: str
    secret: str = field(repr=False)
    integration_code: str = field(repr=False)
    discovery_url: str
    zone_url: str | None
    impersonation_resource_id: int | None
    verify: Any
    timeout: float
    budget_share: float
    tenant_slowdown_share: float
    tenant_stop_share: float
    slowdown_seconds: float
    threshold_every: int
    max_wait: float
    max_retries: int
    retry_backoff: float
    rate_limit_backoff: float
    zone_cache_ttl: float
    threshold_share_ttl: float
    metadata_ttl: float
    picklist_ttl: float
    reference_ttl: float
    identity_ttl: float
    ledger_path: str
    ledger_url: str | None
    budget_key: str


def _discovery_url(host: str | None) -> str:
    base = (host or DISCOVERY_BASE).strip()
    if "://" not in base:
        base = f"https://{base}"
    base = base.rstrip("/")
    lowered = base.lower()
    if lowered.endswith("zoneinformation"):
        return base
    if lowered.endswith("/v1.0"):
        return f"{base}/zoneInformation"
    if lowered.endswith("/atservicesrest"):
        return f"{base}/v1.0/zoneInformation"
    return f"{base}/atservicesrest/v1.0/zoneInformation"


def _rest_root(zone_url: str) -> str:
    """Return the `.../V1.0` root for a zone URL as discovery names it (`.../ATServicesRest/`)."""
    root = zone_url.strip().rstrip("/")
    if root.lower().endswith("/v1.0"):
        return root
    return f"{root}/V1.0"


def _share(value: Any, name: str, default: float, conn_id: str) -> float:
    if value is None:
        return default
    try:
        share = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} {value!r} is not a number", where=conn_id) from None
    if share > 1:  # "50" in a form means 50 %
        share /= 100
    if not 0 < share <= 1:
        raise ConfigError(f"{name} must be between 0 and 1 (a share of the hourly threshold)", where=conn_id)
    return share


# ---- the zone cache (process); the ledger (erpsync.hooks._autotask_ledger) shares it across processes ----

_ZONES: dict[tuple[str, str], tuple[str, str | None, float]] = {}  # (discovery url, user) -> (root, name, at)
_ZONES_LOCK = threading.Lock()


@dataclass
class BudgetStatus:
    """Where the hook stands against its share and the tenant's threshold (for run reports)."""

    threshold: int | None = None  #: the tenant's requests per rolling hour (`externalRequestThreshold`)
    tenant_count: int | None = None  #: the tenant's count at the last `ThresholdInformation` read
    tenant_read_at: float | None = None  #: None once the reading is dropped (stale, refused, 429)
    last_read_at: float | None = None  #: when the last reading used was taken (kept for reports)
    own_calls_at_read: int = 0  #: this hook's counted calls when the tenant count was read
    total_at_read: int = 0  #: the ledger's count of this package's calls when the tenant count was read
    shared_reads: int = 0  #: readings taken over from another task through the ledger (no call)
    own_hour: int = 0  #: this package's calls in the rolling hour (ledger), at the last check
    own_cap: int | None = None  #: the most this package may use per rolling hour
    waited_seconds: float = 0.0  #: slept for the budget, the tenant's pace and 429s
    slowed_calls: int = 0  #: calls sent after a pacing pause
    rate_limited: int = 0  #: 429 answers received

    def as_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("tenant_read_at", "last_read_at", "own_calls_at_read", "total_at_read")
        }


# ---- errors (§9) -------------------------------------------------------------------------------------------------

_PERMISSION = re.compile(r"permission|not authori[sz]ed|access denied|security level|not allowed to", re.I)
#: A write refused for a value the cached metadata may no longer describe (a picklist value, a UDF).
_STALE_METADATA = re.compile(r"picklist|user-defined field|userdefinedfield|udf", re.I)
_TRANSIENT = re.compile(r"time[d ]?out|deadlock|temporar|try again|service unavailable|too many|busy", re.I)


def _json_or_none(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _errors_of(resp: httpx.Response) -> list[str]:
    """Return Autotask's `{"errors": [...]}` messages (strings; objects with `message` tolerated)."""
    body = _json_or_none(resp)
    if not isinstance(body, dict):
        return []
    errors = body.get("errors")
    if isinstance(errors, str):
        return [errors]
    if not isinstance(errors, list):
        return []
    out = []
    for e in errors:
        if isinstance(e, dict):
            e = e.get("message") or json.dumps(e)
        out.append(str(e))
    return out


def _classify(resp: httpx.Response, *, entity: str, action: str, where: str, write: bool) -> SyncError:
    """Turn a refused call into the error group that says what to do (§9, §12 #8)."""
    status = resp.status_code
    errors = _errors_of(resp)
    message = "; ".join(errors) if errors else (resp.text[:300].strip() or resp.reason_phrase)
    what = f"Autotask {action} {entity}"
    details = {"status": status, "entity": entity, "errors": errors or [message]}
    if status == 401:
        return AuthError(
            f"{what} refused the credentials (HTTP 401): {message}", where=where, details=details
        )
    if status == 429:
        return RateLimitedError(f"{what} was throttled (HTTP 429): {message}", where=where, details=details)
    if status == 403 or (errors and _PERMISSION.search(message)):
        return FatalSourceError(
            f"{what} is not allowed for this API user (HTTP {status}): {message}. Check the user's "
            "security level (API-only copies can hide modules)",
            where=where,
            details=details,
        )
    # 500 also carries validation and permission failures (§9); 502-504 are the platform's own troubles.
    if status > 500 or (status == 500 and (not errors or _TRANSIENT.search(message))):
        return RetriableSourceError(
            f"{what} failed on the server (HTTP {status}): {message}", where=where, details=details
        )
    if status == 405:
        return FatalSourceError(
            f"{what}: Autotask does not allow this verb here (HTTP 405): {message}",
            where=where,
            details=details,
        )
    if write and status in (400, 404, 409, 422, 500):
        return RecordError(
            f"{what} rejected the record (HTTP {status}): {message}", where=where, details=details
        )
    return FatalSourceError(
        f"{what} refused the request (HTTP {status}): {message}", where=where, details=details
    )


def _raise_if_tls_config(exc: Exception, url: str) -> None:
    """A certificate the client cannot verify is a configuration problem: retrying cannot fix it."""
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        raise ConfigError(
            f"TLS verification of {_origin(url)[1]} failed ({exc}); if it uses a private CA (the sandbox "
            "does), point the connection extra 'ca_bundle' at its PEM file. Verification is never turned off.",
            where=url,
        ) from exc


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(parsedate_to_datetime(raw).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


# ---- the hook -------------------------------------------------------------------------------------------------------


class AutotaskHook(BaseHook):
    """Talk to the Autotask PSA REST API v1.0 of one API user.

    :param autotask_conn_id: the Airflow connection id.
    :param budget_share: share (0-1) of the tenant's hourly threshold this package may use; overrides
        the connection's ``budget_share``.
    :param timeout: HTTP timeout in seconds.
    :param max_wait: longest total wait (budget, pacing, 429 backoff) before `RateLimitedError`.
    :param ledger_path: the host's call ledger (SQLite file); overrides the connection's.
    :param ledger_url: a PostgreSQL URL for a ledger shared by every host; overrides the connection's.
    :param clock: ``time.time`` stand-in (unit tests); the ledger's minutes follow it.
    :param sleep: ``time.sleep`` stand-in (unit tests).
    :param transport: an ``httpx`` transport (unit tests with ``httpx.MockTransport``).
    """

    conn_name_attr = "autotask_conn_id"
    default_conn_name = "autotask_default"
    conn_type = "autotask"
    hook_name = "Autotask PSA"

    def __init__(
        self,
        autotask_conn_id: str = default_conn_name,
        *,
        budget_share: float | None = None,
        timeout: float | None = None,
        max_wait: float | None = None,
        ledger_path: str | None = None,
        ledger_url: str | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        transport: Any = None,
    ):
        super().__init__()
        self.autotask_conn_id = autotask_conn_id
        self._args = {
            "budget_share": budget_share,
            "timeout": timeout,
            "max_wait": max_wait,
            "ledger_path": ledger_path,
            "ledger_url": ledger_url,
        }
        self._clock = clock or time.time
        self._sleep = sleep or time.sleep
        self._transport = transport
        #: Calls this hook sent, by kind ("zone", "threshold", "query", "query_next", "count", "create",
        #: "update", "metadata", "get"); only "zone" does not count toward the tenant's threshold.
        self.calls: dict[str, int] = {}
        #: entityInformation answers taken from the ledger instead of a call ("fields", "userDefinedFields").
        self.cache_hits: dict[str, int] = {}
        #: HTTP answers by status (429s included), for reports and tests.
        self.statuses: dict[int, int] = {}
        self.budget = BudgetStatus()
        self._zone_root: str | None = None
        self._zone_name: str | None = None
        #: Entities whose cached metadata this hook dropped after a refused write (once each).
        self._metadata_refreshed: set[str] = set()

    # ---- Airflow UI ------------------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel the standard fields (Airflow 3 reads the same from CONNECTION_TYPE_INFO)."""
        behaviour = CONNECTION_TYPE_INFO["ui-field-behaviour"]
        return {
            "hidden_fields": behaviour["hidden-fields"],
            "relabeling": behaviour["relabeling"],
            "placeholders": behaviour["placeholders"],
        }

    # ---- configuration ---------------------------------------------------------------------------

    @cached_property
    def settings(self) -> _Settings:
        conn_id = self.autotask_conn_id
        conn = self.get_connection(conn_id)
        extra = {k: _blank_to_none(v) for k, v in (conn.extra_dejson or {}).items()}

        def knob(name: str, default: Any, cast: Callable[[Any], Any] = float) -> Any:
            value = self._args.get(name)
            if value is None:
                value = extra.get(name)
            if value is None:
                return default
            try:
                return cast(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"connection extra {name}={value!r} is not a number", where=conn_id
                ) from None

        user, secret = _blank_to_none(conn.login), _blank_to_none(conn.password)
        if not user or not secret:
            raise ConfigError(
                "the connection needs the API user name (login) and its secret (password)", where=conn_id
            )
        code = extra.get("integration_code")
        if not code:
            raise ConfigError(
                "the connection extra 'integration_code' (the API tracking identifier) is missing",
                where=conn_id,
            )
        host = _blank_to_none(conn.host)
        if host and conn.port and "://" not in host:
            host = f"{host}:{conn.port}"
        resource = extra.get("impersonation_resource_id")
        try:
            resource = int(resource) if resource is not None else None
        except (TypeError, ValueError):
            raise ConfigError(
                f"impersonation_resource_id {resource!r} is not a resource id", where=conn_id
            ) from None
        slowdown = _share(extra.get("tenant_slowdown_share"), "tenant_slowdown_share", 0.7, conn_id)
        stop = _share(extra.get("tenant_stop_share"), "tenant_stop_share", 0.85, conn_id)
        if slowdown > stop:
            raise ConfigError("tenant_slowdown_share must not exceed tenant_stop_share", where=conn_id)
        ca_bundle = extra.get("ca_bundle")
        return _Settings(
            conn_id=conn_id,
            user=str(user).strip(),
            secret=str(secret),
            integration_code=str(code).strip(),
            discovery_url=_discovery_url(host),
            zone_url=_rest_root(extra["zone_url"]) if extra.get("zone_url") else None,
            impersonation_resource_id=resource,
            verify=ca_bundle if ca_bundle else True,
            timeout=knob("timeout", 60.0),
            budget_share=_share(
                self._args.get("budget_share") or extra.get("budget_share"), "budget_share", 0.5, conn_id
            ),
            tenant_slowdown_share=slowdown,
            tenant_stop_share=stop,
            slowdown_seconds=knob("slowdown_seconds", 1.0),
            threshold_every=max(int(knob("threshold_every", 50, int)), 1),
            max_wait=knob("max_wait", 300.0),
            max_retries=int(knob("max_retries", 3, int)),
            retry_backoff=knob("retry_backoff", 1.0),
            rate_limit_backoff=knob("rate_limit_backoff", 60.0),
            zone_cache_ttl=knob("zone_cache_ttl", 86_400.0),
            threshold_share_ttl=min(knob("threshold_share_ttl", 60.0), 60.0),
            metadata_ttl=knob("metadata_ttl", 86_400.0),
            picklist_ttl=knob("picklist_ttl", 900.0),
            reference_ttl=knob("reference_ttl", 86_400.0),
            identity_ttl=knob("identity_ttl", 300.0),
            ledger_path=str(
                self._args.get("ledger_path") or extra.get("ledger_path") or default_ledger_path()
            ),
            ledger_url=str(self._args.get("ledger_url") or extra.get("ledger_url") or "").strip() or None,
            budget_key=str(extra.get("budget_key") or user).strip().lower(),
        )

    @cached_property
    def client(self) -> httpx.Client:
        """The HTTP client, built on first use (never at parse time)."""
        import httpx

        s = self.settings
        return httpx.Client(
            verify=s.verify,
            timeout=s.timeout,
            transport=self._transport,
            headers={"Accept": "application/json", "User-Agent": "erpsync-autotask-hook"},
        )

    def get_conn(self) -> httpx.Client:
        return self.client

    @cached_property
    def ledger(self) -> SqliteLedger | SqlLedger:
        """The call ledger: the database at ``ledger_url`` (every host) or the file ``ledger_path`` (one host)."""
        return open_ledger(path=self.settings.ledger_path, url=self.settings.ledger_url)

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
        if "ledger" in self.__dict__:
            self.ledger.close()

    def _auth_headers(self) -> dict[str, str]:
        s = self.settings
        headers = {"ApiIntegrationCode": s.integration_code, "UserName": s.user, "Secret": s.secret}
        if s.impersonation_resource_id is not None:
            headers["ImpersonationResourceId"] = str(s.impersonation_resource_id)
        return headers

    def _count(self, kind: str) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1

    @property
    def api_calls(self) -> int:
        """Calls that count toward the tenant's threshold (all but zone discovery)."""
        return sum(n for kind, n in self.calls.items() if kind != "zone")

    def usage(self) -> dict[str, Any]:
        """This hook's Autotask calls and budget figures, for run reports (the report step sums the tasks').

        ``calls`` is every call sent that the tenant's threshold counts (writes, reads, pages, counts,
        metadata, ``ThresholdInformation``; not zone discovery), answered or not; ``reading`` is the last
        ``ThresholdInformation`` this hook used (its own or one shared through the ledger).
        """
        b = self.budget
        out: dict[str, Any] = {
            "system": "autotask",
            "calls": self.api_calls,
            "by_kind": {k: n for k, n in self.calls.items() if k != "zone"},
            "metadata_cached": dict(self.cache_hits),
            "waited_seconds": round(b.waited_seconds, 3),
            "slowed_calls": b.slowed_calls,
            "rate_limited": b.rate_limited,
        }
        settings = self.__dict__.get("settings")  # never load the connection just to report
        if settings is not None:
            out["budget_share"] = settings.budget_share
        if b.threshold is not None and b.last_read_at is not None:
            out["threshold"] = b.threshold
            out["own_cap"] = b.own_cap
            out["reading"] = {
                "tenant_count": b.tenant_count,
                "threshold": b.threshold,
                "read_at": datetime.fromtimestamp(b.last_read_at, UTC).isoformat(),
                "own_hour": b.own_hour,
            }
        return out

    def call_summary(self) -> dict[str, Any]:
        """Return calls by kind, the threshold-counted total and the budget state (for run reports)."""
        return {
            "api_calls": self.api_calls,
            "by_kind": dict(self.calls),
            "metadata_cached": dict(self.cache_hits),
            "budget": self.budget.as_dict(),
        }

    # ---- zone discovery (§1) ------------------------------------------------------------------------

    def _zone_key(self) -> tuple[str, str]:
        s = self.settings
        return s.discovery_url, s.user.lower()

    @property
    def root(self) -> str:
        """The zone's REST root (`https://webservicesN.autotask.net/ATServicesRest/V1.0`), discovered once."""
        if self._zone_root is None:
            self._zone_root, self._zone_name = self._lookup_zone()
        return self._zone_root

    @property
    def zone_name(self) -> str | None:
        _ = self.root
        return self._zone_name

    def _lookup_zone(self) -> tuple[str, str | None]:
        s = self.settings
        if s.zone_url:
            return s.zone_url, None
        key = self._zone_key()
        now = self._clock()
        with _ZONES_LOCK:
            hit = _ZONES.get(key)
        if hit and now - hit[2] < s.zone_cache_ttl:
            return hit[0], hit[1]
        stored = self.ledger.zone("|".join(key))
        if stored and now - stored[2] < s.zone_cache_ttl:
            with _ZONES_LOCK:
                _ZONES[key] = stored
            return stored[0], stored[1]
        return self.discover_zone()

    def discover_zone(self) -> tuple[str, str | None]:
        """Ask `zoneInformation?user=` where the tenant lives; cache the answer (process and ledger)."""
        import httpx

        s = self.settings
        url = s.discovery_url
        try:
            resp = self.client.get(url, params={"user": s.user})
        except httpx.HTTPError as exc:
            _raise_if_tls_config(exc, url)
            raise RetriableSourceError(
                f"Autotask zone discovery unreachable: {type(exc).__name__}: {exc}", where=url
            ) from exc
        self._count("zone")
        self.statuses[resp.status_code] = self.statuses.get(resp.status_code, 0) + 1
        body = _json_or_none(resp)
        if resp.status_code != 200:
            errors = _errors_of(resp)
            message = "; ".join(errors) or resp.text[:200] or resp.reason_phrase
            if resp.status_code == 500 and errors:
                # An unknown or empty user name is answered with 500, not 404 (§1, observed).
                raise AuthError(
                    f"Autotask zone discovery does not know the API user {s.user!r}: {message}",
                    where=url,
                    details={"status": resp.status_code, "errors": errors},
                )
            if resp.status_code >= 500 or resp.status_code == 429:
                raise RetriableSourceError(
                    f"Autotask zone discovery failed (HTTP {resp.status_code}): {message}", where=url
                )
            raise FatalSourceError(
                f"Autotask zone discovery refused (HTTP {resp.status_code}): {message}", where=url
            )
        if not isinstance(body, dict) or not isinstance(body.get("url"), str) or not body["url"]:
            raise FatalSourceError(
                f"Autotask zone discovery answered without a 'url': {resp.text[:200]!r}", where=url
            )
        root, name = _rest_root(body["url"]), body.get("zoneName")
        now = self._clock()
        with _ZONES_LOCK:
            _ZONES[self._zone_key()] = (root, name, now)
        self.ledger.save_zone("|".join(self._zone_key()), root, name, now)
        self._zone_root, self._zone_name = root, name
        log.info("Autotask zone of %s: %s (%s)", s.user, name, root)
        return root, name

    def forget_zone(self) -> None:
        """Drop the cached zone everywhere (after a 401: the tenant may have moved)."""
        key = self._zone_key()
        with _ZONES_LOCK:
            _ZONES.pop(key, None)
        self.ledger.forget_zone("|".join(key))
        self._zone_root = self._zone_name = None

    # ---- the budget (§8) ------------------------------------------------------------------------------

    def threshold_information(self, *, reserved: bool = False) -> dict[str, Any]:
        """Return `ThresholdInformation` (the tenant's threshold and its count in the current hour).

        :param reserved: the budget already counted this call in the ledger (`_admit`); else it is
            counted once sent (the UI's Test button).
        """
        body = self._request(
            "GET",
            "ThresholdInformation",
            kind="threshold",
            entity="ThresholdInformation",
            budgeted=False,
            reserved=reserved,
        )
        if not isinstance(body, dict) or "currentTimeframeRequestCount" not in body:
            raise FatalSourceError(
                f"ThresholdInformation answered without currentTimeframeRequestCount: {str(body)[:200]}",
                where="ThresholdInformation",
            )
        b = self.budget
        b.threshold = int(body.get("externalRequestThreshold") or 10_000)
        b.tenant_count = int(body["currentTimeframeRequestCount"])
        b.tenant_read_at = b.last_read_at = self._clock()
        b.own_calls_at_read = self.api_calls
        b.total_at_read = self.ledger.total(self.settings.budget_key)
        b.own_cap = int(self.settings.budget_share * b.threshold)
        # The other tasks on the host may use this reading for a short while instead of reading again.
        self.ledger.save_threshold(
            self.settings.budget_key, b.threshold, b.tenant_count, b.tenant_read_at, b.total_at_read
        )
        return body

    def _adopt_shared_reading(self, now: float, total: int) -> bool:
        """Take over another task's fresh `ThresholdInformation` reading from the ledger (no call)."""
        s, b = self.settings, self.budget
        shared = self.ledger.threshold(s.budget_key)
        if shared is None:
            return False
        threshold, tenant_count, read_at, total_at_read = shared
        if not self._reading_fresh(threshold, tenant_count, read_at, total_at_read, now, total):
            return False
        if b.tenant_read_at is not None and read_at <= b.tenant_read_at:
            return False  # not newer than what this hook already found stale
        b.threshold, b.tenant_count, b.tenant_read_at, b.total_at_read = (
            threshold,
            tenant_count,
            read_at,
            total_at_read,
        )
        b.own_calls_at_read = self.api_calls
        b.last_read_at = read_at
        b.own_cap = int(s.budget_share * threshold)
        b.shared_reads += 1
        return True

    def _reading_fresh(
        self, threshold: int, tenant_count: int, read_at: float, total_at_read: int, now: float, total: int
    ) -> bool:
        """Whether a reading still describes the tenant well enough to go on without reading again.

        Our own calls since the reading are counted exactly (the ledger) and added to it; what a reading
        cannot know is the other integrations' calls since, which grow with time. So a reading is used
        for ``threshold_share_ttl`` seconds (60 at most). Near the lines (the estimate at half the
        slowdown share or more) it is also read again every ``threshold_every`` calls of ours; far below
        them (under 35 % of the threshold by default, 5,000 calls from the stop line at 10,000) the
        minute alone bounds what others could add unseen.
        """
        s = self.settings
        if not 0 <= now - read_at < s.threshold_share_ttl:
            return False
        near = tenant_count + (total - total_at_read) >= s.tenant_slowdown_share * threshold / 2
        return not (near and total - total_at_read >= s.threshold_every)

    def _drop_reading(self) -> None:
        """Forget the tenant's count here and in the ledger: the next call, of any task, reads it anew."""
        self.budget.tenant_read_at = None
        self.ledger.forget_threshold(self.settings.budget_key)

    def _own_window(self, now: float) -> list[tuple[int, int]]:
        return self.ledger.window(self.settings.budget_key, now)

    def _admit(self, where: str) -> None:
        """Wait or refuse before a call that would pass the share or bring the tenant near its threshold.

        A `ThresholdInformation` read is a call too: it is sent only when it fits the share (checked
        with the last known threshold), so neither the read nor the call after it ever passes the share.
        """
        s, b = self.settings, self.budget
        while True:
            now = self._clock()
            # This package's calls since the reading, from every task on the host (the ledger's counter).
            total = self.ledger.total(s.budget_key)
            stale = (
                b.tenant_read_at is None
                or b.threshold is None
                or b.tenant_count is None
                or not self._reading_fresh(
                    b.threshold, b.tenant_count, b.tenant_read_at, b.total_at_read, now, total
                )
            )
            if stale and not self._adopt_shared_reading(now, total):
                known = b.threshold or self.ledger.last_threshold(s.budget_key) or DEFAULT_THRESHOLD
                window = self._own_window(now)
                b.own_hour = sum(n for _, n in window)
                cap = int(s.budget_share * known)
                reserved = None if b.own_hour + 1 > cap else self.ledger.reserve(s.budget_key, now, cap)
                if reserved is None:  # no room, or another task took the last of it
                    b.own_hour = max(b.own_hour, cap)
                    self._hold(*self._share_wait(self._own_window(now), cap, known, now), where)
                    continue
                self.threshold_information(reserved=True)
                now = self._clock()
                total = self.ledger.total(s.budget_key)
            assert b.threshold is not None and b.tenant_count is not None and b.own_cap is not None
            window = self._own_window(now)
            b.own_hour = sum(n for _, n in window)
            tenant = b.tenant_count + max(total - b.total_at_read, self.api_calls - b.own_calls_at_read)
            stop = int(s.tenant_stop_share * b.threshold)
            if b.own_hour + 1 > b.own_cap:
                self._hold(*self._share_wait(window, b.own_cap, b.threshold, now), where)
                continue
            if tenant + 1 > stop:
                # ThresholdInformation does not say when old requests leave the window: assume an even spread.
                excess = tenant + 1 - stop
                wait = min(max(excess * 3600 / max(tenant, 1), 60.0), 3600.0)
                reason = (
                    f"the tenant has used {tenant} of its {b.threshold} requests this hour (all integrations); "
                    f"this package stops at {s.tenant_stop_share:.0%} so the tenant never reaches its threshold"
                )
                self._hold(wait, reason, where, tenant=tenant)
                continue
            if tenant >= s.tenant_slowdown_share * b.threshold and s.slowdown_seconds > 0:
                self._pause(s.slowdown_seconds, where, "tenant above the slowdown share")
                b.slowed_calls += 1
                now = self._clock()
            # Check and count in one step of the ledger: tasks at the same moment never pass the share.
            reserved = self.ledger.reserve(s.budget_key, now, b.own_cap)
            if reserved is None:
                continue  # another task took the last room meanwhile: the check above now says how long
            b.own_hour = reserved
            return

    def _share_wait(
        self, window: list[tuple[int, int]], cap: int, threshold: int, now: float
    ) -> tuple[float, str]:
        """How long until this package's rolling hour has room for one more call, and why it waits."""
        b, s = self.budget, self.settings
        # The oldest minutes of the rolling hour free up first.
        excess, freed, wait = b.own_hour + 1 - cap, 0, 3600.0
        for minute, n in window:
            freed += n
            if freed >= excess:
                wait = max((minute + 60) * 60 - now, 1.0)
                break
        return wait, (
            f"this package used {b.own_hour} of its {cap} requests per hour "
            f"({s.budget_share:.0%} of the tenant's {threshold})"
        )

    def _hold(self, wait: float, reason: str, where: str, *, tenant: int | None = None) -> None:
        """Wait `wait` seconds in place when `max_wait` allows, else raise `RateLimitedError`."""
        s, b = self.settings, self.budget
        if b.waited_seconds + wait > s.max_wait:
            self._drop_reading()  # whoever calls again later must see the tenant's count anew
            raise RateLimitedError(
                f"Autotask request budget reached: {reason}; retry in {wait:.0f} s",
                retry_after=wait,
                where=where,
                details={
                    "own_hour": b.own_hour,
                    "own_cap": b.own_cap,
                    "tenant_count": tenant if tenant is not None else b.tenant_count,
                    "threshold": b.threshold,
                },
            )
        log.warning("Autotask budget: %s; waiting %.0f s", reason, wait)
        self._pause(wait, where, reason)
        self._drop_reading()  # read the tenant's count again after the wait

    def _pause(self, seconds: float, where: str, why: str) -> None:
        self.budget.waited_seconds += seconds
        log.debug("Autotask: pausing %.2f s before %s (%s)", seconds, where, why)
        self._sleep(seconds)

    # ---- transport --------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return path if path.startswith(("https://", "http://")) else f"{self.root}/{path.lstrip('/')}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        kind: str,
        entity: str,
        action: str | None = None,
        json_body: Any = None,
        params: dict | None = None,
        write: bool = False,
        budgeted: bool = True,
        reserved: bool = False,
    ) -> Any:
        """Send one call with auth, budget, 401 rediscovery, 429 backoff and safe retries; return its JSON.

        Retried: 429 always (the call was refused); transport errors and 5xx without a validation message
        for everything but creates (POST to an entity), which may have been stored (§9).
        """
        import httpx

        s = self.settings
        action = action or kind
        retries = rate_waits = 0
        rediscovered = False
        creates = method == "POST" and kind == "create"
        while True:
            url = self._url(path)
            where = f"{method} {urllib.parse.urlsplit(url).path}"
            if budgeted:
                self._admit(where)  # reserves the call in the ledger
            counted, reserved = budgeted or reserved, False  # a resend is reserved again (or recorded)
            headers = self._auth_headers()
            if json_body is not None:
                headers["Content-Type"] = "application/json"
            try:
                resp = self.client.request(method, url, params=params, json=json_body, headers=headers)
            except httpx.HTTPError as exc:
                _raise_if_tls_config(exc, url)
                # The call may have reached Autotask: count it against the budget all the same.
                self._record(kind, counted)
                if not creates and retries < s.max_retries:
                    retries += 1
                    self._pause(min(s.retry_backoff * 2 ** (retries - 1), 30), where, "transport error")
                    continue
                hint = (
                    " (the record may have been created: look it up before creating it again)"
                    if creates
                    else ""
                )
                raise RetriableSourceError(
                    f"Autotask {action} {entity} unreachable: {type(exc).__name__}: {exc}{hint}", where=where
                ) from exc
            self._record(kind, counted)
            status = resp.status_code
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status < 400:
                body = _json_or_none(resp)
                if resp.content and body is None:
                    raise FatalSourceError(
                        f"Autotask {action} {entity} answered HTTP {status} with a body that is not JSON: "
                        f"{resp.text[:200]!r}",
                        where=where,
                    )
                return body
            if (
                status == 401
                and not rediscovered
                and not s.zone_url
                and not path.startswith(("https://", "http://"))
            ):
                # Wrong zone or moved tenant: discover again once, then the credentials are at fault (§1, §9).
                rediscovered = True
                log.info("Autotask answered 401 at %s; discovering the zone again", where)
                self.forget_zone()
                self.discover_zone()
                continue
            if status == 401:
                raise AuthError(
                    f"Autotask refused API user {s.user!r} at {self.root} (HTTP 401"
                    + (" after a fresh zone discovery" if rediscovered else "")
                    + f"): {'; '.join(_errors_of(resp)) or 'check the user name, secret and integration code'}",
                    where=where,
                    details={"status": 401, "entity": entity},
                )
            if status == 429:
                rate_waits += 1
                self.budget.rate_limited += 1
                self._drop_reading()  # every task on the host reads the tenant's count anew
                wait = _retry_after(resp)
                if wait is None:
                    wait = s.rate_limit_backoff * 2 ** (rate_waits - 1)
                if rate_waits > 8 or self.budget.waited_seconds + wait > s.max_wait:
                    err = _classify(resp, entity=entity, action=action, where=where, write=write)
                    raise RateLimitedError(
                        f"{err.message}; gave up after {rate_waits} answers and {self.budget.waited_seconds:.0f} s "
                        "of waiting",
                        retry_after=wait,
                        where=where,
                        details=err.details,
                    )
                log.warning("Autotask answered 429 at %s; waiting %.1f s", where, wait)
                self._pause(wait, where, "429")
                continue
            error = _classify(resp, entity=entity, action=action, where=where, write=write)
            if isinstance(error, RetriableSourceError) and not creates and retries < s.max_retries:
                retries += 1
                self._pause(min(s.retry_backoff * 2 ** (retries - 1), 30), where, f"HTTP {status}")
                continue
            if isinstance(error, RetriableSourceError) and creates:
                raise RetriableSourceError(
                    f"{error.message} (the record may have been created: look it up before creating it again)",
                    where=where,
                    details=error.details,
                )
            raise error

    def _record(self, kind: str, in_ledger: bool) -> None:
        """Count a call sent; into the ledger too unless its reservation counted it there already."""
        self._count(kind)
        if not in_ledger:
            self.ledger.record(self.settings.budget_key, self._clock())

    # ---- reading (§3, §4) ---------------------------------------------------------------------------------

    def _query_body(
        self, flt: Any, fields: Sequence[str] | None, max_records: int | None, entity: str
    ) -> dict[str, Any]:
        items = _as_filter(flt)
        check_filter(items, where=f"{entity}/query")
        body: dict[str, Any] = {"filter": items}
        if max_records is not None:
            if not 1 <= max_records <= PAGE_SIZE:
                raise ConfigError(
                    f"MaxRecords must be 1-{PAGE_SIZE}, got {max_records}", where=f"{entity}/query"
                )
            body["MaxRecords"] = max_records
        if fields:
            # Paging needs the id in every row (§4.1).
            body["IncludeFields"] = list(dict.fromkeys(["id", *fields]))
        return body

    def query_pages(
        self,
        entity: str,
        filter: Any = None,
        *,
        fields: Sequence[str] | None = None,
        max_records: int | None = None,
    ) -> Iterator[list[dict]]:
        """Yield pages (up to 500 rows, id ascending) of `POST {entity}/query`, following `nextPageUrl`.

        :param entity: the root entity, e.g. ``Companies``, ``Contacts``, ``Resources``.
        :param filter: a condition or a list of conditions (AND-ed) built with this module's helpers;
            None matches every record.
        :param fields: ``IncludeFields`` (``id`` is always added).
        :param max_records: rows per page (1-500; default the service's 500).
        """
        body = self._query_body(filter, fields, max_records, entity)
        data = self._request("POST", f"{entity}/query", kind="query", entity=entity, json_body=body)
        seen: set[str] = set()
        page_no = 1
        while True:
            where = f"{entity}/query page {page_no}"
            if not isinstance(data, dict) or not isinstance(data.get("items"), list):
                raise FatalSourceError(
                    f"Autotask answered a query without 'items': {str(data)[:200]}", where=where
                )
            yield data["items"]
            nxt = (data.get("pageDetails") or {}).get("nextPageUrl")
            if not nxt:
                return
            if nxt in seen:
                raise FatalSourceError(
                    f"Autotask sent the same nextPageUrl twice ({nxt}); stopping instead of looping",
                    where=where,
                )
            if _origin(nxt) != _origin(self.root):
                raise FatalSourceError(f"Autotask sent a nextPageUrl to another host: {nxt}", where=where)
            seen.add(nxt)
            page_no += 1
            data = self._request("GET", nxt, kind="query_next", entity=entity, action="query")

    def query(
        self, entity: str, filter: Any = None, *, fields: Sequence[str] | None = None
    ) -> Iterator[dict]:
        """Yield the records of `query_pages` one by one."""
        for page in self.query_pages(entity, filter, fields=fields):
            yield from page

    def query_in(
        self,
        entity: str,
        field_name: str,
        values: Iterable[Any],
        *,
        filter: Any = None,
        fields: Sequence[str] | None = None,
        chunk: int = MAX_OR_CONDITIONS,
    ) -> Iterator[dict]:
        """Yield records whose `field_name` is in `values`, one query per `chunk` values (§4.1's 500 ORs).

        :param filter: further conditions AND-ed to each chunk's `in`.
        """
        distinct = list(dict.fromkeys(v for v in values if v is not None))
        extra = _as_filter(filter) if filter is not None else []
        for start in range(0, len(distinct), chunk):
            yield from self.query(
                entity, [in_(field_name, distinct[start : start + chunk]), *extra], fields=fields
            )

    def count(self, entity: str, filter: Any = None) -> int:
        """Return how many records match (`POST {entity}/query/count`)."""
        body = {"filter": _as_filter(filter)}
        check_filter(body["filter"], where=f"{entity}/query/count")
        data = self._request("POST", f"{entity}/query/count", kind="count", entity=entity, json_body=body)
        if not isinstance(data, dict) or not isinstance(data.get("queryCount"), int):
            raise FatalSourceError(
                f"Autotask answered a count without 'queryCount': {str(data)[:200]}",
                where=f"{entity}/query/count",
            )
        return data["queryCount"]

    def get(self, entity: str, record_id: int, *, fields: Sequence[str] | None = None) -> dict | None:
        """Return one record by id, or None; a query with `id eq` (get-by-id errors on a missing id, §4.2)."""
        for row in self.query(entity, [eq("id", int(record_id))], fields=fields):
            return row
        return None

    def _metadata_prefix(self, entity: str | None = None) -> str:
        s = self.settings
        prefix = f"{s.discovery_url}|{s.zone_url or ''}|{s.user.lower()}|"
        return prefix if entity is None else f"{prefix}{entity.lower()}|"

    def _entity_information(self, entity: str, part: str, action: str, ttl: float) -> list[dict]:
        """Return `{entity}/entityInformation/{part}`, from the ledger while younger than `ttl` seconds.

        Every task of a run describes the same entities; the answers change rarely (picklists, UDFs), so
        the tasks share one reading. A write refused for an unknown picklist value or UDF drops it
        (`forget_metadata`), so the next read asks Autotask again.
        """
        s = self.settings
        key = self._metadata_prefix(entity) + part
        now = self._clock()
        if ttl > 0:
            hit = self.ledger.metadata(key)
            if hit is not None and 0 <= now - hit[1] < ttl and isinstance(hit[0], list):
                self.cache_hits[part] = self.cache_hits.get(part, 0) + 1
                return hit[0]
        data = self._request(
            "GET", f"{entity}/entityInformation/{part}", kind="metadata", entity=entity, action=action
        )
        if not isinstance(data, dict) or not isinstance(data.get("fields"), list):
            raise FatalSourceError(
                f"Autotask answered entityInformation/{part} without 'fields': {str(data)[:200]}",
                where=entity,
            )
        if max(s.metadata_ttl, s.picklist_ttl) > 0:
            self.ledger.save_metadata(key, data["fields"], self._clock())
        return data["fields"]

    def entity_fields(self, entity: str, *, ttl: float | None = None) -> list[dict]:
        """Return `{entity}/entityInformation/fields` (types, lengths, required, picklists with string values).

        Cached in the ledger for ``metadata_ttl`` seconds (default a day: field definitions change with
        the API version, and a write refused for a picklist value drops the entry), shared by the tasks.
        `picklist` asks for a reading younger than ``picklist_ttl`` (15 minutes): picklist values are the
        tenant's own data, which a mapping resolves labels against.
        """
        return self._entity_information(
            entity, "fields", "read fields of", self.settings.metadata_ttl if ttl is None else ttl
        )

    def udf_definitions(self, entity: str) -> list[dict]:
        """Return `{entity}/entityInformation/userDefinedFields` (name, type, picklist values); cached for
        ``metadata_ttl`` too (a write refused for a UDF, or a UDF created here, drops the entry)."""
        return self._entity_information(
            entity, "userDefinedFields", "read UDFs of", self.settings.metadata_ttl
        )

    def reference_rows(self, entity: str, fields: Sequence[str]) -> list[dict]:
        """Return every row of a reference entity (Countries: Autotask's own list), cached in the ledger
        for ``reference_ttl`` seconds (default a day) and shared by the tasks, like metadata."""
        s = self.settings
        key = f"{self._metadata_prefix(entity)}rows|{','.join(sorted(set(fields)))}"
        now = self._clock()
        if s.reference_ttl > 0:
            hit = self.ledger.metadata(key)
            if hit is not None and 0 <= now - hit[1] < s.reference_ttl and isinstance(hit[0], list):
                self.cache_hits["rows"] = self.cache_hits.get("rows", 0) + 1
                return hit[0]
        rows = list(self.query(entity, None, fields=fields))
        if s.reference_ttl > 0:
            self.ledger.save_metadata(key, rows, self._clock())
        return rows

    def _identity_key(self, entity: str, udf_name: str, value: str) -> str:
        return f"{self._metadata_prefix(entity)}id|{udf_name}|{value}"

    def remember_ids(self, entity: str, udf_name: str, pairs: Mapping[str, int]) -> None:
        """Keep `{identity value: Autotask id}` pairs just read, for the run's next tasks (`recall_ids`)."""
        if self.settings.identity_ttl > 0 and pairs:
            self.ledger.save_many(
                {self._identity_key(entity, udf_name, v): int(i) for v, i in pairs.items()}, self._clock()
            )

    def recall_ids(self, entity: str, udf_name: str, values: Iterable[str]) -> dict[str, int]:
        """Return the pairs `remember_ids` kept that are younger than ``identity_ttl`` (default 5 minutes).

        Read by one task of a run, used by the next (the plan's reads by the upsert): the run's verify
        reads every written record and its references back from Autotask, so a pair gone stale in
        those minutes is still caught there.
        """
        ttl = self.settings.identity_ttl
        values = [str(v) for v in values]
        if ttl <= 0 or not values:
            return {}
        keys = {self._identity_key(entity, udf_name, v): v for v in values}
        now = self._clock()
        out = {}
        for key, (body, read_at) in self.ledger.load_many(list(keys)).items():
            if 0 <= now - read_at < ttl and isinstance(body, int):
                out[keys[key]] = body
        if out:
            self.cache_hits["ids"] = self.cache_hits.get("ids", 0) + len(out)
        return out

    def forget_metadata(self, entity: str | None = None) -> None:
        """Drop the cached fields, picklists and UDF definitions of `entity` (None: of every entity)."""
        self.ledger.forget_metadata(self._metadata_prefix(entity))

    def _write(self, method: str, path: str, *, kind: str, entity: str, record: Mapping[str, Any]) -> Any:
        try:
            return self._request(
                method,
                path,
                kind=kind,
                entity=entity,
                action=kind,
                json_body=_wire_record(record),
                write=True,
            )
        except RecordError as exc:
            if _STALE_METADATA.search(exc.message) and entity not in self._metadata_refreshed:
                # The picklist or UDF may have changed since the cached reading: read it again, once per hook.
                self._metadata_refreshed.add(entity)
                log.info(
                    "Autotask refused a %s value (%s); dropping the cached metadata", entity, exc.message
                )
                self.forget_metadata(None if entity.lower() == "userdefinedfielddefinitions" else entity)
            raise

    def picklist(self, entity: str, field_name: str, *, active_only: bool = True) -> dict[str, int]:
        """Return `{label: value}` of a picklist field (values are strings on the wire, ints in records, §7)."""
        for f in self.entity_fields(entity, ttl=self.settings.picklist_ttl):
            if f.get("name", "").lower() == field_name.lower():
                return {
                    str(v.get("label")): int(v["value"])
                    for v in f.get("picklistValues") or []
                    if not active_only or v.get("isActive", True)
                }
        raise ConfigError(
            f"Autotask {entity} has no field {field_name!r}", where=f"{entity}/entityInformation/fields"
        )

    # ---- writing (§3, §6) ----------------------------------------------------------------------------------

    def _write_path(self, entity: str, record: Mapping[str, Any], action: str) -> str:
        child = CHILD_ENTITIES.get(entity)
        if child is None:
            return entity
        parent, parent_field = child
        parent_id = next((v for k, v in record.items() if k.lower() == parent_field.lower()), None)
        if parent_id in (None, ""):
            raise RecordError(
                f"Autotask {entity} are {action}d under their {parent[:-1].lower()}: the record has no {parent_field}",
                where=f"{entity}",
                details={"entity": entity},
            )
        return f"{parent}/{int(parent_id)}/{entity}"

    def create(self, entity: str, record: Mapping[str, Any]) -> int:
        """Create one record and return its id (`{"itemId": n}`); Contacts go under their company.

        Never resent after a lost answer or a 5xx (it may exist): look it up by its UDF first.
        """
        path = self._write_path(entity, record, "create")
        data = self._write("POST", path, kind="create", entity=entity, record=record)
        if entity.lower() == "userdefinedfielddefinitions":
            self.forget_metadata()  # a new UDF: every entity's cached definitions are out of date
        return _item_id(data, f"POST {path}")

    def create_contact(self, company_id: int, record: Mapping[str, Any]) -> int:
        """Create a contact under `Companies/{company_id}/Contacts` (the only place Autotask allows it)."""
        return self.create("Contacts", {**record, "companyID": int(company_id)})

    def update(self, entity: str, record: Mapping[str, Any]) -> int:
        """PATCH the given fields of one record (`id` required); untouched fields stay as they are.

        Never PUT: a PUT clears every omitted field, and a round-tripped record trips length checks on
        fields nobody changed (§3, §12 #7).
        """
        if record.get("id") in (None, ""):
            raise RecordError(
                f"an update of Autotask {entity} needs the record's id",
                where=entity,
                details={"entity": entity},
            )
        path = self._write_path(entity, record, "update")
        data = self._write("PATCH", path, kind="update", entity=entity, record=record)
        return _item_id(data, f"PATCH {path}")

    # ---- status ---------------------------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Discover the zone and read the tenant's threshold: proves user, secret and integration code."""
        try:
            root = self.root
            info = self.threshold_information()
        except SyncError as exc:
            return False, str(exc)
        except Exception as exc:  # the UI button must answer, whatever broke
            return False, f"{type(exc).__name__}: {exc}"
        zone = f"zone {self._zone_name} ({root})" if self._zone_name else root
        return True, (
            f"Connected to Autotask {zone} as {self.settings.user}; the tenant used "
            f"{info['currentTimeframeRequestCount']} of {info.get('externalRequestThreshold')} requests this hour, "
            f"this package may use {self.settings.budget_share:.0%}"
        )


def _wire_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Dates as Autotask wants them; UDFs as `[{name, value}]` with string values (§6)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "userDefinedFields" and isinstance(value, Mapping):
            value = [{"name": k, "value": None if v is None else str(v)} for k, v in value.items()]
        elif key == "userDefinedFields" and isinstance(value, list):
            value = [
                {"name": u["name"], "value": None if u.get("value") is None else str(u["value"])}
                for u in value
            ]
        else:
            value = _wire_value(value)
        out[key] = value
    return out


def _item_id(data: Any, where: str) -> int:
    if not isinstance(data, dict) or data.get("itemId") is None:
        raise FatalSourceError(f"Autotask answered without an itemId: {str(data)[:200]}", where=where)
    return int(data["itemId"])
