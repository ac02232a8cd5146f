"""Exact Online hook: OAuth with one-time refresh tokens, division by name or code, paging, API limits.

Connection (`exact_online`, default id `exact_online_default`):

* login / password: the app's client id and client secret.
* host: the site's base URL, e.g. `https://start.exactonline.nl` (one per region) or the sandbox URL;
  https only (a plain-http URL is a ConfigError).
* extra: `division` (code) or `division_name` (the administration's exact name, as App4Sales asks),
  `refresh_token` (from the consent flow; seeds the token store), `redirect_uri`, `token_store_url`
  (SQLAlchemy URL; SQLite under AIRFLOW_HOME by default, PostgreSQL when workers run on several hosts),
  `token_encryption_key` (Fernet key for the tokens at rest; default: Airflow's fernet key),
  `store_key`, `ca_bundle`, `timeout`, `minutely_margin` (calls kept in reserve per minute),
  `daily_reserve` (calls kept in reserve per day), `refresh_margin`, `max_rate_limit_wait`,
  `max_retries` and `retry_backoff` (GET/PUT on 5xx and transport errors), `budget_path` (SQLite
  file of the call budget shared by the host's Exact tasks; default under AIRFLOW_HOME) or
  `budget_url` (PostgreSQL, for workers on several hosts), `minute_seconds` / `day_seconds` (the
  limit windows; Exact's are 60 and 86,400).

Budget: every call that carries a division is first reserved in the shared ledger
(`erpsync.hooks._exact_budget`): Exact's 60 calls a minute and 5,000 a day per app and division
(or the limits its `X-RateLimit-*` headers announce) hold for all flows and tasks together; a spent
minute is waited out, a spent day is a RateLimitedError before anything is sent. `usage()` gives
the hook's calls and the budget's figures for run reports.

Precedence: hook argument > connection extra > default. Errors follow `erpsync.errors`:

    AuthError            consent revoked, refresh token dead, wrong client secret (a human must act)
    ConfigError          unknown division (the message lists the available ones), bad connection
    RateLimitedError     the division's daily quota is spent (not retried before the reset)
    RetriableSourceError 5xx, timeouts, a minutely 429 that outlasted the wait budget
    FatalSourceError     other refusals, malformed responses, a repeated `__next` link
    RecordError          one record refused by a write (POST/PUT); the others go on

The module is cheap to import: httpx and SQLAlchemy load on first use, never at DAG parse time.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
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
from erpsync.hooks._exact_budget import default_budget_path

if TYPE_CHECKING:
    import httpx

    from erpsync.hooks._exact_budget import SqlBudget, SqliteBudget, Windows
    from erpsync.hooks._exact_tokens import TokenPair, TokenStore

__all__ = ["CONNECTION_TYPE_INFO", "ExactOnlineHook", "RateLimitState", "WriteResult", "pad_account_code"]

log = logging.getLogger(__name__)

#: Sync endpoints by regular entity path (reference §7); the service segment is case-insensitive.
SYNC_PATHS = {
    "crm/accounts": "CRM/Accounts",
    "crm/contacts": "CRM/Contacts",
    "logistics/items": "Logistics/Items",
    "logistics/salesitemprices": "Logistics/SalesItemPrices",
    "salesorder/salesorders": "SalesOrder/SalesOrderHeaders",
    "salesorder/salesorderlines": "SalesOrder/SalesOrderLines",
    "salesorder/goodsdeliveries": "SalesOrder/GoodsDeliveries",
    "salesorder/goodsdeliverylines": "SalesOrder/GoodsDeliveryLines",
    "inventory/stockpositions": "Inventory/StockPositions",
    "deleted": "Deleted",
}
BULK_PATHS = {
    "crm/accounts": "CRM/Accounts",
    "crm/contacts": "CRM/Contacts",
    "logistics/items": "Logistics/Items",
    "logistics/salesitemprices": "Logistics/SalesItemPrices",
    "salesorder/salesorders": "SalesOrder/SalesOrders",
    "salesorder/salesorderlines": "SalesOrder/SalesOrderLines",
    "salesorder/goodsdeliveries": "SalesOrder/GoodsDeliveries",
    "salesorder/goodsdeliverylines": "SalesOrder/GoodsDeliveryLines",
}
#: Entities whose key is not `ID` (reference §11.6).
KEYS = {
    "salesorder/salesorders": "OrderID",
    "salesorder/goodsdeliveries": "EntryID",
    "inventory/stockpositions": "ItemId",
}


#: The `connection-types` entry for the package's provider info (`apache_airflow_provider` entry point).
#: Airflow 3 builds the connection form from `conn-fields` without importing the hook; the older
#: `get_connection_form_widgets` needs Flask-AppBuilder, which Airflow 3 no longer installs.
# The connection form is declared with the provider info (erpsync.provider_info), which Airflow
# loads during provider discovery, so it must not import this module.
from erpsync.provider_info import EXACT_ONLINE_CONNECTION as CONNECTION_TYPE_INFO  # noqa: E402


def pad_account_code(code: str | int) -> str:
    """Return an account code as Exact stores it: right-aligned in 18 characters (filters need this)."""
    text = str(code).strip()
    if len(text) > 18:
        raise RecordError(f"account code '{text}' is longer than Exact's 18 characters")
    return text.rjust(18)


def odata_quote(value: str) -> str:
    """Quote a string literal for `$filter` (single quotes, doubled inside)."""
    return "'" + str(value).replace("'", "''") + "'"


@dataclass
class RateLimitState:
    """What Exact last told us about one division's quota (epoch-ms resets turned into seconds)."""

    daily_limit: int | None = None
    daily_remaining: int | None = None
    daily_reset: float | None = None
    minutely_limit: int | None = None
    minutely_remaining: int | None = None
    minutely_reset: float | None = None
    waited_seconds: float = 0.0
    calls: int = 0

    def update(self, headers: httpx.Headers) -> None:
        def num(name: str) -> int | None:
            raw = headers.get(name)
            try:
                return int(raw) if raw is not None else None
            except ValueError:
                return None

        if headers.get("X-RateLimit-Remaining") is not None:
            self.daily_limit = num("X-RateLimit-Limit")
            self.daily_remaining = num("X-RateLimit-Remaining")
            reset = num("X-RateLimit-Reset")
            self.daily_reset = reset / 1000 if reset else None
        if headers.get("X-RateLimit-Minutely-Remaining") is not None:
            self.minutely_limit = num("X-RateLimit-Minutely-Limit")
            self.minutely_remaining = num("X-RateLimit-Minutely-Remaining")
            reset = num("X-RateLimit-Minutely-Reset")
            self.minutely_reset = reset / 1000 if reset else None


