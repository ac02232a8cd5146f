"""Salesforce hook: the provider's connection and auth, plus streaming, batching, limits and retries.

Why not just the provider's ``SalesforceHook``: it reads a whole query into memory (``query_all``), writes
one record per call or through a Bulk operator that drops per-record failures, and knows nothing about
the org's daily API quota. This hook keeps the provider's connection type, form and extras (and uses the
provider's own hook to log in when no token URL is configured) and adds:

- streamed SOQL (`query_batches`, `query_window` for SystemModstamp windows, `bulk_query_batches` for big
  extracts): one page of records at a time, ``nextRecordsUrl``/``Sforce-Locator`` followed and checked;
- writes (`upsert`, `insert`, `update`) through sObject Collections in chunks of 200; upserts and updates
  switch to Bulk API 2.0 from ``bulk_threshold`` records (inserts never do: Bulk results carry no key to
  match them back to input rows). Both paths return one `RecordResult` per input record, failures
  included, in input order;
- describe-based checks before writing (`check_fields`): unknown or read-only fields fail the whole call
  with a `ConfigError`; over-long values, bad restricted picklist values and missing required fields fail
  only their record, before anything is sent;
- limit awareness: every response's ``Sforce-Limit-Info`` is read; above ``api_usage_slowdown`` the hook
  slows down, above ``api_usage_stop`` it stops with `RateLimitedError` rather than exhaust a quota all the
  org's integrations share;
- retries of retryable failures only (``UNABLE_TO_LOCK_ROW`` per record, 5xx, timeouts, dropped
  connections on idempotent calls, concurrent-request limits) with jittered exponential backoff, within
  ``max_retries``; an expired session is renewed once.

The module imports nothing heavy: requests, simple_salesforce and the provider are imported on first use.

Connection (type ``salesforce``; id ``salesforce_default``). Login/password/extras are the provider's
(``security_token``, ``domain``, ``consumer_key``, ``consumer_secret``, ``private_key``,
``private_key_file_path``, ``client_id``, ``instance_url``, ``version``). This hook adds extras:

``login_url``
    Where to get an OAuth token (``https://acme.my.salesforce.com``, or the sandbox URL). When set, the hook
    runs the OAuth flow itself (JWT bearer if a private key is given, else username-password + security
    token, else client credentials) and keeps the ``instance_url`` the token response names. When unset,
    the provider's hook logs in through simple-salesforce (``login.salesforce.com``/``domain``).
``ca_bundle``
    A PEM file of CAs to trust (the sandbox CA). Verification is never turned off.
``timeout``, ``max_retries``, ``retry_base_delay``, ``bulk_threshold``, ``bulk_poll_interval``,
``bulk_timeout``, ``api_usage_slowdown``, ``api_usage_stop``, ``throttle_seconds``
    Behaviour knobs; see `SalesforceHook.__init__`. Precedence: hook argument > connection extra > default.
"""

from __future__ import annotations

import csv
import io
import json
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from erpsync.errors import AuthError, ConfigError, FatalSourceError, RateLimitedError, RetriableSourceError

if TYPE_CHECKING:
    import requests
    from simple_salesforce import Salesforce

__all__ = ["RecordFailure", "RecordResult", "SalesforceHook"]

DEFAULT_API_VERSION = "62.0"
COLLECTION_SIZE = 200
#: Per-record error codes worth sending again (row locks, a busy org); anything else is the record's fault.
RETRYABLE_RECORD_CODES = frozenset(
    {"UNABLE_TO_LOCK_ROW", "API_TEMPORARILY_UNAVAILABLE", "SERVER_UNAVAILABLE"}
)
_CONFIG_CODES = frozenset(
    {
        "INVALID_FIELD",
        "INVALID_TYPE",
        "MALFORMED_QUERY",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "INVALID_QUERY_FILTER_OPERATOR",
        "NOT_FOUND",
        "INVALIDENTITY",
        "INVALIDJOB",
    }
)
_STRING_TYPES = frozenset(
    {
        "string",
        "textarea",
        "email",
        "phone",
        "url",
        "picklist",
        "multipicklist",
        "combobox",
        "encryptedstring",
    }
)


@dataclass
class RecordFailure:
    """One reason Salesforce (or the pre-flight check) refused a record."""

    code: str
    message: str
    fields: list[str] = field(default_factory=list)


