"""Run-scoped staging area: tasks write rows here and pass only a manifest through XCom.

Where it lives (read at run time, never at parse time):

- `ERPSYNC_STAGING_URL` (e.g. `s3://bucket/erpsync`): object storage through Airflow's
  `ObjectStoragePath`, with the credentials of the Airflow connection `ERPSYNC_STAGING_CONN_ID`
  (for S3 an `aws` connection; extra `endpoint_url` for an S3-compatible server). Workers on several
  hosts then share nothing but the bucket.
- otherwise `ERPSYNC_STAGING_ROOT`, a folder (default `$AIRFLOW_HOME/staging`); with several workers
  it must be a folder they all mount, since a task's chunks are read by the next task and a deferred
  upsert resumes from its progress files wherever it runs.

Callers use pathlib operations that both kinds of path share (`/`, `glob`, `read_bytes`, `unlink`)
plus the helpers here for what differs: `write_bytes_atomic` (a local file is renamed into place; an
object PUT is atomic already), `staging_path` (a staged file's URI back to a path) and the clean-up.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erpsync.errors import ConfigError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = [
    "StagingPath",
    "is_remote",
    "prune_staging",
    "remove_run_staging",
    "run_staging_dir",
    "staging_path",
    "staging_root",
    "write_bytes_atomic",
]

StagingPath = Any  # pathlib.Path or airflow.sdk.ObjectStoragePath (both pathlib-shaped)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]")
_checked: set[str] = set()  # object-storage roots this process has reached once


def staging_root() -> StagingPath:
    """Return the configured staging root: an `ObjectStoragePath` or a local `Path`."""
    url = os.environ.get("ERPSYNC_STAGING_URL")
    if url:
        return _object_root(url, os.environ.get("ERPSYNC_STAGING_CONN_ID") or None)
    configured = os.environ.get("ERPSYNC_STAGING_ROOT")
    if configured:
        if "://" in configured:
            raise ConfigError(
                f"ERPSYNC_STAGING_ROOT={configured!r} is a folder; put object storage URLs in "
                "ERPSYNC_STAGING_URL (with ERPSYNC_STAGING_CONN_ID)",
                where="ERPSYNC_STAGING_ROOT",
            )
        return Path(configured)
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "staging"


def _object_root(url: str, conn_id: str | None) -> ObjectStoragePath:
    from airflow.sdk import ObjectStoragePath

    if url.startswith("file://"):
        raise ConfigError(
            "ERPSYNC_STAGING_URL is for object storage; put a local folder in ERPSYNC_STAGING_ROOT",
            where="ERPSYNC_STAGING_URL",
        )
    if not re.match(r"^[a-z][a-z0-9+.-]*://[^/]+", url):
        raise ConfigError(
            f"ERPSYNC_STAGING_URL={url!r} is not an object storage URL like s3://bucket/prefix",
            where="ERPSYNC_STAGING_URL",
        )
    try:
        return ObjectStoragePath(url.rstrip("/"), conn_id=conn_id)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"ERPSYNC_STAGING_URL={url!r}: {exc}", where="ERPSYNC_STAGING_URL") from None


def is_remote(path: Any) -> bool:
    """True for an object-storage path (anything with a protocol other than the local file system)."""
    return getattr(path, "protocol", "file") not in ("file", "local", "")


def check_reachable(root: StagingPath) -> None:
    """Fail with a clear `ConfigError` when the bucket is missing or the credentials are refused.

    Checked once per process and root: a listing of the prefix (empty is fine)."""
    key = f"{root}|{getattr(root, 'conn_id', None)}"
    if not is_remote(root) or key in _checked:
        return
    try:
        root.fs.ls(root.path, detail=False, refresh=True)
    except FileNotFoundError:
        # an empty prefix lists as missing on some stores; a missing bucket does not pass this
        try:
            bucket_ok = root.fs.exists(root.path.split("/", 1)[0])
        except Exception as exc:  # reported below with the root's name
            raise _unreachable(root, exc) from None
        if not bucket_ok:
            raise ConfigError(
                f"staging bucket of {_public(root)} does not exist (create it, or fix ERPSYNC_STAGING_URL)",
                where="ERPSYNC_STAGING_URL",
            ) from None
    except Exception as exc:  # credentials, endpoint, permissions: all stop here
        raise _unreachable(root, exc) from None
    _checked.add(key)


def _unreachable(root: StagingPath, exc: BaseException) -> ConfigError:
    conn = getattr(root, "conn_id", None)
    return ConfigError(
        f"cannot reach staging {_public(root)} with connection {conn!r}: {type(exc).__name__}: {exc} "
        "(check the bucket, the connection's credentials and endpoint_url)",
        where="ERPSYNC_STAGING_URL",
    )


def _public(path: StagingPath) -> str:
    return f"{path.protocol}://{path.path}" if is_remote(path) else str(path)


def run_staging_dir(dag_id: str, run_id: str, *, root: StagingPath | None = None) -> StagingPath:
    """Return (and for a folder create) the staging place of one DAG run; ids are made path-safe."""
    root = staging_root() if root is None else root
    check_reachable(root)
    path = root / _UNSAFE.sub("_", dag_id) / _UNSAFE.sub("_", run_id)
    if not is_remote(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def staging_path(uri: str) -> StagingPath:
    """Turn a staged file's URI (as a manifest records it) back into a path."""
    if "://" in uri and not uri.startswith("file://"):
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(uri)  # the connection id rides in the URI (s3://conn@bucket/...)
    return Path(uri.removeprefix("file://"))


