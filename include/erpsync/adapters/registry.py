"""Resolve adapters by name ("memory", "salesforce", ...) inside a task, never at parse time.

Names map to "module:Class" strings so nothing is imported until an adapter is built (the real
systems' adapters wrap hooks and load HTTP clients). Any "module:Class" string works as a name too,
and `register_adapter` adds one at run time (a plugin, a test).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from erpsync.errors import ConfigError

__all__ = ["adapter_names", "get_adapter", "register_adapter"]

_REGISTRY: dict[str, str | Callable[..., Any]] = {
    "memory": "erpsync.adapters.memory:MemoryAdapter",
    "salesforce": "erpsync.adapters.salesforce:SalesforceAdapter",
    "exact_online": "erpsync.adapters.exact_online:ExactOnlineAdapter",
    "quickbooks": "erpsync.adapters.quickbooks:QuickBooksAdapter",
    "autotask": "erpsync.adapters.autotask:AutotaskAdapter",
}


def register_adapter(name: str, factory: str | Callable[..., Any]) -> None:
    """Register `factory` ("module:Class" or a callable taking conn_id= and options) under `name`."""
    _REGISTRY[name] = factory


def adapter_names() -> list[str]:
    return sorted(_REGISTRY)


def _resolve(name: str) -> Callable[..., Any]:
    target = _REGISTRY.get(name, name if ":" in name else None)
    if target is None:
        raise ConfigError(f"unknown adapter {name!r}; known: {', '.join(adapter_names())} or 'module:Class'")
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"adapter {name!r} points at {target!r}, which cannot be imported: {exc}") from exc


def get_adapter(adapter: str, /, *, conn_id: str | None = None, **options: Any):
    """Build the adapter registered as `adapter` with its connection id and options (inside a task)."""
    factory = _resolve(adapter)
    return factory(conn_id=conn_id, **options) if conn_id is not None else factory(**options)
