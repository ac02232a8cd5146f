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
* further extras (defaults in `Settings`): ``timeout``, ``max_wait``, ``max_retries``, ``retry_backoff``,
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
Its parts: `_autotask_filters` (filter builders, re-exported here), `_autotask_settings` (the connection's
settings), `_autotask_errors` (refusals to error groups), `_autotask_budget` (rule 1, mixed into the hook)
and `_autotask_ledger` (the ledgers); import the public names from this module.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
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
from erpsync.hooks._autotask_budget import DEFAULT_THRESHOLD, BudgetMixin, BudgetStatus
from erpsync.hooks._autotask_errors import (
    STALE_METADATA,
    classify,
    errors_of,
    json_or_none,
    origin,
    raise_if_tls_config,
    retry_after,
)
from erpsync.hooks._autotask_filters import (
    MAX_OR_CONDITIONS,
    OPERATORS,
    and_,
    as_filter,
    begins_with,
    check_filter,
    contains,
    ends_with,
    eq,
    everything,
    exist,
    gt,
    gte,
    in_,
    lt,
    lte,
    not_exist,
    not_in,
    noteq,
    or_,
    udf,
    wire_value,
)
from erpsync.hooks._autotask_ledger import SqliteLedger, SqlLedger, default_ledger_path, open_ledger
from erpsync.hooks._autotask_settings import (
    DISCOVERY_BASE,
    Settings,
    blank_to_none,
    discovery_url,
    rest_root,
    share,
)

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

#: Rows per page, the service's maximum (§4.2).
PAGE_SIZE = 500
#: Entities created and updated under a parent (§3): entity -> (parent path, parent id field).
CHILD_ENTITIES: dict[str, tuple[str, str]] = {"Contacts": ("Companies", "companyID")}

# The connection form is declared with the provider info (erpsync.provider_info), which Airflow
# loads during provider discovery, so it must not import this module.
from erpsync.provider_info import AUTOTASK_CONNECTION as CONNECTION_TYPE_INFO  # noqa: E402

# ---- the zone cache (process); the ledger (erpsync.hooks._autotask_ledger) shares it across processes ----

_ZONES: dict[tuple[str, str], tuple[str, str | None, float]] = {}  # (discovery url, user) -> (root, name, at)
_ZONES_LOCK = threading.Lock()


# ---- the hook -------------------------------------------------------------------------------------------------------


class AutotaskHook(BudgetMixin, BaseHook):
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
    def settings(self) -> Settings:
        conn_id = self.autotask_conn_id
        conn = self.get_connection(conn_id)
        extra = {k: blank_to_none(v) for k, v in (conn.extra_dejson or {}).items()}

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

        user, secret = blank_to_none(conn.login), blank_to_none(conn.password)
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
        host = blank_to_none(conn.host)
        if host and conn.port and "://" not in host:
            host = f"{host}:{conn.port}"
        resource = extra.get("impersonation_resource_id")
        try:
            resource = int(resource) if resource is not None else None
        except (TypeError, ValueError):
            raise ConfigError(
                f"impersonation_resource_id {resource!r} is not a resource id", where=conn_id
            ) from None
        slowdown = share(extra.get("tenant_slowdown_share"), "tenant_slowdown_share", 0.7, conn_id)
        stop = share(extra.get("tenant_stop_share"), "tenant_stop_share", 0.85, conn_id)
        if slowdown > stop:
            raise ConfigError("tenant_slowdown_share must not exceed tenant_stop_share", where=conn_id)
        ca_bundle = extra.get("ca_bundle")
        return Settings(
            conn_id=conn_id,
            user=str(user).strip(),
            secret=str(secret),
            integration_code=str(code).strip(),
            discovery_url=discovery_url(host),
            zone_url=rest_root(extra["zone_url"]) if extra.get("zone_url") else None,
            impersonation_resource_id=resource,
            verify=ca_bundle if ca_bundle else True,
            timeout=knob("timeout", 60.0),
            budget_share=share(
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
            raise_if_tls_config(exc, url)
            raise RetriableSourceError(
                f"Autotask zone discovery unreachable: {type(exc).__name__}: {exc}", where=url
            ) from exc
        self._count("zone")
        self.statuses[resp.status_code] = self.statuses.get(resp.status_code, 0) + 1
        body = json_or_none(resp)
        if resp.status_code != 200:
            errors = errors_of(resp)
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
        root, name = rest_root(body["url"]), body.get("zoneName")
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
                raise_if_tls_config(exc, url)
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
                body = json_or_none(resp)
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
                    + f"): {'; '.join(errors_of(resp)) or 'check the user name, secret and integration code'}",
                    where=where,
                    details={"status": 401, "entity": entity},
                )
            if status == 429:
                rate_waits += 1
                self.budget.rate_limited += 1
                self._drop_reading()  # every task on the host reads the tenant's count anew
                wait = retry_after(resp)
                if wait is None:
                    wait = s.rate_limit_backoff * 2 ** (rate_waits - 1)
                if rate_waits > 8 or self.budget.waited_seconds + wait > s.max_wait:
                    err = classify(resp, entity=entity, action=action, where=where, write=write)
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
            error = classify(resp, entity=entity, action=action, where=where, write=write)
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
        items = as_filter(flt)
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
            if origin(nxt) != origin(self.root):
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
        extra = as_filter(filter) if filter is not None else []
        for start in range(0, len(distinct), chunk):
            yield from self.query(
                entity, [in_(field_name, distinct[start : start + chunk]), *extra], fields=fields
            )

    def count(self, entity: str, filter: Any = None) -> int:
        """Return how many records match (`POST {entity}/query/count`)."""
        body = {"filter": as_filter(filter)}
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
            if STALE_METADATA.search(exc.message) and entity not in self._metadata_refreshed:
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
            s = self.settings
            # The read is a call like any other: it must fit this package's share (never one past it).
            known = self.budget.threshold or self.ledger.last_threshold(s.budget_key) or DEFAULT_THRESHOLD
            cap = int(s.budget_share * known)
            if self.ledger.reserve(s.budget_key, self._clock(), cap) is None:
                return False, (
                    f"Autotask {root} not asked: this package used its {cap} requests of the rolling hour "
                    f"({s.budget_share:.0%} of the tenant's {known}); try again when the hour frees up"
                )
            info = self.threshold_information(reserved=True)
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
            value = wire_value(value)
        out[key] = value
    return out


def _item_id(data: Any, where: str) -> int:
    if not isinstance(data, dict) or data.get("itemId") is None:
        raise FatalSourceError(f"Autotask answered without an itemId: {str(data)[:200]}", where=where)
    return int(data["itemId"])
