"""Run-scoped staging area: tasks write rows here and pass only a manifest through XCom.

The root is `ERPSYNC_STAGING_ROOT` (a local path or any URL ObjectStoragePath accepts, such as
s3://bucket/prefix), defaulting to `$AIRFLOW_HOME/staging`.
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
        return Path(configured)
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "staging"


def run_staging_dir(dag_id: str, run_id: str, *, root: Path | None = None) -> Path:
    """Return (and create) the folder of one DAG run; run ids are made filesystem-safe."""
    path = (root or staging_root()) / _UNSAFE.sub("_", dag_id) / _UNSAFE.sub("_", run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path
