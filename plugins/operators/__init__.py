"""Generic sync operators over a small system adapter. Imported as `erpsync.operators`.

Cheap to import (DAG files do, at parse time): the operators load pandas, the state store and the
adapters inside `execute` only.
"""

from erpsync.operators.chain import TASK_IDS, sync_tasks
from erpsync.operators.sync import (
    ExtractOperator,
    MapOperator,
    PlanOperator,
    QualityCheckOperator,
    ReportOperator,
    UpsertOperator,
    ValidateOperator,
    VerifyOperator,
)

__all__ = [
    "TASK_IDS",
    "ExtractOperator",
    "MapOperator",
    "PlanOperator",
    "QualityCheckOperator",
    "ReportOperator",
    "UpsertOperator",
    "ValidateOperator",
    "VerifyOperator",
    "sync_tasks",
]