@dataclass
class RecordResult:
    """What happened to one input record; `index` is its position in the caller's list."""

    index: int
    key: Any
    success: bool
    id: str | None = None
    created: bool | None = None
    errors: list[RecordFailure] = field(default_factory=list)
    attempts: int = 0
    #: "preflight" (refused before sending), "collections" or "bulk".
    via: str = ""

    @property
    def retryable(self) -> bool:
        return bool(self.errors) and all(e.code in RETRYABLE_RECORD_CODES for e in self.errors)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SalesforceHook(BaseHook):
    """Talk to one Salesforce org through a ``salesforce`` connection.

    :param salesforce_conn_id: the Airflow connection id.
    :param api_version: REST API version to pin (``version`` extra, else 62.0). Behaviour differs by
        version (upsert answers 204 instead of 200 below 46.0), so it is always explicit.
    :param timeout: seconds per HTTP call (``timeout`` extra, else 120).
    :param max_retries: retries per call and per record for retryable failures (extra, else 5).
    :param retry_base_delay: first backoff in seconds, doubled per retry with jitter, capped at 30.
    :param bulk_threshold: writes of at least this many records go through Bulk API 2.0 (extra, else 2000).
    :param api_usage_slowdown: share of the daily API quota above which calls are spaced out (0.8).
    :param api_usage_stop: share above which the hook refuses to call and raises RateLimitedError (0.95).
    """

    conn_name_attr = "salesforce_conn_id"
    default_conn_name = "salesforce_default"
    conn_type = "salesforce"
    hook_name = "Salesforce"

    def __init__(
        self,
        salesforce_conn_id: str = default_conn_name,
        *,
        api_version: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry_base_delay: float | None = None,
        bulk_threshold: int | None = None,
        bulk_poll_interval: float | None = None,
        bulk_timeout: float | None = None,
        api_usage_slowdown: float | None = None,
        api_usage_stop: float | None = None,
        throttle_seconds: float | None = None,
    ) -> None:
        super().__init__()
        self.conn_id = salesforce_conn_id
        self._args = {
            "version": api_version,
            "timeout": timeout,
            "max_retries": max_retries,
            "retry_base_delay": retry_base_delay,
            "bulk_threshold": bulk_threshold,
            "bulk_poll_interval": bulk_poll_interval,
            "bulk_timeout": bulk_timeout,
            "api_usage_slowdown": api_usage_slowdown,
            "api_usage_stop": api_usage_stop,
            "throttle_seconds": throttle_seconds,
        }
        self._client: Salesforce | None = None
        self._describes: dict[str, dict] = {}
        #: (used, max) from the last Sforce-Limit-Info header seen.
        self.api_usage: tuple[int, int] | None = None
        #: Calls this hook made, by kind ("query", "collections", "bulk", "auth", ...), for reports.
        self.calls: dict[str, int] = {}
        self._rng = random.Random()

    # ----- connection form (the provider's, plus our extras) -----------------------------------
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the provider's widgets plus ``login_url`` and ``ca_bundle``."""
        from airflow.providers.salesforce.hooks.salesforce import SalesforceHook as ProviderHook
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import StringField

        widgets = ProviderHook.get_connection_form_widgets()
        widgets["login_url"] = StringField(lazy_gettext("OAuth Login URL"), widget=BS3TextFieldWidget())
        widgets["ca_bundle"] = StringField(lazy_gettext("CA Bundle (PEM path)"), widget=BS3TextFieldWidget())
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow.providers.salesforce.hooks.salesforce import SalesforceHook as ProviderHook

        return ProviderHook.get_ui_field_behaviour()

    # ----- configuration -----------------------------------------------------------------------
    @cached_property
    def _connection(self):
        return self.get_connection(self.conn_id)

    @cached_property
    def extras(self) -> dict[str, Any]:
        extra = self._connection.extra_dejson
        # The UI stores blank fields as "", and old connections prefix extras; treat both like the provider.
        out = {}
        for key, value in extra.items():
            name = key.removeprefix("extra__salesforce__")
            out[name] = value if value != "" else None
        return out

    def _opt(self, name: str, default: Any, cast: type = float) -> Any:
        """Return hook argument > connection extra > default, cast to the option's type."""
        value = self._args.get(name)
        if value is None:
            value = self.extras.get(name)
        if value is None:
            return default
        try:
            return cast(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"connection extra {name!r} must be a {cast.__name__}, got {value!r}",
                where=f"connection {self.conn_id}",
            ) from exc

    @property
    def version(self) -> str:
        return str(self._opt("version", DEFAULT_API_VERSION, str))

    # ----- auth ----------------------------------------------------------------------------------
    def _http_session(self) -> requests.Session:
        import requests

        session = requests.Session()
        ca_bundle = self.extras.get("ca_bundle")
        if ca_bundle:
            from pathlib import Path

            if not Path(ca_bundle).is_file():
                raise ConfigError(
                    f"ca_bundle {ca_bundle!r} is not a readable file", where=f"connection {self.conn_id}"
                )
            session.verify = str(ca_bundle)
            # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override session.verify when the call passes
            # none (simple-salesforce passes none), so the environment must not be trusted here.
            session.trust_env = False
        return session

    def get_conn(self) -> Salesforce:
        """Return an authenticated simple-salesforce client (logged in on first use, then cached)."""
        if self._client is None:
            self._client = self._login()
        return self._client

    def close(self) -> None:
        """Close the HTTP connections (keep-alive sockets) and forget the session; the next call logs in."""
        if self._client is not None:
            self._client.session.close()
            self._client = None

    def _login(self) -> Salesforce:
        login_url = self.extras.get("login_url")
        session = self._http_session()
        self._count("auth")
        if not login_url:
            # No token URL: the provider's hook logs in exactly as it always has (SOAP password + token,
            # JWT or client credentials against login/test/My Domain), over our session.
            from airflow.providers.salesforce.hooks.salesforce import SalesforceHook as ProviderHook

            try:
                logged_in = ProviderHook(salesforce_conn_id=self.conn_id, session=session).get_conn()
            except Exception as exc:  # simple-salesforce raises its own hierarchy; classify at this edge
                raise AuthError(
                    f"Salesforce login failed: {exc}", where=f"connection {self.conn_id}"
                ) from exc
            if logged_in.sf_version == self.version:
                return logged_in
            # The provider falls back to simple-salesforce's default version; keep the one this hook pins
            # (behaviour differs by version), reusing the session it just opened.
            from simple_salesforce import Salesforce

            return Salesforce(
                instance=logged_in.sf_instance,
                session_id=logged_in.session_id,
                version=self.version,
                session=session,
            )
        token = self._oauth_token(session, login_url.rstrip("/"))
        from simple_salesforce import Salesforce

        return Salesforce(
            instance_url=token["instance_url"],
            session_id=token["access_token"],
            version=self.version,
            session=session,
        )

    def _oauth_token(self, session: requests.Session, login_url: str) -> dict:
        """Run the OAuth flow the connection's fields point at and return the token response."""
        import requests

        conn, extras = self._connection, self.extras
        consumer_key = extras.get("consumer_key") or extras.get("client_id")
        consumer_secret = extras.get("consumer_secret") or extras.get("client_secret")
        private_key = extras.get("private_key")
        if not private_key and extras.get("private_key_file_path"):
            try:
                with open(extras["private_key_file_path"]) as fh:
                    private_key = fh.read()
            except OSError as exc:
                raise ConfigError(
                    f"private_key_file_path cannot be read: {exc}", where=f"connection {self.conn_id}"
                ) from exc
        if private_key and conn.login and consumer_key:
            import jwt

            domain = extras.get("domain") or "login"
            audience = (
                extras.get("jwt_audience")
                or f"https://{'test' if domain == 'test' else 'login'}.salesforce.com"
            )
            assertion = jwt.encode(
                {"iss": consumer_key, "sub": conn.login, "aud": audience, "exp": int(time.time()) + 170},
                private_key,
                algorithm="RS256",
            )
            form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
            flow = "JWT bearer"
        elif conn.login and conn.password:
            form = {
                "grant_type": "password",
                "client_id": consumer_key or "",
                "client_secret": consumer_secret or "",
                "username": conn.login,
                "password": conn.password + (extras.get("security_token") or ""),
            }
            flow = "username-password"
        elif consumer_key and consumer_secret:
            form = {
                "grant_type": "client_credentials",
                "client_id": consumer_key,
                "client_secret": consumer_secret,
            }
            flow = "client credentials"
        else:
            raise ConfigError(
                "the connection has no usable credentials: give login + password (+ security_token), "
                "or consumer_key + private key (JWT), or consumer_key + consumer_secret",
                where=f"connection {self.conn_id}",
            )
        url = f"{login_url}/services/oauth2/token"
        try:
            resp = session.post(url, data=form, timeout=self._opt("timeout", 120.0))
        except requests.exceptions.SSLError as exc:
            raise ConfigError(
                f"TLS verification of {login_url} failed (is ca_bundle right?): {exc}", where=url
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise RetriableSourceError(
                f"could not reach the Salesforce token endpoint: {exc}", where=url
            ) from exc
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code != 200 or "access_token" not in body:
            if resp.status_code >= 500:
                raise RetriableSourceError(f"token endpoint answered HTTP {resp.status_code}", where=url)
            raise AuthError(
                f"{flow} login refused: {body.get('error', resp.status_code)}: "
                f"{body.get('error_description', resp.text[:200])}",
                where=url,
                details={"status": resp.status_code, "error": body.get("error")},
            )
        if not body.get("instance_url", "").startswith("https://"):
            raise AuthError(
                f"token response has no https instance_url: {body.get('instance_url')!r}", where=url
            )
        self.log.info("Salesforce %s login OK, instance %s", flow, body["instance_url"])
        return body

    def test_connection(self) -> tuple[bool, str]:
        """Log in and read /limits (which does not count against the API quota); return (ok, message)."""
        try:
            limits = self.request("GET", "limits", kind="limits")
            daily = limits.get("DailyApiRequests", {})
            sf = self.get_conn()
            return True, (
                f"Connected to {sf.sf_instance} (API v{self.version}); daily API requests remaining "
                f"{daily.get('Remaining')}/{daily.get('Max')}"
            )
        except Exception as exc:  # the UI button shows the message; the hook's classes carry the detail
            return False, str(exc)

    # ----- the one HTTP path ---------------------------------------------------------------------
    def _count(self, kind: str) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1

    def _url(self, path: str) -> str:
        sf = self.get_conn()
        if path.startswith("https://"):
            return path
        if path.startswith("/"):
            return f"https://{sf.sf_instance}{path}"  # nextRecordsUrl and friends are instance-relative
        return f"{sf.base_url}{path}"

    def _backoff(self, attempt: int) -> float:
        base = self._opt("retry_base_delay", 1.0)
        return min(30.0, base * (2**attempt)) * (0.5 + self._rng.random() / 2)

    def _track_limits(self, headers) -> None:
        info = headers.get("Sforce-Limit-Info") or ""
        for part in info.split(";"):
            key, _, value = part.strip().partition("=")
            if key == "api-usage" and "/" in value:
                used, _, total = value.partition("/")
                if used.isdigit() and total.isdigit():
                    self.api_usage = (int(used), int(total))

    def _check_budget(self, kind: str) -> None:
        """Space calls out near the quota, refuse them at the stop mark (the quota is shared org-wide)."""
        if not self.api_usage or kind == "limits" or not self.api_usage[1]:
            return
        used, total = self.api_usage
        share = used / total
        if share >= self._opt("api_usage_stop", 0.95):
            raise RateLimitedError(
                f"daily API usage at {used}/{total} ({share:.0%}), over the stop mark; not calling Salesforce "
                "until the rolling 24-hour window frees up",
                retry_after=3600.0,
                where="Sforce-Limit-Info",
                details={"used": used, "max": total},
            )
        if share >= self._opt("api_usage_slowdown", 0.8):
            pause = self._opt("throttle_seconds", 1.0)
            self.log.warning("Daily API usage %d/%d: pausing %.1fs between calls", used, total, pause)
            time.sleep(pause)

    def request(
        self,
        method: str,
        path: str,
        *,
        kind: str = "rest",
        idempotent: bool | None = None,
        raw: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Call the API once (plus retries) and return parsed JSON (or the response when `raw`).

        Retries 5xx, timeouts, dropped connections and concurrency limits with backoff; renews an expired
        session once; raises the matching `erpsync.errors` class for everything else.

        :param idempotent: may the call be repeated after a connection failure? Defaults to True for
            GET/PATCH/PUT/DELETE (upserts are idempotent by external id) and False for POST.
        """
        import requests

        idempotent = method != "POST" if idempotent is None else idempotent
        retries = int(self._opt("max_retries", 5, int))
        timeout = self._opt("timeout", 120.0)
        extra_headers = kwargs.pop("headers", None) or {}
        renewed = False
        attempt = 0
        while True:
            self._check_budget(kind)
            sf = self.get_conn()
            url = self._url(path)
            headers = {**sf.headers, **extra_headers}
            self._count(kind)
            where = f"{method} {url.split('?')[0]}"
            try:
                resp = sf.session.request(method, url, headers=headers, timeout=timeout, **kwargs)
            except requests.exceptions.SSLError as exc:
                raise ConfigError(
                    f"TLS verification failed (is ca_bundle right?): {exc}", where=where
                ) from exc
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                if not idempotent or attempt >= retries:
                    raise RetriableSourceError(
                        f"connection to Salesforce failed: {exc}", where=where
                    ) from exc
                self.log.warning("%s: %s; retry %d/%d", where, exc, attempt + 1, retries)
                time.sleep(self._backoff(attempt))
                attempt += 1
                continue
            self._track_limits(resp.headers)
            if resp.status_code < 300 or (resp.status_code == 300 and raw):
                if raw:
                    return resp
                if resp.status_code == 204 or not resp.content:
                    return None
                try:
                    return resp.json()
                except ValueError as exc:
                    if idempotent and attempt < retries:
                        time.sleep(self._backoff(attempt))
                        attempt += 1
                        continue
                    raise RetriableSourceError(
                        f"Salesforce returned malformed JSON ({len(resp.content)} bytes, starts "
                        f"{resp.text[:60]!r}): {exc}",
                        where=where,
                    ) from exc
            code, message = _error_of(resp)
            if resp.status_code == 401 and not renewed:
                self.log.info("Session expired or invalid; logging in again")
                self._client = None
                renewed = True
                continue
            if resp.status_code == 401:
                raise AuthError(f"{code}: {message}", where=where, details={"status": 401})
            if code == "REQUEST_LIMIT_EXCEEDED" and "TotalRequests" in message:
                raise RateLimitedError(
                    f"{code}: {message} (the org's daily API quota is used up)",
                    retry_after=3600.0,
                    where=where,
                    details={"status": resp.status_code},
                )
            transient = resp.status_code >= 500 or code in (
                "REQUEST_LIMIT_EXCEEDED",
                "SERVER_UNAVAILABLE",
                "UNABLE_TO_LOCK_ROW",
                "API_TEMPORARILY_UNAVAILABLE",
            )
            if transient and (idempotent or resp.status_code != 500) and attempt < retries:
                self.log.warning(
                    "%s: HTTP %d %s; retry %d/%d", where, resp.status_code, code, attempt + 1, retries
                )
                time.sleep(self._backoff(attempt))
                attempt += 1
                continue
            details = {"status": resp.status_code, "errorCode": code}
            if transient:
                cls = RateLimitedError if code == "REQUEST_LIMIT_EXCEEDED" else RetriableSourceError
                raise cls(f"{code}: {message} (after {attempt} retries)", where=where, details=details)
            if code in _CONFIG_CODES:
                raise ConfigError(f"{code}: {message}", where=where, details=details)
            raise FatalSourceError(f"{code}: {message}", where=where, details=details)

    # ----- reads ---------------------------------------------------------------------------------
    def query_batches(
        self, soql: str, *, include_deleted: bool = False, batch_size: int | None = None
    ) -> Iterator[list[dict]]:
        """Yield the query's records one page (up to 2,000) at a time, never the whole result.

        Records lose their ``attributes`` (nested parents keep their fields). A ``nextRecordsUrl`` seen
        twice would loop forever, so it raises `FatalSourceError`.
        """
        headers = {"Sforce-Query-Options": f"batchSize={batch_size}"} if batch_size else {}
        endpoint = "queryAll" if include_deleted else "query"
        page = self.request("GET", f"{endpoint}/", params={"q": soql}, kind="query", headers=headers)
        seen: set[str] = set()
        fetched = 0
        while True:
            records = page.get("records") if isinstance(page, dict) else None
            if not isinstance(records, list) or "done" not in page:
                raise FatalSourceError("query response has no records/done", where=f"SOQL {soql[:80]}")
            fetched += len(records)
            if records:
                yield [_strip_attributes(r) for r in records]
            if page["done"]:
                return
            nxt = page.get("nextRecordsUrl")
            if not nxt:
                raise FatalSourceError(
                    "query says done=false but gives no nextRecordsUrl",
                    where=f"SOQL {soql[:80]} after {fetched} records",
                )
            if nxt in seen:
                raise FatalSourceError(
                    f"nextRecordsUrl {nxt} came back twice; stopping instead of looping",
                    where=f"SOQL {soql[:80]} after {fetched} records",
                )
            seen.add(nxt)
            page = self.request("GET", nxt, kind="query", headers=headers)

    def query_window(
        self,
        sobject: str,
        fields: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        where: str | None = None,
        include_deleted: bool = False,
        batch_size: int | None = None,
    ) -> Iterator[list[dict]]:
        """Yield the records whose ``SystemModstamp`` lies in [start, end), oldest first.

        SystemModstamp, not LastModifiedDate: it also moves on system changes and is indexed everywhere.
        Both bounds are cut to whole seconds (SOQL datetime literals have none smaller), so consecutive
        windows still tile without gap or overlap.

        :param where: an extra SOQL condition ANDed to the window (written by the caller, not user input).
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ConfigError(
                "query_window needs timezone-aware datetimes (a naive one would be read as UTC "
                "on one machine and local time on another)",
                where=f"{sobject} window",
            )
        if end <= start:
            raise ConfigError(
                f"empty window: end {end.isoformat()} is not after start {start.isoformat()}",
                where=f"{sobject} window",
            )
        names = list(dict.fromkeys(["Id", "SystemModstamp", *fields]))
        condition = f"SystemModstamp >= {_soql_datetime(start)} AND SystemModstamp < {_soql_datetime(end)}"
        if where:
            condition = f"{condition} AND ({where})"
        soql = f"SELECT {', '.join(names)} FROM {sobject} WHERE {condition} ORDER BY SystemModstamp, Id"
        return self.query_batches(soql, include_deleted=include_deleted, batch_size=batch_size)

    def bulk_query_batches(
        self, soql: str, *, include_deleted: bool = False, max_records: int = 50_000
    ) -> Iterator[list[dict[str, str]]]:
        """Yield a Bulk API 2.0 query's CSV result pages as lists of dicts (values are strings)."""
        job = self.request(
            "POST",
            "jobs/query",
            kind="bulk",
            idempotent=True,
            json={"operation": "queryAll" if include_deleted else "query", "query": soql},
        )
        job = self._wait_for_job("query", job["id"])
        if job["state"] != "JobComplete":
            raise FatalSourceError(
                f"bulk query job {job['id']} ended {job['state']}: {job.get('errorMessage')}",
                where=f"SOQL {soql[:80]}",
            )
        locator: str | None = None
        seen: set[str] = set()
        while True:
            params = {"maxRecords": max_records, **({"locator": locator} if locator else {})}
            resp = self.request(
                "GET", f"jobs/query/{job['id']}/results", params=params, kind="bulk", raw=True
            )
            rows = list(csv.DictReader(io.StringIO(resp.text)))
            if rows:
                yield rows
            locator = resp.headers.get("Sforce-Locator")
            if not locator or locator == "null":
                return
            if locator in seen:
                raise FatalSourceError(
                    f"Sforce-Locator {locator} came back twice", where=f"bulk query {job['id']}"
                )
            seen.add(locator)

    def describe(self, sobject: str) -> dict:
        """Return the object's describe (cached for the hook's life: one call per object per task)."""
        key = sobject.lower()
        if key not in self._describes:
            self._describes[key] = self.request("GET", f"sobjects/{sobject}/describe", kind="describe")
        return self._describes[key]

    # ----- pre-flight checks ---------------------------------------------------------------------
    def check_fields(
        self,
        sobject: str,
        field_names: Iterable[str],
        *,
        operation: str,
        external_id_field: str | None = None,
    ) -> dict[str, dict]:
        """Refuse (ConfigError) fields the object lacks or the operation cannot write; return their describes.

        Relationship columns (``Account`` with a nested ``{"External_Id__c": ...}``) are checked against the
        reference field they stand for.
        """
        described = self.describe(sobject)
        by_name = {f["name"].lower(): f for f in described["fields"]}
        by_rel = {f["relationshipName"].lower(): f for f in described["fields"] if f.get("relationshipName")}
        out: dict[str, dict] = {}
        problems = []
        for name in field_names:
            fdef = by_name.get(name.lower()) or by_rel.get(name.lower())
            if fdef is None:
                problems.append(f"{name}: no such field on {sobject}")
                continue
            is_key = external_id_field and name.lower() == external_id_field.lower()
            if operation in ("insert", "upsert") and not fdef["createable"] and not is_key and name != "Id":
                problems.append(f"{name}: not createable on {sobject}")
            elif operation == "update" and not fdef["updateable"] and name != "Id":
                problems.append(f"{name}: not updateable on {sobject}")
            elif operation == "upsert" and not fdef["updateable"] and not fdef["createable"] and not is_key:
                problems.append(f"{name}: read-only on {sobject}")
            out[name] = fdef
        if external_id_field:
            fdef = by_name.get(external_id_field.lower())
            if fdef is None or not (fdef.get("externalId") or fdef["name"] == "Id"):
                problems.append(
                    f"{external_id_field}: not an External ID field on {sobject}, so it cannot be an "
                    "upsert key"
                )
        if problems:
            raise ConfigError("; ".join(problems), where=f"{sobject} {operation}")
        return out

    @staticmethod
    def _preflight(record: dict, fields: dict[str, dict], operation: str) -> list[RecordFailure]:
        """Find what Salesforce would refuse in one record (too long, bad picklist, required missing)."""
        errors = []
        for name, value in record.items():
            fdef = fields.get(name)
            if fdef is None or value is None or isinstance(value, dict):
                continue
            if fdef["type"] in _STRING_TYPES and fdef.get("length") and len(str(value)) > fdef["length"]:
                errors.append(
                    RecordFailure(
                        "STRING_TOO_LONG",
                        f"{fdef['name']}: data value too large: "
                        f"{len(str(value))} characters (max length={fdef['length']})",
                        [fdef["name"]],
                    )
                )
            if fdef["type"] == "picklist" and fdef.get("restrictedPicklist"):
                allowed = {p["value"] for p in fdef.get("picklistValues", []) if p.get("active")}
                if str(value) not in allowed:
                    errors.append(
                        RecordFailure(
                            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                            f"{fdef['name']}: bad value for restricted picklist field: {value}",
                            [fdef["name"]],
                        )
                    )
        for name, fdef in fields.items():
            if (
                name in record
                and record[name] in (None, "")
                and not fdef.get("nillable", True)
                and not fdef.get("defaultedOnCreate")
                and fdef["type"] != "boolean"
            ):
                errors.append(
                    RecordFailure(
                        "REQUIRED_FIELD_MISSING",
                        f"Required fields are missing: [{fdef['name']}]",
                        [fdef["name"]],
                    )
                )
        return errors

    # ----- writes --------------------------------------------------------------------------------
    def upsert(
        self,
        sobject: str,
        external_id_field: str,
        records: Sequence[dict],
        *,
        all_or_none: bool = False,
        mode: str = "auto",
    ) -> list[RecordResult]:
        """Insert or update `records` by `external_id_field`; return one result per record, in order.

        :param mode: ``"collections"`` (200 per call), ``"bulk"`` (Bulk API 2.0) or ``"auto"`` (bulk when
            there are at least ``bulk_threshold`` records).
        """
        return self.write(
            sobject,
            records,
            operation="upsert",
            external_id_field=external_id_field,
            all_or_none=all_or_none,
            mode=mode,
        )

    def insert(self, sobject: str, records: Sequence[dict], **kwargs: Any) -> list[RecordResult]:
        """Create `records` (not idempotent: prefer `upsert` for synced objects)."""
        return self.write(sobject, records, operation="insert", **kwargs)

    def update(self, sobject: str, records: Sequence[dict], **kwargs: Any) -> list[RecordResult]:
        """Update `records`, each of which carries its ``Id``."""
        return self.write(sobject, records, operation="update", **kwargs)

    def write(
        self,
        sobject: str,
        records: Sequence[dict],
        *,
        operation: str,
        external_id_field: str | None = None,
        all_or_none: bool = False,
        mode: str = "auto",
    ) -> list[RecordResult]:
        """Check, send and retry a batch of writes; every input record gets a `RecordResult`."""
        if operation not in _OPERATIONS:
            raise ConfigError(f"unknown operation {operation!r}; use one of {sorted(_OPERATIONS)}")
        if operation == "upsert" and not external_id_field:
            raise ConfigError("upsert needs external_id_field", where=f"{sobject} upsert")
        if mode not in ("auto", "collections", "bulk"):
            raise ConfigError(f"unknown mode {mode!r}; use auto, collections or bulk")
        if mode == "bulk" and all_or_none:
            raise ConfigError(
                "Bulk API 2.0 has no all-or-none mode; use mode='collections'", where=f"{sobject} {operation}"
            )
        if mode == "bulk" and operation == "insert":
            raise ConfigError(
                "Bulk insert results cannot be matched back to input rows (no key); use upsert "
                "with an external id, or mode='collections'",
                where=f"{sobject} insert",
            )
        key_field = external_id_field if operation == "upsert" else "Id" if operation == "update" else None
        names = sorted({k for r in records for k in r if k != "attributes"})
        fields = self.check_fields(sobject, names, operation=operation, external_id_field=external_id_field)
        results: list[RecordResult | None] = [None] * len(records)
        pending: list[int] = []
        last_seen: dict[str, int] = {}
        for i, rec in enumerate(records):
            key = rec.get(key_field) if key_field else None
            if key_field and key in (None, ""):
                results[i] = RecordResult(
                    i,
                    key,
                    False,
                    errors=[RecordFailure("MISSING_ARGUMENT", f"{key_field} not specified", [key_field])],
                    via="preflight",
                )
                continue
            problems = self._preflight(rec, fields, operation)
            if problems:
                results[i] = RecordResult(i, key, False, errors=problems, via="preflight")
                continue
            if key_field:
                norm = str(key).lower()
                if norm in last_seen:
                    # Salesforce fails every copy of a key sent twice in one call; keep the last copy.
                    j = last_seen[norm]
                    results[j] = RecordResult(
                        j,
                        records[j].get(key_field),
                        False,
                        errors=[
                            RecordFailure(
                                "DUPLICATE_EXTERNAL_ID",
                                f"{key_field} {key!r} appears again at index {i}; only the last copy is sent",
                                [key_field],
                            )
                        ],
                        via="preflight",
                    )
                    pending.remove(j)
                last_seen[norm] = i
            pending.append(i)
        threshold = int(self._opt("bulk_threshold", 2000, int))
        # Bulk needs a key to match results (so never for inserts) and cannot do all-or-none.
        bulk_ok = operation != "insert" and not all_or_none
        use_bulk = mode == "bulk" or (mode == "auto" and len(pending) >= threshold and bulk_ok)
        retries = int(self._opt("max_retries", 5, int))
        attempt = 0
        while pending:
            send = self._send_bulk if use_bulk else self._send_collections
            for i, res in send(sobject, operation, external_id_field, records, pending, all_or_none).items():
                res.attempts = attempt + 1
                results[i] = res
            pending = [i for i in pending if results[i] is not None and results[i].retryable]
            if not pending:
                break
            if attempt >= retries:
                self.log.warning(
                    "%d records still failing with retryable errors after %d retries", len(pending), retries
                )
                break
            self.log.info(
                "Retrying %d records with retryable errors (retry %d/%d)", len(pending), attempt + 1, retries
            )
            time.sleep(self._backoff(attempt))
            attempt += 1
            use_bulk = mode == "bulk" or (mode == "auto" and len(pending) >= threshold and bulk_ok)
        return [r for r in results if r is not None]

    def _send_collections(
        self,
        sobject: str,
        operation: str,
        ext: str | None,
        records: Sequence[dict],
        indexes: list[int],
        all_or_none: bool,
    ) -> dict[int, RecordResult]:
        out: dict[int, RecordResult] = {}
        method, path = _COLLECTION_CALLS[operation]
        if operation == "upsert":
            path = f"{path}/{sobject}/{ext}"
        key_field = ext if operation == "upsert" else "Id"
        for start in range(0, len(indexes), COLLECTION_SIZE):
            chunk = indexes[start : start + COLLECTION_SIZE]
            body = {
                "allOrNone": all_or_none,
                "records": [
                    {
                        "attributes": {"type": sobject},
                        **{k: v for k, v in records[i].items() if k != "attributes"},
                    }
                    for i in chunk
                ],
            }
            answer = self.request(
                method, path, json=body, kind="collections", idempotent=operation != "insert"
            )
            if not isinstance(answer, list) or len(answer) != len(chunk):
                raise FatalSourceError(
                    f"collection answer has {len(answer) if isinstance(answer, list) else 'no'} "
                    f"results for {len(chunk)} records",
                    where=f"{method} {path}",
                )
            for i, item in zip(chunk, answer, strict=True):
                errors = [
                    RecordFailure(
                        e.get("statusCode") or e.get("errorCode", "UNKNOWN"),
                        e.get("message", ""),
                        list(e.get("fields") or []),
                    )
                    for e in item.get("errors") or []
                ]
                out[i] = RecordResult(
                    i,
                    records[i].get(key_field),
                    bool(item.get("success")),
                    item.get("id"),
                    item.get("created", operation == "insert") if item.get("success") else None,
                    errors,
                    via="collections",
                )
            if all_or_none and any(not out[i].success for i in chunk):
                # A rolled-back chunk is only worth resending if every real failure was a lock.
                real = [
                    out[i]
                    for i in chunk
                    if out[i].errors and out[i].errors[0].code != "ALL_OR_NONE_OPERATION_ROLLED_BACK"
                ]
                if real and all(r.retryable for r in real):
                    for i in chunk:
                        if not out[i].retryable:
                            out[i].errors = [
                                RecordFailure(
                                    "UNABLE_TO_LOCK_ROW",
                                    "rolled back with the rest of an all-or-none chunk that hit a row lock",
                                )
                            ]
        return out

    def _send_bulk(
        self,
        sobject: str,
        operation: str,
        ext: str | None,
        records: Sequence[dict],
        indexes: list[int],
        all_or_none: bool,
    ) -> dict[int, RecordResult]:
        """Run one Bulk API 2.0 ingest job per ~90 MB of CSV and map its result CSVs back to the input.

        Result rows echo the uploaded columns but come in no promised order, so each is matched to its
        input record by the key column (the external id, or Id for updates); keys are unique per call.
        """
        out: dict[int, RecordResult] = {}
        key_field = ext if operation == "upsert" else "Id"
        for header, rows in _split_csv(records, indexes):
            body = {
                "object": sobject,
                "operation": operation,
                "contentType": "CSV",
                "lineEnding": "LF",
                "columnDelimiter": "COMMA",
                **({"externalIdFieldName": ext} if ext else {}),
            }
            job = self.request("POST", "jobs/ingest", json=body, kind="bulk", idempotent=True)
            self.request(
                "PUT",
                f"jobs/ingest/{job['id']}/batches",
                kind="bulk",
                raw=True,
                data=_csv_text(header, [row for _, row in rows]).encode("utf-8"),
                headers={"Content-Type": "text/csv"},
            )
            self.request("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"}, kind="bulk")
            final = self._wait_for_job("ingest", job["id"])
            by_key = {str(records[i].get(key_field)).lower(): i for i, _ in rows}
            reason = final.get("errorMessage") or "no reason given"
            for kind in ("successfulResults", "failedResults", "unprocessedrecords"):
                for row in self._result_rows(job["id"], kind):
                    i = by_key.pop(str(row.get(key_field, "")).lower(), None)
                    if i is None:
                        self.log.warning(
                            "Bulk job %s: %s row with unknown key %r ignored",
                            job["id"],
                            kind,
                            row.get(key_field),
                        )
                        continue
                    key = records[i].get(key_field)
                    if kind == "successfulResults":
                        out[i] = RecordResult(
                            i,
                            key,
                            True,
                            row.get("sf__Id"),
                            row.get("sf__Created", "").lower() == "true",
                            via="bulk",
                        )
                    elif kind == "failedResults":
                        out[i] = RecordResult(
                            i,
                            key,
                            False,
                            row.get("sf__Id") or None,
                            errors=[_parse_bulk_error(row.get("sf__Error", ""))],
                            via="bulk",
                        )
                    else:
                        out[i] = RecordResult(
                            i,
                            key,
                            False,
                            errors=[
                                RecordFailure(
                                    "UNPROCESSED",
                                    f"job {job['id']} ended {final['state']} before this row: {reason}",
                                )
                            ],
                            via="bulk",
                        )
            for i in by_key.values():
                out[i] = RecordResult(
                    i,
                    records[i].get(key_field),
                    False,
                    errors=[
                        RecordFailure(
                            "MISSING_RESULT",
                            f"job {job['id']} ({final['state']}) reported nothing for this row: {reason}",
                        )
                    ],
                    via="bulk",
                )
        return out

    def _result_rows(self, job_id: str, kind: str) -> list[dict[str, str]]:
        resp = self.request("GET", f"jobs/ingest/{job_id}/{kind}/", kind="bulk", raw=True)
        return list(csv.DictReader(io.StringIO(resp.text)))

    def _wait_for_job(self, kind: str, job_id: str) -> dict:
        """Poll a Bulk job with growing pauses until it is JobComplete, Failed or Aborted."""
        interval = self._opt("bulk_poll_interval", 2.0)
        deadline = time.monotonic() + self._opt("bulk_timeout", 3600.0)
        while True:
            job = self.request("GET", f"jobs/{kind}/{job_id}", kind="bulk")
            if job["state"] in ("JobComplete", "Failed", "Aborted"):
                return job
            if time.monotonic() > deadline:
                raise RetriableSourceError(
                    f"bulk job still {job['state']} at the timeout", where=f"jobs/{kind}/{job_id}"
                )
            time.sleep(interval)
            interval = min(30.0, interval * 1.5)


_OPERATIONS = frozenset({"insert", "update", "upsert"})
_COLLECTION_CALLS = {
    "insert": ("POST", "composite/sobjects"),
    "update": ("PATCH", "composite/sobjects"),
    "upsert": ("PATCH", "composite/sobjects"),
}
_BULK_MAX_BYTES = 90 * 1024 * 1024


def _error_of(resp) -> tuple[str, str]:
    """Pull (errorCode, message) out of any of Salesforce's error shapes."""
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP_{resp.status_code}", resp.text[:300] or resp.reason
    if isinstance(body, list) and body and isinstance(body[0], dict):
        first = body[0]
        return str(first.get("errorCode") or first.get("statusCode") or f"HTTP_{resp.status_code}"), str(
            first.get("message", "")
        )
    if isinstance(body, dict):
        if "error" in body:
            return str(body["error"]), str(body.get("error_description", ""))
        return str(body.get("errorCode", f"HTTP_{resp.status_code}")), str(
            body.get("message", json.dumps(body)[:300])
        )
    return f"HTTP_{resp.status_code}", str(body)[:300]


def _soql_datetime(moment: datetime) -> str:
    """Render an aware datetime as a SOQL literal in UTC, cut to whole seconds."""
    from datetime import UTC

    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _strip_attributes(record: dict) -> dict:
    """Drop ``attributes`` from a record, its parents and the records of its child subqueries."""
    out = {}
    for key, value in record.items():
        if key == "attributes":
            continue
        if isinstance(value, dict) and isinstance(value.get("records"), list):
            value = {**value, "records": [_strip_attributes(r) for r in value["records"]]}
        elif isinstance(value, dict):
            value = _strip_attributes(value)
        out[key] = value
    return out


def _csv_cell(value: Any) -> str:
    if value is None:
        return "#N/A"  # Bulk API: an empty cell leaves the field alone, #N/A clears it
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _flatten(record: dict) -> dict[str, str]:
    out = {}
    for key, value in record.items():
        if key == "attributes":
            continue
        if isinstance(value, dict):
            for sub, subval in value.items():
                if sub != "attributes":
                    out[f"{key}.{sub}"] = _csv_cell(subval)
        else:
            out[key] = _csv_cell(value)
    return out


def _split_csv(
    records: Sequence[dict], indexes: list[int]
) -> Iterator[tuple[list[str], list[tuple[int, dict]]]]:
    """Group rows into uploads below the Bulk size limit, each with the union of its rows' columns."""
    part: list[tuple[int, dict]] = []
    size = 0
    for i in indexes:
        flat = _flatten(records[i])
        row_size = sum(len(v) + 3 for v in flat.values())
        if part and size + row_size > _BULK_MAX_BYTES:
            yield sorted({k for _, r in part for k in r}), part
            part, size = [], 0
        part.append((i, flat))
        size += row_size
    if part:
        yield sorted({k for _, r in part for k in r}), part


def _csv_text(header: list[str], rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(h, "") for h in header])
    return buf.getvalue()


def _parse_bulk_error(text: str) -> RecordFailure:
    """Parse ``CODE:message:field1,field2 --`` (the sf__Error format) into a RecordFailure."""
    body = text.rstrip()
    body = body[:-2].rstrip() if body.endswith("--") else body
    code, _, rest = body.partition(":")
    message, _, fields = rest.rpartition(":")
    if not message:
        message, fields = rest, ""
    return RecordFailure(
        code.strip() or "UNKNOWN", message.strip(), [f for f in fields.split(",") if f.strip()]
    )