def write_bytes_atomic(path: StagingPath, data: bytes) -> None:
    """Write a whole file so a reader sees the old one or the new one, never half of it."""
    if is_remote(path):
        path.write_bytes(data)  # an object PUT replaces the object in one step
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def glob_fresh(folder: StagingPath, pattern: str) -> list[StagingPath]:
    """`folder.glob(pattern)` that never answers from a cached object listing."""
    if is_remote(folder):
        folder.fs.invalidate_cache(folder.path)
        if not folder.fs.exists(folder.path):
            return []
    elif not folder.is_dir():
        return []
    return list(folder.glob(pattern))


def _remove_tree(path: StagingPath) -> bool:
    if is_remote(path):
        path.fs.invalidate_cache(path.path)
        if not path.fs.exists(path.path):
            return False
        path.fs.rm(path.path, recursive=True)
        path.fs.invalidate_cache(path.path)
        return True
    if not path.is_dir():
        return False
    import shutil

    shutil.rmtree(path)
    return True


def remove_run_staging(dag_id: str, run_id: str, *, root: StagingPath | None = None) -> bool:
    """Delete everything one DAG run staged (its chunks hold copies of source rows); True if any."""
    root = staging_root() if root is None else root
    return _remove_tree(root / _UNSAFE.sub("_", dag_id) / _UNSAFE.sub("_", run_id))


def _mtimes(run_dir: StagingPath) -> list[float]:
    if is_remote(run_dir):
        found = run_dir.fs.find(run_dir.path, detail=True)
        out = []
        for info in found.values():
            modified = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
            if hasattr(modified, "timestamp"):
                out.append(modified.timestamp())
            elif isinstance(modified, int | float):
                out.append(float(modified))
        return out
    return [f.stat().st_mtime for f in run_dir.rglob("*")] or [run_dir.stat().st_mtime]


def prune_staging(root: StagingPath, older_than_days: float, *, now: float | None = None) -> int:
    """Delete run folders (<root>/<dag>/<run>) untouched for longer than the cutoff; return how many.

    Staged chunks hold copies of source rows (personal data included), so they go with the runs.
    """
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    if is_remote(root):
        check_reachable(root)
        root.fs.invalidate_cache(root.path)
        if not root.fs.exists(root.path):
            return 0
    elif not root.is_dir():
        return 0
    removed = 0
    for dag_dir in list(root.iterdir()):
        if not dag_dir.is_dir():
            continue
        for run_dir in list(dag_dir.iterdir()):
            if not run_dir.is_dir():
                continue
            stamps = _mtimes(run_dir)
            if stamps and max(stamps) < cutoff and _remove_tree(run_dir):
                removed += 1
    return removed
