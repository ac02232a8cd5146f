"""Generic sync operators over a small system adapter. Imported as `erpsync.operators`.

    validate -> extract -> check_source -> map -> check_target -> plan -> upsert -> verify -> report

`sync_tasks(flow=..., source={...}, target={...})` builds and chains all nine in a DAG; each
operator can also be used alone (pass the upstream task's `.output` as `manifest=`). Every operator
takes `flow` (the mapping file's stem), optional `mappings_dir` and `state_url`; the ones that talk
to a system take `adapter` (registry name: memory, salesforce, exact_online, quickbooks, or
"module:Class"), `conn_id` and `adapter_kwargs`. DAG params used when an argument is not given:
`full_refresh`, `chunk_rows`, `quarantine_threshold`, `batch_size`, `dry_run`.

Environment: `ERPSYNC_STATE_URL` (state store; default SQLite under $AIRFLOW_HOME),
`ERPSYNC_STAGING_ROOT` (staged chunks), `ERPSYNC_MAPPINGS_DIR`, `ERPSYNC_QUARANTINE_RETENTION_DAYS`.

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
