"""Exact Online token store: one row per connection, refreshed under a row lock, written before use.

Exact's refresh tokens are single-use: every refresh returns a new one and the old one dies at once
(reference/exact-online.md §2.3). Two workers refreshing with the same token lose the connection for
good, so the refresh happens inside a transaction that holds a lock on the connection's row:

* PostgreSQL (production, several workers): `SELECT ... FOR UPDATE` on the row.
* SQLite (default, one machine): `BEGIN IMMEDIATE`, which takes the database write lock at once.

Inside the lock the row is read again: if another worker refreshed meanwhile, its access token is
used and no call reaches Exact. Otherwise the token endpoint is called and the new pair is written
in the same transaction before the lock is released, so the newest refresh token is never held only
in memory. (A crash between Exact's answer and the commit still loses it; that window is the one
HTTP response, and nothing can close it since Exact has no grace period for the old token.)

The row also remembers a hash of the bootstrap refresh token it was seeded from: a *different*
token in the connection means a human consented again, and it replaces the stored chain.

At rest the access and refresh tokens are Fernet-encrypted (`fernet:` + token) with the connection
extra `token_encryption_key` if set, else Airflow's `[core] fernet_key`; several comma-separated keys
rotate as in Airflow (the first encrypts). Rows written in plain text before stay readable and are
encrypted on their next write. With no key anywhere the tokens are kept as plain text, as Airflow
keeps its own connections then, and a warning says which setting is missing. A SQLite store file is
created with mode 0600.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from erpsync.errors import AuthError, ConfigError, RetriableSourceError
from erpsync.secure import private_sqlite_file, redact_url

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["TokenPair", "TokenStore", "default_store_url"]

log = logging.getLogger(__name__)

REFRESH_LIFETIME = 30 * 86_400

_ENGINES: dict[tuple[str, int], Engine] = {}


@dataclass(frozen=True)
class TokenPair:
    """What the token endpoint returned, with `expires_in` already turned into seconds."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: float


def default_store_url() -> str:
    """SQLite beside the Airflow home: fine on one machine; several hosts need a PostgreSQL URL."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return f"sqlite:///{os.path.join(home, 'erpsync_exact_tokens.db')}"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _table():
    import sqlalchemy as sa

    metadata = sa.MetaData()
    return sa.Table(
        "erpsync_exact_tokens",
        metadata,
        sa.Column("store_key", sa.String(300), primary_key=True),
        sa.Column("access_token", sa.Text, nullable=True),
        sa.Column("access_expires_at", sa.Float, nullable=True),
        sa.Column("refresh_token", sa.Text, nullable=True),
        sa.Column("issued_at", sa.Float, nullable=True),
        sa.Column("refresh_expires_at", sa.Float, nullable=True),
        sa.Column("seed_hash", sa.String(64), nullable=True),
        sa.Column("refresh_count", sa.Integer, nullable=False, default=0),
        sa.Column("updated_at", sa.Float, nullable=True),
        sa.Column("updated_by", sa.String(200), nullable=True),
    )


def _engine(url: str) -> Engine:
    """One engine per URL and process (a forked worker must not share its parent's sockets)."""
    key = (url, os.getpid())
    engine = _ENGINES.get(key)
    if engine is not None:
        return engine
    import sqlalchemy as sa

    try:
        if url.startswith("sqlite"):
            private_sqlite_file(url)  # tokens inside: 0600 before SQLite creates it world-readable
            engine = sa.create_engine(url, connect_args={"timeout": 60})

            # pysqlite starts transactions lazily and deferred; take the write lock up front instead,
            # so two processes cannot both read the old refresh token before either writes.
            @sa.event.listens_for(engine, "connect")
            def _no_autobegin(dbapi_connection, _record):
                dbapi_connection.isolation_level = None

            @sa.event.listens_for(engine, "begin")
            def _begin_immediate(conn):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        # The driver's message may quote the URL, password and all: say what is wrong without it.
        reason = str(exc).replace(url, redact_url(url))
        raise ConfigError(
            f"token_store_url '{redact_url(url)}' is not a usable SQLAlchemy URL "
            f"(expected e.g. sqlite:///path or postgresql+psycopg://user:***@host/db): {reason}",
            where="token_store_url",
        ) from None
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Concurrent CREATE TABLE races on PostgreSQL's catalog; serialize the first use.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('erpsync_exact_tokens'))")
        _table().metadata.create_all(conn, checkfirst=True)
    _ENGINES[key] = engine
    return engine


_PREFIX = "fernet:"
_WARNED_PLAINTEXT: set[str] = set()
_KEY_HINT = (
    "set the connection extra 'token_encryption_key' (or Airflow's AIRFLOW__CORE__FERNET_KEY) "
    "to the key that wrote them, or forget the row and consent again"
)


class _Cipher:
    """Encrypts the tokens of one store; `None` inner cipher means plain text (no key configured)."""

    def __init__(self, key: str | None):
        self.source = "token_encryption_key" if key else "AIRFLOW__CORE__FERNET_KEY"
        self._fernet = self._from_key(key) if key else self._from_airflow()

    @staticmethod
    def _from_key(key: str):
        from cryptography.fernet import Fernet, MultiFernet

        try:
            return MultiFernet([Fernet(part.strip().encode()) for part in key.split(",")])
        except (ValueError, TypeError):
            raise ConfigError(
                "connection extra 'token_encryption_key' is not a Fernet key (32 url-safe base64 bytes; "
                "make one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)",
                where="token_encryption_key",
            ) from None

    @staticmethod
    def _from_airflow():
        try:
            from airflow.models.crypto import get_fernet

            fernet = get_fernet()
        except ImportError:  # outside Airflow (tools, tests of the store alone)
            return None
        except Exception as exc:  # AirflowException: the configured key is malformed
            raise ConfigError(
                f"Airflow's fernet key cannot encrypt the Exact tokens ({exc}); fix AIRFLOW__CORE__FERNET_KEY "
                "or set the connection extra 'token_encryption_key'",
                where="AIRFLOW__CORE__FERNET_KEY",
            ) from None
        return fernet if getattr(fernet, "is_encrypted", False) else None

    def seal(self, value: str | None, *, where: str) -> str | None:
        if value is None:
            return None
        if self._fernet is None:
            if where not in _WARNED_PLAINTEXT:
                _WARNED_PLAINTEXT.add(where)
                log.warning(
                    "Exact tokens of %s are stored unencrypted: set AIRFLOW__CORE__FERNET_KEY or the "
                    "connection extra 'token_encryption_key'",
                    where,
                )
            return value
        return _PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str | None, *, where: str) -> str | None:
        if value is None or not value.startswith(_PREFIX):
            return value  # written before encryption (or without a key): re-encrypted on next write
        if self._fernet is None:
            raise ConfigError(
                f"the stored Exact tokens are encrypted but no key is configured: {_KEY_HINT}", where=where
            )
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(value[len(_PREFIX) :].encode()).decode()
        except InvalidToken:
            raise ConfigError(
                f"the stored Exact tokens were encrypted with another key than {self.source}: {_KEY_HINT}",
                where=where,
            ) from None