@dataclass
class WriteResult:
    """The outcome of one record of a batch write: the created/updated key or the error."""

    index: int
    ok: bool
    key: str | None = None
    record: dict | None = None
    error: RecordError | None = None


@dataclass(frozen=True)
class _Settings:
    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    division: int | None
    division_name: str | None
    refresh_token: str | None = field(repr=False)
    redirect_uri: str | None
    token_store_url: str | None = field(repr=False)
    store_key: str
    verify: Any
    timeout: float
    minutely_margin: int
    daily_reserve: int
    refresh_margin: float
    max_rate_limit_wait: float
    max_retries: int
    retry_backoff: float
    budget_path: str
    budget_url: str | None = field(repr=False)
    minute_seconds: float
    day_seconds: float
    extra: dict = field(default_factory=dict, repr=False)  # may hold the refresh token and keys


def _blank_to_none(value: Any) -> Any:
    # The connection form stores empty strings for untouched fields; treat them as "not set".
    return None if isinstance(value, str) and not value.strip() else value


class ExactOnlineHook(BaseHook):
    """Talk to one Exact Online division of one connection.

    :param exact_online_conn_id: the Airflow connection id.
    :param division: division code; overrides the connection's `division`/`division_name`.
    :param division_name: exact division (administration) name; overrides the connection's.
    :param timeout: HTTP timeout in seconds.
    :param token_store_url: SQLAlchemy URL of the token store; overrides the connection's.
    """

    conn_name_attr = "exact_online_conn_id"
    default_conn_name = "exact_online_default"
    conn_type = "exact_online"
    hook_name = "Exact Online"

    def __init__(
        self,
        exact_online_conn_id: str = default_conn_name,
        *,
        division: int | str | None = None,
        division_name: str | None = None,
        timeout: float | None = None,
        token_store_url: str | None = None,
    ):
        super().__init__()
        self.exact_online_conn_id = exact_online_conn_id
        self._division_arg = division
        self._division_name_arg = division_name
        self._timeout_arg = timeout
        self._token_store_arg = token_store_url
        self.limits: dict[int, RateLimitState] = {}
        self.calls = 0  # every HTTP call sent (token calls aside)
        self.metered_calls = 0  # those that count toward the division's limits
        self.calls_by_kind: dict[str, int] = {}
        self.rate_limited = 0

    # ---- Airflow UI ------------------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel the standard fields (Airflow 3 reads the same from CONNECTION_TYPE_INFO, see below)."""
        behaviour = CONNECTION_TYPE_INFO["ui-field-behaviour"]
        return {
            "hidden_fields": behaviour["hidden-fields"],
            "relabeling": behaviour["relabeling"],
            "placeholders": behaviour["placeholders"],
        }

    # ---- configuration ---------------------------------------------------------------------------

    @cached_property
    def settings(self) -> _Settings:
        conn = self.get_connection(self.exact_online_conn_id)
        extra = {k: _blank_to_none(v) for k, v in (conn.extra_dejson or {}).items()}
        host = _blank_to_none(conn.host)
        if not host:
            raise ConfigError(
                "the connection has no host: set the Exact base URL", where=self.exact_online_conn_id
            )
        if "://" not in host:
            scheme = extra.get("scheme") or _blank_to_none(conn.schema) or "https"
            host = f"{scheme}://{host}"
        if conn.port and host.count(":") < 2:
            host = f"{host}:{conn.port}"
        if urllib.parse.urlsplit(host).scheme.lower() != "https":
            # Exact Online is https-only; a plain-http base URL would send the client secret and the
            # rotating refresh token in clear text. No exception, not even for loopback.
            raise ConfigError(
                f"the Exact base URL must use https, got {host!r}: Exact Online serves https only "
                "(for a private CA such as the sandbox's, set the connection extra 'ca_bundle')",
                where=self.exact_online_conn_id,
            )
        if not conn.login or not conn.password:
            raise ConfigError(
                "the connection needs the client id (login) and client secret (password)",
                where=self.exact_online_conn_id,
            )
        division = self._division_arg if self._division_arg is not None else extra.get("division")
        division_name = self._division_name_arg or (
            None if self._division_arg is not None else extra.get("division_name")
        )
        if division is not None:
            try:
                division = int(division)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"division '{division}' is not a number", where=self.exact_online_conn_id
                ) from None
        ca_bundle = extra.get("ca_bundle")
        base = host.rstrip("/")
        return _Settings(
            base_url=base,
            client_id=conn.login,
            client_secret=conn.password,
            division=division,
            division_name=division_name,
            refresh_token=extra.get("refresh_token"),
            redirect_uri=extra.get("redirect_uri"),
            token_store_url=self._token_store_arg or extra.get("token_store_url"),
            store_key=f"{base}|{conn.login}|{extra.get('store_key') or self.exact_online_conn_id}",
            verify=ca_bundle if ca_bundle else True,
            timeout=float(self._timeout_arg or extra.get("timeout") or 60),
            minutely_margin=int(extra.get("minutely_margin") or 0),
            daily_reserve=int(extra.get("daily_reserve") or 0),
            refresh_margin=float(extra.get("refresh_margin") or 10),
            max_rate_limit_wait=float(extra.get("max_rate_limit_wait") or 90),
            max_retries=int(extra.get("max_retries") if extra.get("max_retries") is not None else 3),
            retry_backoff=float(extra.get("retry_backoff") or 0.5),
            budget_path=extra.get("budget_path") or default_budget_path(),
            budget_url=extra.get("budget_url"),
            minute_seconds=_positive(
                extra.get("minute_seconds"), 60.0, "minute_seconds", self.exact_online_conn_id
            ),
            day_seconds=_positive(
                extra.get("day_seconds"), 86_400.0, "day_seconds", self.exact_online_conn_id
            ),
            extra=extra,
        )

    @cached_property
    def client(self) -> httpx.Client:
        """The HTTP client, built on first use (never at parse time)."""
        import httpx

        s = self.settings
        return httpx.Client(
            verify=s.verify,
            timeout=s.timeout,
            headers={"Accept": "application/json", "User-Agent": "erpsync-exact-hook"},
        )

    def get_conn(self) -> httpx.Client:
        return self.client

    @cached_property
    def token_store(self) -> TokenStore:
        from erpsync.hooks._exact_tokens import TokenStore

        return TokenStore(
            self.settings.token_store_url, encryption_key=self.settings.extra.get("token_encryption_key")
        )

    @cached_property
    def budget(self) -> SqliteBudget | SqlBudget:
        """The call ledger every Exact task shares (`erpsync.hooks._exact_budget`)."""
        from erpsync.hooks._exact_budget import open_budget

        return open_budget(path=self.settings.budget_path, url=self.settings.budget_url)

    @property
    def _windows(self) -> Windows:
        from erpsync.hooks._exact_budget import Windows

        s = self.settings
        return Windows(s.minute_seconds, s.day_seconds, s.minutely_margin, s.daily_reserve)

    def _budget_key(self, division: int) -> str:
        """Exact counts per app and division, whichever connection or task calls."""
        return f"{self.settings.base_url}|{self.settings.client_id}|{division}"

    def _reserve(self, division: int, state: RateLimitState, where: str) -> None:
        """Take one call from the shared budget; wait out a spent minute, refuse a spent day."""
        key = self._budget_key(division)
        while True:
            now = time.time()
            got = self.budget.reserve(key, now, self._windows)
            if got.granted:
                return
            if got.limit == "daily":
                raise RateLimitedError(
                    f"Exact Online daily API budget of division {division} is used up "
                    f"({got.day_used} of {got.day_limit} calls, counted for every Exact task); "
                    f"it resets at {_iso(got.reset_at)}",
                    retry_after=got.reset_at - now,
                    where=where,
                    details={"limit": "daily", "reset": got.reset_at, "used": got.day_used},
                )
            self._wait(state, got.reset_at - now + 0.01, where)

    def usage(self) -> dict[str, Any]:
        """This hook's Exact calls and the shared budget's figures, for run reports (`calls["api"]`)."""
        out: dict[str, Any] = {
            "system": "exact_online",
            "calls": self.metered_calls,
            "by_kind": dict(self.calls_by_kind),
            "waited_seconds": round(sum(st.waited_seconds for st in self.limits.values()), 3),
            "rate_limited": self.rate_limited,
        }
        division = self.__dict__.get("division")
        if division is not None and "budget" in self.__dict__:
            figures = self.budget.used(self._budget_key(division), time.time(), self._windows)
            out.update(
                daily_limit=figures["day_limit"],
                daily_used=figures["day_used"],
                minutely_limit=figures["minute_limit"],
            )
        return out

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
        if "budget" in self.__dict__:
            self.budget.close()
            del self.__dict__["budget"]

    # ---- OAuth ---------------------------------------------------------------------------------------

    def _refresh(self, refresh_token: str) -> TokenPair:
        """Call the token endpoint once; turn a refusal into AuthError (never retried blindly)."""
        import httpx

        from erpsync.hooks._exact_tokens import TokenPair, refresh_refused

        s = self.settings
        url = f"{s.base_url}/api/oauth2/token"
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": s.client_id,
            "client_secret": s.client_secret,
        }
        try:
            resp = self.client.post(url, data=form)
        except httpx.HTTPError as exc:
            _raise_if_tls_config(exc, url)
            # The refresh token may or may not have been used: the lock stays with us, and the next
            # attempt will tell (a dead token then surfaces as AuthError, never as silent loss).
            raise RetriableSourceError(f"Exact token endpoint unreachable: {exc}", where=url) from exc
        if resp.status_code >= 500:
            raise RetriableSourceError(f"Exact token endpoint answered HTTP {resp.status_code}", where=url)
        body = _json_or_none(resp)
        if resp.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            if resp.status_code == 200:
                raise FatalSourceError(
                    f"Exact token endpoint sent an unreadable answer: {resp.text[:200]!r}", where=url
                )
            raise refresh_refused(resp.status_code, body if isinstance(body, dict) else {}, where=url)
        expires_in = str(body.get("expires_in", "600"))  # a string on the wire, e.g. "600"
        if not expires_in.isdigit():
            raise FatalSourceError(
                f"Exact token endpoint sent expires_in={expires_in!r}, not a number", where=url
            )
        log.info("Exact Online tokens refreshed for %s", s.store_key)
        return TokenPair(body["access_token"], body["refresh_token"], float(expires_in))

    def _access_token(self, stale: str | None = None) -> str:
        """Return the access token; the store is read only when the one in memory is (nearly) expired."""
        s = self.settings
        memo = self.__dict__.get("_token_memo")
        if memo is not None and memo[0] != stale and time.time() < memo[1]:
            return memo[0]
        token, expires_at = self.token_store.lease(
            s.store_key,
            bootstrap=s.refresh_token,
            refresh=self._refresh,
            margin=s.refresh_margin,
            stale=stale,
        )
        # Stop using it from memory at the same point the store would call it expired.
        lifetime = max(expires_at - time.time(), 0)
        self._token_memo = (token, expires_at - min(s.refresh_margin, 0.05 * lifetime))
        return token

    # ---- transport -----------------------------------------------------------------------------------

    def _limit_for(self, division: int | None) -> RateLimitState | None:
        return None if division is None else self.limits.setdefault(division, RateLimitState())

    def _before_call(self, state: RateLimitState | None, where: str) -> None:
        """Wait out a spent minute; refuse at once when the day is spent (waiting hours helps nobody)."""
        if state is None:
            return
        s = self.settings
        now = time.time()
        daily_open = state.daily_reset is not None and now < state.daily_reset
        if daily_open and state.daily_remaining is not None and state.daily_remaining <= s.daily_reserve:
            raise RateLimitedError(
                f"Exact Online daily API limit of this division is used up ({state.daily_limit} calls); "
                f"it resets at {_iso(state.daily_reset)}",
                retry_after=state.daily_reset - now,
                where=where,
                details={"limit": "daily", "reset": state.daily_reset},
            )
        minute_open = state.minutely_reset is not None and now < state.minutely_reset
        if (
            minute_open
            and state.minutely_remaining is not None
            and state.minutely_remaining <= s.minutely_margin
        ):
            self._wait(state, state.minutely_reset - now + 0.05, where)
            state.minutely_remaining = None

    def _wait(self, state: RateLimitState, seconds: float, where: str) -> None:
        if seconds > self.settings.max_rate_limit_wait:
            raise RateLimitedError(
                f"Exact Online asks to wait {seconds:.0f} s, more than max_rate_limit_wait "
                f"({self.settings.max_rate_limit_wait:.0f} s)",
                retry_after=seconds,
                where=where,
                details={"limit": "minutely"},
            )
        log.info("Exact Online minutely limit reached; waiting %.1f s", seconds)
        state.waited_seconds += seconds
        time.sleep(max(seconds, 0))

    def _send(
        self, method: str, url: str, *, division: int | None, params=None, json_body=None, headers=None
    ):
        """Send one call with auth, limits and the retries that are safe; return the httpx response.

        GET/PUT are retried on 5xx and transport errors (they are idempotent); POST never is, because
        Exact has no idempotency key and a retried create can duplicate an order (reference §8).
        """
        import httpx

        s = self.settings
        state = self._limit_for(division)
        retries = rate_waits = 0
        stale: str | None = None
        refreshed = False
        idempotent = method in ("GET", "PUT", "DELETE")
        while True:
            self._before_call(state, url)
            if state is not None:
                self._reserve(division, state, url)
            token = self._access_token(stale)
            try:
                resp = self.client.request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                )
            except httpx.HTTPError as exc:
                _raise_if_tls_config(exc, url)
                if idempotent and retries < s.max_retries:
                    retries += 1
                    time.sleep(min(s.retry_backoff * 2 ** (retries - 1), 8))
                    continue
                raise RetriableSourceError(
                    f"Exact Online unreachable: {type(exc).__name__}: {exc}", where=url
                ) from exc
            self.calls += 1
            status = resp.status_code
            if state is not None:
                self.metered_calls += 1
                self.calls_by_kind[method] = self.calls_by_kind.get(method, 0) + 1
                state.calls += 1
                state.update(resp.headers)
                self._observe(division, resp.headers)
            else:
                self.calls_by_kind["unmetered"] = self.calls_by_kind.get("unmetered", 0) + 1
            if status == 401:
                if refreshed:
                    raise AuthError(
                        "Exact Online refused a freshly refreshed access token (HTTP 401): consent may be revoked",
                        where=url,
                    )
                stale, refreshed = token, True
                continue
            if status == 429:
                self.rate_limited += 1
                rate_waits += 1
                self._on_429(state, resp, url, rate_waits)
                continue
            if status >= 500 and idempotent and retries < s.max_retries:
                retries += 1
                time.sleep(min(s.retry_backoff * 2 ** (retries - 1), 8))
                continue
            return resp

    def _observe(self, division: int, headers: httpx.Headers) -> None:
        """Tell the shared budget what Exact says was used (calls from elsewhere with this app count)."""
        seen: dict[str, float] = {}
        for name, header in (
            ("daily_limit", "X-RateLimit-Limit"),
            ("daily_remaining", "X-RateLimit-Remaining"),
            ("daily_reset", "X-RateLimit-Reset"),
            ("minutely_limit", "X-RateLimit-Minutely-Limit"),
            ("minutely_remaining", "X-RateLimit-Minutely-Remaining"),
            ("minutely_reset", "X-RateLimit-Minutely-Reset"),
        ):
            raw = headers.get(header)
            if raw is not None and raw.strip().isdigit():
                seen[name] = int(raw) / 1000 if name.endswith("reset") else int(raw)
        if seen:
            self.budget.observe(self._budget_key(division), time.time(), self._windows, seen)

    def _on_429(self, state: RateLimitState | None, resp: httpx.Response, url: str, attempt: int) -> None:
        """Classify a 429 by its headers (never by its body, which Exact leaves empty or non-JSON)."""
        now = time.time()
        headers = resp.headers
        if headers.get("X-RateLimit-Remaining") == "0":
            reset = _ms(headers.get("X-RateLimit-Reset"))
            raise RateLimitedError(
                "Exact Online daily API limit of this division is used up"
                + (f"; it resets at {_iso(reset)}" if reset else ""),
                retry_after=(reset - now) if reset else None,
                where=url,
                details={"limit": "daily", "reset": reset},
            )
        state = state or RateLimitState()
        if attempt > 5:
            raise RateLimitedError(
                "Exact Online kept answering 429 after 5 waits", where=url, details={"limit": "minutely"}
            )
        reset = _ms(headers.get("X-RateLimit-Minutely-Reset"))
        wait = (reset - now + 0.05) if reset and reset > now else min(2**attempt, 60)
        self._wait(state, wait, url)

    def _check(
        self, resp: httpx.Response, where: str, *, record_error: bool = False, index: int | None = None
    ):
        """Raise the right error for a refused call; return the parsed JSON body of a good one (or None)."""
        status = resp.status_code
        if status < 400:
            if status == 204 or not resp.content:
                return None
            body = _json_or_none(resp)
            if body is None:
                raise FatalSourceError(
                    f"Exact Online sent a response that is not JSON (HTTP {status}): {resp.text[:200]!r}",
                    where=where,
                    details={"status": status},
                )
            return body
        message = _error_message(resp)
        details = {"status": status, "message": message}
        if index is not None:
            details["index"] = index
        if status >= 500:
            raise RetriableSourceError(
                f"Exact Online server error HTTP {status}: {message}", where=where, details=details
            )
        if status == 403:
            raise FatalSourceError(
                f"Exact Online refused access (HTTP 403): {message}. Check that the division was granted at "
                "consent and that the licence includes this module",
                where=where,
                details=details,
            )
        if record_error and status in (400, 404, 405, 409, 422):
            raise RecordError(f"Exact Online rejected the record: {message}", where=where, details=details)
        raise FatalSourceError(
            f"Exact Online refused the request (HTTP {status}): {message}", where=where, details=details
        )

    # ---- divisions --------------------------------------------------------------------------------------

    def me(self) -> dict:
        """Return `current/Me` (the user and their current division; does not count toward limits)."""
        url = f"{self.settings.base_url}/api/v1/current/Me"
        body = self._check(self._send("GET", url, division=None), url)
        return _single(body, url)

    def divisions(self) -> list[dict]:
        """Return the divisions this consent can reach: `[{"Code": 123, "Description": "..."}]`."""
        current = self.me().get("CurrentDivision")
        if current is None:
            raise AuthError("Exact Online user has no current division: consent covers no division")
        url = f"{self.settings.base_url}/api/v1/{int(current)}/hrm/Divisions"
        return list(self._iter_pages(url, {"$select": "Code,Description"}, division=int(current), flat=True))

    @cached_property
    def division(self) -> int:
        """Resolve the division once: by exact name, or by code, checked against the accessible list."""
        s = self.settings
        if s.division is None and not s.division_name:
            raise ConfigError(
                "no division: set 'division' (code) or 'division_name' in the connection extra",
                where=self.exact_online_conn_id,
            )
        available = self.divisions()
        listing = "; ".join(f"{d['Code']}: {d['Description']!r}" for d in available)
        if s.division_name:
            matches = [d for d in available if d.get("Description") == s.division_name]
            if not matches:
                near = [
                    d["Description"]
                    for d in available
                    if str(d.get("Description", "")).lower() == s.division_name.lower()
                ]
                hint = f" (did you mean {near[0]!r}? the name must match exactly)" if near else ""
                raise ConfigError(
                    f"no Exact division is named {s.division_name!r}{hint}; available: {listing}",
                    where=self.exact_online_conn_id,
                )
            if len(matches) > 1:
                raise ConfigError(
                    f"several Exact divisions are named {s.division_name!r}; set 'division' (code) instead: {listing}",
                    where=self.exact_online_conn_id,
                )
            code = int(matches[0]["Code"])
            if s.division is not None and s.division != code:
                raise ConfigError(
                    f"division {s.division} and division_name {s.division_name!r} ({code}) disagree",
                    where=self.exact_online_conn_id,
                )
            return code
        if all(int(d["Code"]) != s.division for d in available):
            raise ConfigError(
                f"division {s.division} is not available to this connection; available: {listing}",
                where=self.exact_online_conn_id,
            )
        return int(s.division)

    def url(self, path: str) -> str:
        """Return the absolute URL of `path` under the division (`crm/Accounts` -> `.../api/v1/123/crm/Accounts`)."""
        return f"{self.settings.base_url}/api/v1/{self.division}/{path.lstrip('/')}"

    # ---- reading ------------------------------------------------------------------------------------------

    def _iter_pages(
        self, url: str, params: dict | None, *, division: int | None, flat: bool = False
    ) -> Iterator:
        """Follow `__next` links; each next link must stay on the same host and never repeat."""
        seen: set[str] = set()
        origin = _origin(self.settings.base_url)
        page_no = 0
        while url:
            where = f"{url} (page {page_no + 1})"
            body = self._check(self._send("GET", url, division=division, params=params), where)
            d = body.get("d") if isinstance(body, dict) else None
            if isinstance(d, list):  # very old endpoints answer with a bare array
                rows, nxt = d, None
            elif isinstance(d, dict) and isinstance(d.get("results"), list):
                rows, nxt = d["results"], d.get("__next")
            else:
                raise FatalSourceError(
                    f"Exact Online answered without the {{'d': {{'results': [...]}}}} envelope: {str(body)[:200]}",
                    where=where,
                )
            page_no += 1
            if flat:
                yield from rows
            else:
                yield rows
            if not nxt:
                return
            if nxt in seen or (nxt == url and params is None):
                raise FatalSourceError(
                    f"Exact Online sent the same __next link twice ({nxt}); stopping instead of looping",
                    where=where,
                )
            if _origin(nxt) != origin:
                raise FatalSourceError(f"Exact Online sent a __next link to another host: {nxt}", where=where)
            seen.add(nxt)
            url, params = nxt, None

    def iter_pages(
        self,
        path: str,
        *,
        select: str | list[str] | None = None,
        filter: str | None = None,
        orderby: str | None = None,
        top: int | None = None,
        expand: str | None = None,
    ) -> Iterator[list[dict]]:
        """Yield pages of a regular entity (60 rows per page), following `__next` to the end.

        :param path: entity path under the division, e.g. `logistics/Items`.
        """
        params = _query(select=select, filter=filter, orderby=orderby, top=top, expand=expand)
        yield from self._iter_pages(self.url(path), params, division=self.division)

    def iter_records(self, path: str, **query: Any) -> Iterator[dict]:
        """Yield the rows of `iter_pages` one by one."""
        for page in self.iter_pages(path, **query):
            yield from page

    def get_records(self, path: str, **query: Any) -> list[dict]:
        """Return all rows (small reference tables only: VAT codes, payment conditions, divisions)."""
        return list(self.iter_records(path, **query))

    def iter_bulk(
        self, path: str, select: str | list[str], *, filter: str | None = None
    ) -> Iterator[list[dict]]:
        """Yield pages of a bulk endpoint (1,000 rows per call; `$select` is mandatory there)."""
        if not select:
            raise ConfigError("bulk endpoints need $select: list the properties to read", where=path)
        bulk = BULK_PATHS.get(path.lower(), path)
        yield from self.iter_pages(f"bulk/{bulk}", select=select, filter=filter)

    def iter_sync(
        self, path: str, select: str | list[str], timestamp_from: int = 1
    ) -> Iterator[tuple[list[dict], int]]:
        """Yield `(rows, cursor)` per page of a sync endpoint, rows with `Timestamp > timestamp_from`.

        The cursor is the highest `Timestamp` received so far; persist it after each page and resume
        from it (reference §7). `Timestamp` is added to `select` when missing.
        """
        fields = _fields(select)
        if not fields:
            raise ConfigError("sync endpoints need $select: list the properties to read", where=path)
        if "Timestamp" not in fields:
            fields.append("Timestamp")
        sync = SYNC_PATHS.get(path.lower(), path)
        cursor = int(timestamp_from)
        params = {"$select": ",".join(fields), "$filter": f"Timestamp gt {cursor}L"}
        for rows in self._iter_pages(self.url(f"sync/{sync}"), params, division=self.division):
            for row in rows:
                try:
                    cursor = max(cursor, int(row["Timestamp"]))
                except (KeyError, TypeError, ValueError):
                    raise FatalSourceError(
                        f"sync row without a numeric Timestamp: {str(row)[:200]}", where=f"sync/{sync}"
                    ) from None
            yield rows, cursor

    def get(
        self, path: str, key: str, *, select: str | list[str] | None = None, expand: str | None = None
    ) -> dict:
        """Return one record by its GUID key (accepts both `{"d": {...}}` and `{"d": {"results": [x]}}`)."""
        url = self.url(f"{path}(guid'{key}')")
        body = self._check(
            self._send("GET", url, division=self.division, params=_query(select=select, expand=expand)), url
        )
        return _single(body, url)

    def find_one(self, path: str, filter: str, *, select: str | list[str] | None = None) -> dict | None:
        """Return the first record matching `filter`, or None (use natural keys, never probe by GET)."""
        for page in self.iter_pages(path, filter=filter, select=select, top=1):
            return page[0] if page else None
        return None

    # ---- writing --------------------------------------------------------------------------------------------

    def create(self, path: str, record: dict, *, index: int | None = None) -> dict:
        """POST one record (deep insert allowed, e.g. SalesOrderLines); return the created entity.

        A refusal raises RecordError with Exact's message. Not retried: look the record up by its
        natural key (e.g. `YourRef`) before creating it again.
        """
        url = self.url(path)
        where = f"POST {path}" + (f" record {index}" if index is not None else "")
        resp = self._send(
            "POST", url, division=self.division, json_body=record, headers={"Prefer": "return=representation"}
        )
        body = self._check(resp, where, record_error=True, index=index)
        return _single(body, where)

    def update(self, path: str, key: str, changes: dict, *, index: int | None = None) -> None:
        """PUT a partial update (only the changed properties); Exact answers 204 without a body."""
        url = self.url(f"{path}(guid'{key}')")
        where = f"PUT {path}({key})"
        self._check(
            self._send("PUT", url, division=self.division, json_body=changes),
            where,
            record_error=True,
            index=index,
        )

    def delete(self, path: str, key: str) -> None:
        """DELETE one record (204); sync consumers see it in `iter_sync("deleted", ...)`."""
        url = self.url(f"{path}(guid'{key}')")
        self._check(
            self._send("DELETE", url, division=self.division), f"DELETE {path}({key})", record_error=True
        )

    def create_many(self, path: str, records: list[dict]) -> list[WriteResult]:
        """POST records one by one; a refused record becomes a failed WriteResult and the rest go on.

        Errors that concern every record (auth, limits, outages) still raise.
        """
        key_name = KEYS.get(path.lower(), "ID")
        results = []
        for index, record in enumerate(records):
            try:
                created = self.create(path, record, index=index)
            except RecordError as exc:
                results.append(WriteResult(index, False, error=exc))
                continue
            results.append(WriteResult(index, True, key=created.get(key_name), record=created))
        return results

    # ---- status -------------------------------------------------------------------------------------------------

    def token_status(self) -> dict[str, Any]:
        """Say how long the stored refresh token lives (no secrets): for keep-alive jobs and alerts.

        Exact drops a refresh token after 30 days without a token call; a user must then consent again.
        """
        row = self.token_store.read(self.settings.store_key)
        if row is None or not row.get("refresh_expires_at"):
            return {
                "stored": row is not None,
                "refresh_expires_at": None,
                "days_left": None,
                "refresh_count": 0,
            }
        return {
            "stored": True,
            "refresh_expires_at": _iso(row["refresh_expires_at"]),
            "days_left": round((row["refresh_expires_at"] - time.time()) / 86_400, 2),
            "refresh_count": row["refresh_count"],
            "last_refresh_by": row["updated_by"],
        }

    def keep_alive(self, max_age_days: float = 20) -> dict[str, Any]:
        """Refresh when the last refresh is older than `max_age_days`, so the 30-day expiry never hits.

        Safe to schedule daily on any worker: it goes through the same lock, and a young token is left
        alone (Exact refuses refreshes inside 570 s anyway).
        """
        row = self.token_store.read(self.settings.store_key)
        if row is None or not row.get("issued_at") or time.time() - row["issued_at"] > max_age_days * 86_400:
            self.__dict__.pop("_token_memo", None)
            self._access_token(stale=row.get("access_token") if row else None)
        return self.token_status()

    def test_connection(self) -> tuple[bool, str]:
        """Refresh if needed, resolve the division, and say who we are connected as."""
        try:
            me = self.me()
            division = self.division
        except SyncError as exc:
            return False, str(exc)
        except Exception as exc:  # the UI button must answer, whatever broke
            return False, f"{type(exc).__name__}: {exc}"
        return (
            True,
            f"Connected to Exact Online as {me.get('FullName') or me.get('UserName')}, division {division}",
        )


