"""Run-scoped staging area: tasks write rows here and pass only a manifest through XCom.

The root is `ERPSYNC_STAGING_ROOT`, defaulting to `$AIRFLOW_HOME/staging`. It is a filesystem path:
with several workers it must be a folder they all mount (docker-compose.yaml shares a volume), since
a task's chunks are read by the next task and a deferred upsert resumes from its progress files
wherever it runs. Object storage URLs (s3://...) are not supported yet and are refused by name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["run_staging_dir", "staging_root"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]")


def staging_root() -> Path:
    """Return the configured staging root (read at run time, never at parse time)."""
    configured = os.environ.get("ERPSYNC_STAGING_ROOT")
    if configured:
        if "://" in configured:
            from erpsync.errors import ConfigError

            raise ConfigError(
                f"ERPSYNC_STAGING_ROOT={configured!r}: staging is a filesystem path (a folder every worker "
                "mounts); object storage URLs are not supported yet",
                where="ERPSYNC_STAGING_ROOT",
            )
        return Path(configured)
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "staging"


def run_staging_dir(dag_id: str, run_id: str, *, root: Path | None = None) -> Path:
    """Return (and create) the folder of one DAG run; run ids are made filesystem-safe."""
    path = (root or staging_root()) / _UNSAFE.sub("_", dag_id) / _UNSAFE.sub("_", run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path