class TokenStore:
    """Access and refresh tokens of Exact connections, shared by every worker that sees the same URL.

    :param url: SQLAlchemy URL (`sqlite:///...` or `postgresql+psycopg://...`).
    :param encryption_key: Fernet key(s) for the tokens at rest; default: Airflow's fernet key.
    """

    def __init__(self, url: str | None = None, *, encryption_key: str | None = None):
        self.url = url or default_store_url()
        self.table = _table()
        self._encryption_key = encryption_key
        self._cipher_obj: _Cipher | None = None

    def __repr__(self) -> str:
        return f"TokenStore({redact_url(self.url)!r})"

    @property
    def _cipher(self) -> _Cipher:
        if self._cipher_obj is None:
            self._cipher_obj = _Cipher(self._encryption_key)
        return self._cipher_obj

    def _decrypted(self, row, key: str) -> dict:
        out = dict(row)
        for name in ("access_token", "refresh_token"):
            out[name] = self._cipher.open(out.get(name), where=key)
        return out

    @property
    def engine(self) -> Engine:
        return _engine(self.url)

    def _ensure_row(self, conn, key: str, bootstrap: str | None) -> None:
        import sqlalchemy as sa

        values = {
            "store_key": key,
            "refresh_token": self._cipher.seal(bootstrap, where=key),
            "seed_hash": _hash(bootstrap) if bootstrap else None,
            "refresh_count": 0,
            "updated_at": time.time(),
        }
        dialect = conn.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - other databases: plain insert, duplicate ignored below
            insert = None
        if insert is not None:
            conn.execute(
                insert(self.table).values(**values).on_conflict_do_nothing(index_elements=["store_key"])
            )
        else:
            exists = conn.execute(
                sa.select(self.table.c.store_key).where(self.table.c.store_key == key)
            ).first()
            if exists is None:
                conn.execute(sa.insert(self.table).values(**values))

    def read(self, key: str) -> dict | None:
        """Return the stored row (for status pages and tests), or None."""
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.table).where(self.table.c.store_key == key)).mappings().first()
            return self._decrypted(row, key) if row else None

    def access_token(self, key: str, **kwargs) -> str:
        """Return a usable access token (see `lease`)."""
        return self.lease(key, **kwargs)[0]

    def lease(
        self,
        key: str,
        *,
        bootstrap: str | None,
        refresh: Callable[[str], TokenPair],
        margin: float = 10.0,
        stale: str | None = None,
    ) -> tuple[str, float]:
        """Return a usable access token and its expiry (epoch s), refreshing at most once across workers.

        :param key: the connection's row (base URL, client id and store key).
        :param bootstrap: the refresh token in the connection (seeds the row; a new one replaces the chain).
        :param refresh: calls Exact's token endpoint with a refresh token; raises AuthError when refused.
        :param margin: treat the access token as expired this many seconds early (Exact allows a refresh
            only in the last 30 s of the 600 s lifetime, so keep it below 30).
        :param stale: an access token Exact just answered 401 to; never return it again.
        """
        import sqlalchemy as sa

        t = self.table
        now = time.time()
        row = self.read(key)
        if row is not None and self._usable(row, now, margin, stale) and not self._reseeded(row, bootstrap):
            return row["access_token"], row["access_expires_at"]
        with self.engine.begin() as conn:
            self._ensure_row(conn, key, bootstrap)
            row = conn.execute(sa.select(t).where(t.c.store_key == key).with_for_update()).mappings().one()
            row = self._decrypted(row, key)
            if self._reseeded(row, bootstrap):
                row.update(
                    refresh_token=bootstrap,
                    access_token=None,
                    access_expires_at=None,
                    seed_hash=_hash(bootstrap),
                )
            elif self._usable(row, time.time(), margin, stale):
                return row["access_token"], row["access_expires_at"]  # another worker refreshed meanwhile
            if not row["refresh_token"]:
                raise ConfigError(
                    "no Exact Online refresh token: put one in the connection extra 'refresh_token' "
                    "(from the consent flow) so the token store can be seeded",
                    where=key,
                )
            try:
                pair = refresh(row["refresh_token"])  # holding the lock: nobody else can use the old token
            except AuthError as exc:
                if exc.details.get("error") != "access_denied":
                    raise
                # "Too early" (Exact's 570-second rule): our clock runs ahead of Exact's. The old pair
                # stays valid, so keep using the access token while it lasts, else retry later.
                token, expires = row.get("access_token"), row.get("access_expires_at")
                if token and token != stale and expires and expires > time.time():
                    return token, expires
                raise RetriableSourceError(
                    "Exact refused the token refresh as too early and no valid access token is left; "
                    "retry in a minute (is this machine's clock ahead?)",
                    where=key,
                    details=exc.details,
                ) from exc
            issued = time.time()
            conn.execute(
                sa.update(t)
                .where(t.c.store_key == key)
                .values(
                    access_token=self._cipher.seal(pair.access_token, where=key),
                    access_expires_at=issued + pair.expires_in,
                    refresh_token=self._cipher.seal(pair.refresh_token, where=key),
                    issued_at=issued,
                    refresh_expires_at=issued + REFRESH_LIFETIME,
                    seed_hash=row["seed_hash"],
                    refresh_count=(row["refresh_count"] or 0) + 1,
                    updated_at=issued,
                    updated_by=f"{socket.gethostname()}:{os.getpid()}",
                )
            )
            return pair.access_token, issued + pair.expires_in

    @staticmethod
    def _usable(row: dict, now: float, margin: float, stale: str | None) -> bool:
        token, expires = row.get("access_token"), row.get("access_expires_at")
        if not token or token == stale or expires is None:
            return False
        # Never refresh earlier than the last 5% of the lifetime: Exact refuses a refresh within 570 of
        # its 600 s, so a margin larger than that would make every call a refused refresh.
        lifetime = expires - (row.get("issued_at") or expires)
        return expires - min(margin, 0.05 * lifetime) > now

    @staticmethod
    def _reseeded(row: dict, bootstrap: str | None) -> bool:
        return bool(bootstrap) and row.get("seed_hash") != _hash(bootstrap)

    def forget(self, key: str) -> None:
        """Drop a connection's tokens (after consent was revoked, before seeding a new consent)."""
        import sqlalchemy as sa

        with self.engine.begin() as conn:
            conn.execute(sa.delete(self.table).where(self.table.c.store_key == key))


def refresh_refused(status: int, body: dict, *, where: str) -> AuthError:
    """Turn a token-endpoint refusal into an AuthError that tells the user what to do."""
    error = body.get("error", "")
    description = body.get("error_description", "")
    if error == "access_denied" and "not expired" in description:
        hint = (
            "refreshed too early (Exact allows one refresh per 570 s); another process may hold a newer token"
        )
    elif error in ("invalid_grant", "unauthorized_client"):
        hint = "the refresh token is no longer valid (already used, revoked consent or lost); a user must consent again"
    elif error == "invalid_client":
        hint = "client id or secret is wrong (connection login/password)"
    elif "expired" in description:
        hint = "the refresh token expired after 30 days without use; a user must consent again"
    else:
        hint = "the token endpoint refused the refresh"
    return AuthError(
        f"Exact Online token refresh failed: {hint} (HTTP {status} {error}: {description})",
        where=where,
        details={"status": status, "error": error, "error_description": description},
    )
