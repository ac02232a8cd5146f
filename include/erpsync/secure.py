"""Small guards for secrets: URLs without their passwords, private (0600) files for local stores.

Shared by the QuickBooks bridge store and the Exact token store, which both keep secrets in a SQLite
file by default: a file other local users can read would hand them password hashes, tickets' hashes,
customer payloads and (without a Fernet key) OAuth tokens.
"""

from __future__ import annotations

import os
import stat

__all__ = ["private_sqlite_file", "redact_url", "sqlite_path"]


def redact_url(url: str | None) -> str:
    """`url` with any user:password part replaced by `***`, whether or not it has a scheme.

    Works on text SQLAlchemy cannot parse too (that is when it ends up in an error message).
    """
    if not url:
        return ""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}"


def sqlite_path(url: str) -> str | None:
    """The file of a file-backed SQLite URL, or None (another database, memory, unparsable)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(url).database
    except ArgumentError:
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def private_sqlite_file(url: str) -> None:
    """Create the SQLite file of `url` as mode 0600 before SQLite does (which would use 0644 & umask).

    SQLite creates the -wal, -shm and journal files with the database file's mode, so they follow.
    An existing file readable by others is narrowed to 0600 as well; other URLs are left alone.
    """
    path = sqlite_path(url)
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
            try:
                mode = os.stat(name).st_mode
            except FileNotFoundError:
                continue
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                os.chmod(name, 0o600)
    else:
        os.close(fd)
