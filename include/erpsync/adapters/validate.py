"""Check flows against the live systems: connections, and each mapping against target metadata.

Like DBSync's "Validate Process": before a flow runs, make sure every system answers, every mapped
target field exists and can be written the way the mapping writes it, no mapped value can be
longer than the target allows, and no required target field is left unmapped. The result is a
green/red report per flow; `erpsync validate` prints it and exits non-zero on red.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erpsync.errors import SyncError

__all__ = ["DEFAULT_CONN_IDS", "FlowCheck", "validate_flow", "validate_flows"]

#: Connection ids the real adapters use when no systems file says otherwise (README, STYLE.md).
DEFAULT_CONN_IDS = {
    "salesforce": "salesforce_default",
    "exact_online": "exact_online_default",
    "quickbooks": "qbwc_bridge_default",
    "autotask": "autotask_default",
}


@dataclass
class FlowCheck:
    """The outcome for one flow: red problems (it must not run) and warnings (it may)."""

    flow: str
    path: str | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    disabled: bool = False

    @property
    def status(self) -> str:
        if self.problems:
            return "red"
        return "disabled" if self.disabled else "green"


def _fieldless(name: str) -> str:
    return name.split(".", 1)[0]


def validate_flow(
    mapping: Any, adapter_for: Callable[[str], Any], checked: dict[str, tuple[bool, str]]
) -> FlowCheck:
    """Check one loaded mapping; `adapter_for(system)` builds (or raises for) a system's adapter."""
    result = FlowCheck(flow=mapping.flow, path=str(mapping.path), disabled=not mapping.enabled)
    adapters: dict[str, Any] = {}
    systems = [mapping.source.system, mapping.target.system, *(lk.system for lk in mapping.lookups.values())]
    for system in dict.fromkeys(systems):
        try:
            adapters[system] = adapter_for(system)
            if system not in checked:
                checked[system] = adapters[system].check_connection()
        except SyncError as exc:
            checked[system] = (False, str(exc))
        ok, message = checked[system]
        (result.passed if ok else result.problems).append(f"connection {system}: {message}")
    if result.problems:
        return result

    target = mapping.target
    try:
        meta = adapters[target.system].describe(target.object)
    except SyncError as exc:
        result.problems.append(f"target {target.system} {target.object}: {exc}")
        return result
    result.passed.extend(f"fixed: {what}" for what in getattr(adapters[target.system], "fixed", ()))
    for name, spec in mapping.fields.items():
        fm = meta.field(name)
        where = f"target field {target.object}.{name}"
        if fm is None:
            result.problems.append(f"{where}: unknown in {target.system} (line {spec.line or '?'})")
            continue
        if not fm.createable and "create" in spec.on:
            result.problems.append(f"{where}: {target.system} does not allow setting it on create")
        if not fm.updateable and "update" in spec.on:
            result.problems.append(
                f"{where}: {target.system} does not allow updating it; write it on create only (on: [create])"
            )
        if fm.length is not None:
            if spec.max_length is not None and spec.max_length > fm.length:
                result.problems.append(
                    f"{where}: the mapping allows {spec.max_length} characters, "
                    f"{target.system} at most {fm.length} (line {spec.line or '?'})"
                )
            elif spec.max_length is None and fm.type == "string":
                result.warnings.append(
                    f"{where}: no max_length or truncate; values over {fm.length} characters will be refused"
                )
    mapped = set(mapping.fields)
    for fm in meta.fields.values():
        if fm.required and fm.createable and fm.name not in mapped and fm.name != meta.id_field:
            result.problems.append(
                f"target field {target.object}.{fm.name}: required by {target.system} but not mapped"
            )
    identity = meta.field(target.identity)
    if identity is not None and not identity.external_id:
        result.warnings.append(
            f"identity {target.identity}: not an external-id field in {target.system}; matching by it may be slow"
        )

    source = mapping.source
    try:
        smeta = adapters[source.system].describe(source.object)
        known = (
            set(smeta.fields) | {smeta.id_field} | ({smeta.modified_field} if smeta.modified_field else set())
        )
        wanted = [source.key, *([source.cursor] if source.cursor else []), *source.fields]
        for name in dict.fromkeys(wanted):
            if name not in known and _fieldless(name) not in known:
                result.problems.append(f"source field {source.object}.{name}: unknown in {source.system}")
    except SyncError as exc:
        result.problems.append(f"source {source.system} {source.object}: {exc}")

    for lookup in mapping.lookups.values():
        try:
            lmeta = adapters[lookup.system].describe(lookup.object)
        except SyncError as exc:
            result.problems.append(f"lookup {lookup.name}: {exc}")
            continue
        known = set(lmeta.fields) | {lmeta.id_field}
        missing = [c for c in dict.fromkeys([*lookup.columns, *lookup.filter]) if c not in known]
        if missing:
            result.problems.append(
                f"lookup {lookup.name}: {lookup.system} {lookup.object} has no field(s) {', '.join(missing)}"
            )
    if not result.problems:
        result.passed.append(f"{len(mapping.fields)} target fields match {target.system} {target.object}")
    return result


def validate_flows(
    flows: list[str], mappings_dir: str | Path | None, adapter_for: Callable[[str], Any]
) -> list[FlowCheck]:
    """Load and check each flow; a mapping that does not load is red with the loader's message."""
    from erpsync.mapping import MappingError, load_flow

    checked: dict[str, tuple[bool, str]] = {}
    results = []
    for flow in flows:
        try:
            mapping = load_flow(flow, mappings_dir)
        except MappingError as exc:
            results.append(FlowCheck(flow=flow, problems=[f"mapping: {exc}"]))
            continue
        results.append(validate_flow(mapping, adapter_for, checked))
    return results
