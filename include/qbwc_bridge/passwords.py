"""Password and token hashing: scrypt with a random salt for Web Connector passwords, SHA-256 for tokens.

Web Connector passwords are typed by people and need a slow, salted hash: scrypt at OWASP's current
minimum (N=2^17, r=8, p=1: 128 MiB and ~0.4 s of one core per check). Hashes stored with weaker
parameters still verify and are replaced on the next successful login (`needs_rehash`). API tokens
and tickets are 256-bit / 192-bit random strings, so a fast hash is enough and lets the bridge look
one up by its hash.

`QBWC_BRIDGE_SCRYPT_LOG_N` (14 to 20, default 17) sets N = 2^value for new hashes; the test suite runs
at 14 to stay fast (logins there are ~0.05 s instead of ~0.4 s). Lower values than 14 are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from erpsync.errors import ConfigError

__all__ = [
    "DEFAULT_LOG_N",
    "hash_password",
    "hash_token",
    "needs_rehash",
    "new_token",
    "verify_password",
    "work_factor",
]

DEFAULT_LOG_N = 17
_R, _P = 8, 1
#: scrypt needs 128 * N * r bytes; Python's default cap (32 MiB) refuses N=2^17. Room for N=2^18.
_MAXMEM = 300 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def work_factor() -> int:
    """N for new hashes: 2^QBWC_BRIDGE_SCRYPT_LOG_N (default 2^17, OWASP's minimum for scrypt)."""
    raw = os.environ.get("QBWC_BRIDGE_SCRYPT_LOG_N", "").strip() or str(DEFAULT_LOG_N)
    if not raw.isdigit() or not 14 <= int(raw) <= 20:
        raise ConfigError(
            f"QBWC_BRIDGE_SCRYPT_LOG_N must be a whole number from 14 to 20, got {raw[:20]!r}",
            where="QBWC_BRIDGE_SCRYPT_LOG_N",
        )
    return 2 ** int(raw)


def hash_password(password: str) -> str:
    """Return `scrypt$N$r$p$salt$hash` for `password`."""
    if not password:
        raise ValueError("a Web Connector password may not be empty")
    n = work_factor()
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=_R, p=_P, dklen=32, maxmem=_MAXMEM)
    return f"scrypt${n}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Check `password` against a stored hash in constant time; a malformed hash never matches."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
            maxmem=_MAXMEM,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def needs_rehash(stored: str) -> bool:
    """True when `stored` uses weaker scrypt parameters than today's (or is not a scrypt hash at all)."""
    try:
        scheme, n, r, p, _salt, _digest = stored.split("$")
        n, r, p = int(n), int(r), int(p)
    except ValueError:
        return True
    want = work_factor()
    return scheme != "scrypt" or n < want or r < _R or n * r * p < want * _R * _P


def new_token() -> str:
    """A fresh random secret (tickets, API tokens)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