# ---- small pure helpers ------------------------------------------------------------------------------------------


def _positive(raw: Any, default: float, name: str, where: str) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = 0.0
    if value <= 0:
        raise ConfigError(
            f"connection extra {name} must be a positive number of seconds, got {raw!r}", where=where
        )
    return value


def _raise_if_tls_config(exc: Exception, url: str) -> None:
    """A certificate the client cannot verify is a configuration problem: retrying cannot fix it."""
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        raise ConfigError(
            f"TLS verification of {_origin(url)[1]} failed ({exc}); if it uses a private CA (the sandbox "
            "does), point the connection extra 'ca_bundle' at its PEM file. Verification is never turned off.",
            where=url,
        ) from exc


def _json_or_none(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _error_message(resp: httpx.Response) -> str:
    """Read Exact's `error.message.value` (plus the `Reason` header); fall back to the raw text."""
    body = _json_or_none(resp)
    message = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message")
            message = msg.get("value") if isinstance(msg, dict) else msg
        elif isinstance(err, str):
            message = f"{err}: {body.get('error_description', '')}"
    if not message:
        message = resp.text[:300] or resp.reason_phrase
    reason = resp.headers.get("Reason")
    return f"{message} (Reason: {reason})" if reason else message


def _single(body: Any, where: str) -> dict:
    d = body.get("d") if isinstance(body, dict) else None
    if isinstance(d, dict) and isinstance(d.get("results"), list):
        if len(d["results"]) != 1:
            raise FatalSourceError(f"expected one record, Exact sent {len(d['results'])}", where=where)
        return d["results"][0]
    if isinstance(d, dict):
        return d
    raise FatalSourceError(f"Exact Online answered without a 'd' object: {str(body)[:200]}", where=where)


def _fields(select: str | list[str] | None) -> list[str]:
    if select is None:
        return []
    items = select.split(",") if isinstance(select, str) else list(select)
    return [f.strip() for f in items if f and f.strip()]


def _query(**options: Any) -> dict[str, str] | None:
    params = {}
    for name, value in options.items():
        if value is None:
            continue
        if name == "select":
            value = ",".join(_fields(value))
        params[f"${name}"] = str(value)
    return params or None


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc


def _ms(raw: str | None) -> float | None:
    try:
        return int(raw) / 1000 if raw else None
    except ValueError:
        return None


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
