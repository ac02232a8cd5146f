"""Persistence functions for companies and API tokens (keyword-only, no HTTP, no SOAP).

Jobs and the Web Connector conversation have their own modules (jobs.py, conversation.py).
"""

from __future__ import annotations

import json
import time
import unicodedata
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from erpsync.errors import ConfigError
from erpsync.qbwc_bridge.models import ApiToken, Company
from erpsync.qbwc_bridge.passwords import hash_password, hash_token, new_token

__all__ = [
    "APP_OWNER_ID",
    "add_company",
    "company_by_name",
    "company_by_username",
    "create_token",
    "find_token",
    "list_companies",
    "list_tokens",
    "parse_duration",
    "parse_rights",
    "revoke_token",
    "set_password",
    "token_companies",
    "token_is_valid",
    "token_state",
    "token_view",
]


def _guid() -> str:
    return "{" + str(uuid.uuid4()).upper() + "}"


#: One OwnerID for the application (the Web Connector guide: one per application, not per file), so
#: the private FileID DataExt QBWC stores in each company file can be read back from any HCP response
#: and a Web Connector user pointed at another company's file is caught before anything is sent.
APP_OWNER_ID = "{" + str(uuid.uuid5(uuid.NAMESPACE_URL, "https://erpsync.invalid/qbwc-bridge")).upper() + "}"


#: Unicode categories refused in names: control, format (e.g. bidi overrides), surrogates, line breaks.
_BAD_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def _check_name(value: str, *, what: str, where: str, slash: bool) -> None:
    """Refuse names that would be ambiguous or unsafe where they appear: URL paths (`/qbwc/companies/
    NAME.qwc`), the .qwc XML, log lines and the status page."""
    if not isinstance(value, str) or not value or len(value) > 100:
        raise ConfigError(f"{what} must be 1 to 100 characters", where=where)
    if value != value.strip():
        raise ConfigError(f"{what} {value!r} starts or ends with a space", where=where)
    bad = next((ch for ch in value if unicodedata.category(ch) in _BAD_CATEGORIES), None)
    if bad is not None:
        raise ConfigError(
            f"{what} {value!r} contains the control character U+{ord(bad):04X} at position {value.index(bad)}",
            where=where,
        )
    if not slash and "/" in value:
        raise ConfigError(f"{what} {value!r} may not contain '/' (it is part of URL paths)", where=where)


def add_company(
    *,
    session: Session,
    name: str,
    password: str,
    username: str | None = None,
    company_file: str = "",
    description: str = "",
    run_every_minutes: int = 15,
) -> Company:
    """Register a company file and its Web Connector user; OwnerID/FileID are fixed here, once."""
    _check_name(name, what="company name", where="company.name", slash=False)
    username = name if username is None else username
    _check_name(username, what="Web Connector user name", where="company.username", slash=True)
    if session.scalar(select(Company).where((Company.name == name) | (Company.username == username))):
        raise ConfigError(f"a company named {name!r} or with user {username!r} already exists")
    company = Company(
        name=name,
        username=username,
        password_hash=hash_password(password),
        owner_id=APP_OWNER_ID,
        file_id=_guid(),
        company_file=company_file,
        description=description,
        run_every_minutes=run_every_minutes,
        created_at=time.time(),
    )
    session.add(company)
    session.flush()
    return company


def set_password(*, session: Session, name: str, password: str) -> Company:
    company = company_by_name(session=session, name=name)
    if company is None:
        raise ConfigError(f"no company named {name!r}", where="company.name")
    company.password_hash = hash_password(password)
    return company


def company_by_name(*, session: Session, name: str) -> Company | None:
    return session.scalar(select(Company).where(Company.name == name))


def company_by_username(*, session: Session, username: str) -> Company | None:
    return session.scalar(select(Company).where(Company.username == username))


def list_companies(*, session: Session) -> list[Company]:
    return list(session.scalars(select(Company).order_by(Company.name)))


