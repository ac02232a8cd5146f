"""Persistence functions for companies and API tokens (keyword-only, no HTTP, no SOAP).

Jobs and the Web Connector conversation have their own modules (jobs.py, conversation.py).
"""

from __future__ import annotations

import time
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
    "list_companies",
    "set_password",
    "token_is_valid",
]


def _guid() -> str:
    return "{" + str(uuid.uuid4()).upper() + "}"


#: One OwnerID for the application (the Web Connector guide: one per application, not per file), so
#: the private FileID DataExt QBWC stores in each company file can be read back from any HCP response
#: and a Web Connector user pointed at another company's file is caught before anything is sent.
APP_OWNER_ID = "{" + str(uuid.uuid5(uuid.NAMESPACE_URL, "https://erpsync.invalid/qbwc-bridge")).upper() + "}"


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
    name = name.strip()
    if not name or len(name) > 100:
        raise ConfigError("company name must be 1 to 100 characters", where="company.name")
    username = (username or name).strip()
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


def create_token(*, session: Session, name: str) -> str:
    """Create a jobs-API token and return it; only its hash is stored, so show it once."""
    token = new_token()
    session.add(ApiToken(name=name, token_hash=hash_token(token), created_at=time.time()))
    return token


def token_is_valid(*, session: Session, token: str) -> bool:
    return session.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(token))) is not None
