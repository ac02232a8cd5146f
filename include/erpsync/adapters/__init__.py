"""System adapters: the small interface the generic operators talk to, and its registry.

`MemoryAdapter` (module `erpsync.adapters.memory`) is the reference implementation, kept out of
this namespace because it imports pandas.
"""

from erpsync.adapters.base import RESULT_COLUMNS, CallLog, FieldMeta, ObjectMeta, ReadWindow, SystemAdapter
from erpsync.adapters.registry import adapter_names, get_adapter, register_adapter

__all__ = [
    "RESULT_COLUMNS",
    "CallLog",
    "FieldMeta",
    "ObjectMeta",
    "ReadWindow",
    "SystemAdapter",
    "adapter_names",
    "get_adapter",
    "register_adapter",
]
