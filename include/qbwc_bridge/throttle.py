"""Web Connector login backoff, per user name and per client address, kept in the store.

Usernames are written into every .qwc, so passwords are what an attacker guesses. Each failed
authenticate counts against `user:<name>` and `addr:<client address>` (rows of `login_throttle`,
shared by every replica). After `login_free_failures` a key is blocked for `login_backoff_seconds`,
doubling per further failure up to `login_backoff_max_seconds`; while any of its keys is blocked an
authenticate answers "nvu" without looking at the password (and without extending the block).

Nobody is locked out for good: the delay is capped, a correct password after it clears both keys,
and a user name's block does not apply from an address that user has logged in from before
(`good:<name>|<address>`), so a guesser elsewhere cannot keep the real Web Connector out; only the
guesser's own address is held back. Unknown user names are throttled exactly like known ones, so the
throttle says nothing about which names exist.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from erpsync.qbwc_bridge.config import BridgeSettings
from erpsync.qbwc_bridge.db import Store
from erpsync.qbwc_bridge.models import LoginThrottle

__all__ = ["Keys", "Verdict", "check", "delay_after", "record_failure", "record_success"]

#: A known-good (user, address) pair is trusted for this long after its last successful login.
GOOD_PAIR_SECONDS = 90 * 24 * 3600.0

_T = LoginThrottle.__table__.c
#: Every authenticate runs this: built once, three fixed parameters (a key given twice when fewer).
_ROWS = select(_T.key, _T.blocked_until, _T.updated_at).where(
    _T.key.in_([bindparam("k1"), bindparam("k2"), bindparam("k3")])
)


@dataclass(frozen=True)
class Keys:
    user: str
    addr: str | None
    good: str | None

    @classmethod
    def of(cls, username: str, client_addr: str) -> Keys:
        name = (username or "")[:150]
        addr = (client_addr or "")[:45]
        return cls(f"user:{name}", f"addr:{addr}" if addr else None, f"good:{name}|{addr}" if addr else None)


def delay_after(failures: int, settings: BridgeSettings) -> float:
    """Seconds a key stays blocked after its `failures`-th failure (0 while failures are free)."""
    over = failures - settings.login_free_failures
    if over <= 0:
        return 0.0
    return min(settings.login_backoff_max_seconds, settings.login_backoff_seconds * 2.0 ** min(over - 1, 60))


@dataclass(frozen=True)
class _Row:
    blocked_until: float
    updated_at: float


@dataclass(frozen=True)
class Verdict:
    #: Seconds until a login with these keys is checked again (0 = check it now).
    wait: float
    #: A success must write (clear a streak, trust or refresh the pair); most logins need no write.
    needs_write: bool


def check(store: Store, settings: BridgeSettings, keys: Keys, now: float | None = None) -> Verdict:
    """Read the keys' rows: how long this login must wait, and whether a success has to write."""
    now = time.time() if now is None else now
    k1 = keys.user
    with store.reading() as s:
        found = s.execute(_ROWS, {"k1": k1, "k2": keys.addr or k1, "k3": keys.good or k1})
        rows = {key: _Row(blocked_until, updated_at) for key, blocked_until, updated_at in found}
    good = rows.get(keys.good) if keys.good else None
    trusted = good is not None and now - good.updated_at < GOOD_PAIR_SECONDS
    waits = [0.0]
    for key in (keys.addr, None if trusted else keys.user):
        row = rows.get(key) if key else None
        if row is not None and row.blocked_until > now:
            waits.append(row.blocked_until - now)
    stale = keys.good is not None and (good is None or now - good.updated_at > 24 * 3600)
    return Verdict(max(waits), stale or keys.user in rows or (keys.addr in rows if keys.addr else False))


def record_failure(store: Store, settings: BridgeSettings, keys: Keys, now: float | None = None) -> float:
    """Count a failed login against the user name and the address; return the longest block set."""
    now = time.time() if now is None else now
    longest = 0.0
    for attempt in range(2):
        try:
            with store.session() as s:
                for key in (keys.user, keys.addr):
                    if key is None:
                        continue
                    stmt = select(LoginThrottle).where(LoginThrottle.key == key)
                    row = s.scalar(stmt.with_for_update() if store.is_postgres else stmt)
                    if row is None:
                        row = LoginThrottle(key=key, failures=0, blocked_until=0.0, updated_at=now)
                        s.add(row)
                    elif now - row.updated_at > settings.login_failure_memory_seconds:
                        row.failures = 0  # an old streak is forgotten
                    row.failures += 1
                    row.blocked_until = now + delay_after(row.failures, settings)
                    row.updated_at = now
                    longest = max(longest, row.blocked_until - now)
                if random.random() < 0.01:  # now and then, forget long-idle rows (guessed names pile up)
                    cutoff = now - max(
                        settings.login_failure_memory_seconds, settings.login_backoff_max_seconds
                    )
                    s.execute(
                        delete(LoginThrottle).where(
                            LoginThrottle.updated_at < cutoff, ~LoginThrottle.key.startswith("good:")
                        )
                    )
            return longest
        except IntegrityError:  # another replica inserted the same key first: count on its row
            if attempt:
                raise
    return longest


def record_success(store: Store, keys: Keys, now: float | None = None) -> None:
    """A correct password clears the user's and the address's streaks and trusts the pair."""
    now = time.time() if now is None else now
    for attempt in range(2):
        try:
            with store.session() as s:
                gone = [k for k in (keys.user, keys.addr) if k]
                s.execute(delete(LoginThrottle).where(LoginThrottle.key.in_(gone)))
                if keys.good:
                    row = s.get(LoginThrottle, keys.good)
                    if row is None:
                        s.add(LoginThrottle(key=keys.good, failures=0, blocked_until=0.0, updated_at=now))
                    else:
                        row.updated_at = now
            return
        except IntegrityError:
            if attempt:
                raise
