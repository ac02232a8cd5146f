"""Import Great Expectations once per worker host process, not once per quality task.

Importing GX (with pandas, numpy, scipy, SQLAlchemy and pyarrow under it) costs about 3-4 s, and each
Airflow task is a new process: every quality step paid it again. Under the LocalExecutor every task
process is forked from a worker the scheduler forked, so modules the scheduler imported before it
started its executor are already loaded in every task (copy-on-write; nothing is parsed twice).

Use it from `airflow_local_settings.py` (in `$AIRFLOW_HOME/config/`), which every Airflow process
imports first; only the scheduler running the LocalExecutor warms up, the other components stay lean:

    from erpsync.quality.preload import warm_local_executor
    warm_local_executor()

`make demo` writes that file. Executors that start tasks in fresh interpreters (Kubernetes, or Celery
without a prefork hook) gain nothing and lose nothing: the tasks import GX themselves, as before.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time

__all__ = ["MODULES", "OPTIONAL", "warm", "warm_local_executor"]

log = logging.getLogger(__name__)

#: What the sync steps import inside their tasks: GX for the checks, pandas/pyarrow for the chunks.
MODULES = (
    "pandas",
    "pyarrow",
    "pyarrow.parquet",
    "great_expectations",
    "great_expectations.expectations",
    "great_expectations.data_context.types.base",
)
#: The hooks' HTTP clients, loaded too when installed (every adapter step imports one of them).
OPTIONAL = ("httpx", "requests", "simple_salesforce")


def warm(modules: tuple[str, ...] = MODULES) -> float:
    """Import `modules` now; return the seconds it took (0 when they were loaded already)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no usage-statistics calls
    started = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    for name in OPTIONAL if modules is MODULES else ():
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    return time.perf_counter() - started


def warm_local_executor(argv: list[str] | None = None) -> bool:
    """Warm up when this process is `airflow scheduler` with the LocalExecutor; say whether it did."""
    argv = sys.argv if argv is None else argv
    if len(argv) < 2 or argv[1] != "scheduler":
        return False
    from airflow.configuration import conf

    if "LocalExecutor" not in conf.get("core", "executor", fallback="LocalExecutor"):
        return False
    seconds = warm()
    log.info(
        "erpsync: Great Expectations, pandas and pyarrow loaded for the task processes in %.1f s", seconds
    )
    return True
