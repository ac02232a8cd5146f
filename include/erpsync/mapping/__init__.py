"""Declarative flow mappings: one YAML file per flow, validated on load, applied vectorized.

    load_flow("sf_accounts_to_qb_customers")      -> Mapping      (validated, with file lines)
    mapping.compile()                              -> CompiledMapping (once per task)
    compiled.apply(chunk, lookups={...})           -> MappedChunk(frame, rejected, skipped)

Importing this package is cheap (no pandas, no YAML parser): DAG files and operators import it at
parse time, and the heavy libraries load only when a mapping is read or applied.
"""

from erpsync.mapping._compile import REJECTED_COLUMNS, CompiledMapping, MappedChunk
from erpsync.mapping._errors import MappingError, Problem
from erpsync.mapping._loader import (
    default_mappings_dir,
    list_flows,
    load_all,
    load_flow,
    load_mapping,
    mappings_dir,
)
from erpsync.mapping._model import (
    FieldSpec,
    LinesSpec,
    LookupSpec,
    Mapping,
    QualitySpec,
    SourceSpec,
    TargetSpec,
    ValueMap,
)
from erpsync.mapping._target_check import check_against_target

__all__ = [
    "REJECTED_COLUMNS",
    "CompiledMapping",
    "FieldSpec",
    "LinesSpec",
    "LookupSpec",
    "MappedChunk",
    "Mapping",
    "MappingError",
    "Problem",
    "QualitySpec",
    "SourceSpec",
    "TargetSpec",
    "ValueMap",
    "check_against_target",
    "default_mappings_dir",
    "list_flows",
    "load_all",
    "load_flow",
    "load_mapping",
    "mappings_dir",
]