#: What a jobs-API token may do. read: jobs, status page, .qwc and metrics of its companies; write:
#: enqueue and cancel jobs; delete: enqueue ListDelRq/TxnDelRq as well; admin: manage tokens (only
#: on a token for every company, or it could mint itself a wider one).
RIGHTS = ("read", "write", "delete", "admin")
DEFAULT_RIGHTS = ("read", "write")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_rights(value: str | list[str] | tuple[str, ...], *, where: str = "rights") -> tuple[str, ...]:
    """'read,write' or ['read', 'write'] -> ('read', 'write') in canonical order; unknown names refused."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = {str(i).strip().lower() for i in items if str(i).strip()}
    unknown = sorted(names - set(RIGHTS))
    if unknown:
        raise ConfigError(
            f"unknown right(s) {', '.join(unknown)}; choose from {', '.join(RIGHTS)}", where=where
        )
    if not names:
        raise ConfigError(f"a token needs at least one right ({', '.join(RIGHTS)})", where=where)
    return tuple(r for r in RIGHTS if r in names)


def parse_duration(value: str, *, where: str = "--expires-in") -> float:
    """'30d', '12h', '90m', '3600s', '2w' or plain seconds -> seconds (> 0)."""
    text = str(value).strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise ConfigError(f"{value!r} is not a duration like 30d, 12h, 90m or 3600", where=where) from None
    if not seconds > 0 or seconds != seconds or seconds > 100 * 365 * 86400:
        raise ConfigError(f"{value!r}: a duration must be positive and under 100 years", where=where)
    return seconds


def token_companies(token: ApiToken) -> frozenset[str] | None:
    """The company names a token may touch; None means every company."""
    return None if token.companies is None else frozenset(json.loads(token.companies))


def token_state(token: ApiToken, now: float | None = None) -> str:
    now = time.time() if now is None else now
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "expired"
    return "active"


def _token_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 100 or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ConfigError("a token name must be 1 to 100 printable characters", where="token.name")
    if name.isdigit():
        raise ConfigError(
            f"token name {name!r} is all digits; it would read as a token id", where="token.name"
        )
    return name


def create_token(
    *,
    session: Session,
    name: str,
    companies: list[str] | None = None,
    rights: str | list[str] | tuple[str, ...] = DEFAULT_RIGHTS,
    expires_in: float | None = None,
) -> str:
    """Create a jobs-API token and return it; only its hash is stored, so show it once.

    `companies` None = every company (also ones added later); names must be registered now.
    """
    name = _token_name(name)
    granted = parse_rights(rights)
    now = time.time()
    scope = None
    if companies is not None:
        scope = sorted({c.strip() for c in companies if c and c.strip()})
        if not scope:
            raise ConfigError(
                "a token scoped to companies needs at least one company name", where="companies"
            )
        missing = [c for c in scope if company_by_name(session=session, name=c) is None]
        if missing:
            raise ConfigError(f"no company named {', '.join(map(repr, missing))}", where="companies")
        if "admin" in granted:
            raise ConfigError(
                "the admin right needs a token for every company (it can create tokens for any company)",
                where="rights",
            )
    if expires_in is not None and not expires_in > 0:
        raise ConfigError("expires_in must be a positive number of seconds", where="expires_in")
    if any(
        token_state(t, now) == "active"
        for t in session.scalars(select(ApiToken).where(ApiToken.name == name))
    ):
        raise ConfigError(
            f"an active token named {name!r} exists; revoke it or pick another name", where="token.name"
        )
    token = new_token()
    session.add(
        ApiToken(
            name=name,
            token_hash=hash_token(token),
            created_at=now,
            companies=None if scope is None else json.dumps(scope),
            rights=",".join(granted),
            expires_at=None if expires_in is None else now + expires_in,
        )
    )
    session.flush()
    return token


def find_token(*, session: Session, token: str, now: float | None = None) -> ApiToken | None:
    """The active (not revoked, not expired) token with this secret, or None."""
    found = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if found is None or token_state(found, now) != "active":
        return None
    return found


def token_is_valid(*, session: Session, token: str) -> bool:
    return find_token(session=session, token=token) is not None


def list_tokens(*, session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def token_view(token: ApiToken) -> dict:
    """A token as the CLI and the API show it: never the secret or its hash."""
    scope = token_companies(token)
    return {
        "id": token.id,
        "name": token.name,
        "companies": None if scope is None else sorted(scope),
        "rights": token.rights.split(","),
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
        "state": token_state(token),
    }


def revoke_token(*, session: Session, ref: str) -> list[ApiToken]:
    """Revoke the token with this id, or the active token(s) with this name; return what was revoked."""
    ref = str(ref).strip()
    if ref.isdigit():
        found = [t for t in [session.get(ApiToken, int(ref))] if t is not None]
    else:
        found = list(session.scalars(select(ApiToken).where(ApiToken.name == ref)))
    if not found:
        raise ConfigError(f"no token with id or name {ref!r}", where="token")
    now = time.time()
    revoked = [t for t in found if t.revoked_at is None]
    for t in revoked:
        t.revoked_at = now
    return revoked
