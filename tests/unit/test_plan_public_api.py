"""The public names of the engine packages this area owns are pinned: any API change shows here."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module, names",
    [
        (
            "erpsync.state",
            [
                "DEFAULT_RETENTION_DAYS",
                "Identity",
                "PruneResult",
                "QuarantineRecord",
                "StateStore",
                "default_state_url",
                "upgrade",
            ],
        ),
        (
            "erpsync.adapters",
            [
                "RESULT_COLUMNS",
                "CallLog",
                "FieldMeta",
                "ObjectMeta",
                "ReadWindow",
                "SystemAdapter",
                "adapter_names",
                "get_adapter",
                "register_adapter",
            ],
        ),
        (
            "erpsync.operators",
            [
                "ExtractOperator",
                "MapOperator",
                "PlanOperator",
                "QualityCheckOperator",
                "ReportOperator",
                "UpsertOperator",
                "ValidateOperator",
                "VerifyOperator",
                "TASK_IDS",
                "sync_tasks",
            ],
        ),
        (
            "erpsync.plan",
            ["ACTIONS", "KEY_BATCH", "PLAN_COLUMNS", "PlanSpec", "Planner", "content_hashes", "normalize"],
        ),
        (
            "erpsync.chunks",
            ["MANIFEST_VERSION", "ChunkRef", "ChunkWriter", "Manifest", "StagingError", "read_chunks"],
        ),
        ("erpsync.report", ["COUNT_NAMES", "RunReport", "merge_calls"]),
    ],
)
def test_all_is_pinned(module, names):
    import importlib

    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(names)
    for name in names:
        assert hasattr(mod, name), f"{module}.{name} is listed but missing"


def test_operators_import_nothing_heavy():
    """DAG files import erpsync.operators at parse time: no pandas, pyarrow, SQLAlchemy, GX, httpx."""
    code = (
        "import sys, json\n"
        "import airflow.sdk\n"
        "before = set(sys.modules)\n"
        "import erpsync.operators, erpsync.adapters, erpsync.chunks, erpsync.plan, erpsync.report\n"
        "heavy = {'pandas', 'pyarrow', 'sqlalchemy', 'great_expectations', 'numpy', 'httpx'}\n"
        "print(json.dumps(sorted(heavy & (set(sys.modules) - before))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
