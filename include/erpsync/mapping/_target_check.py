"""Check a mapping against the target system's field metadata (the `validate` command's red/green).

The metadata is a plain dict per target field, as a hook can build it from Salesforce `describe`,
Exact's entity metadata or the qbXML schema lengths:

    {"Name": {"length": 41, "required": True, "picklist": None, "createable": True, "updateable": True}}

Missing keys mean "unknown" and are not checked. The check is pure (no I/O) so the validate
command and a task at the head of each DAG can run it on metadata they fetched.
"""

from __future__ import annotations

from typing import Any

from erpsync.mapping._errors import Problem, problem
from erpsync.mapping._model import FieldSpec, Mapping

__all__ = ["check_against_target"]


def _produced_values(spec: FieldSpec) -> list[Any] | None:
    """Values a field can only take, when the mapping fixes them (const, allowed, a closed map)."""
    if spec.allowed is not None:
        return list(spec.allowed)
    if spec.kind == "const":
        return [spec.const]
    if spec.map is not None and spec.map.on_unmapped != "keep":
        values = list(spec.map.values.values())
        if spec.map.fallback is not None:
            values.append(spec.map.fallback)
        if spec.default is not None:
            values.append(spec.default)
        return values
    return None


def check_against_target(mapping: Mapping, target_fields: dict[str, dict[str, Any]]) -> list[Problem]:
    """Return what in `mapping` the target would refuse; an empty list means green.

    :param mapping: a loaded mapping.
    :param target_fields: target field name -> metadata (length, required, picklist, createable,
        updateable), for the fields the target object has.
    """
    found: list[Problem] = []

    def add(spec: FieldSpec | None, field: str, text: str) -> None:
        found.append(problem(mapping.path, spec.line if spec else None, field, text))

    for name, spec in mapping.fields.items():
        meta = target_fields.get(name)
        if meta is None:
            add(
                spec,
                name,
                f"the target {mapping.target.system} {mapping.target.object} has no field '{name}'",
            )
            continue
        length = meta.get("length")
        if length and spec.type == "string" and (spec.max_length is None or spec.max_length > length):
            allowed = "no limit" if spec.max_length is None else f"{spec.max_length}"
            add(spec, name, f"target allows {length} characters, the mapping lets {allowed} through")
        picklist = meta.get("picklist")
        values = _produced_values(spec)
        if picklist and values is not None:
            outside = sorted({str(v) for v in values if v is not None and v not in picklist})
            if outside:
                add(spec, name, f"value(s) {', '.join(outside)} are not in the target picklist")
        if meta.get("createable") is False and "create" in spec.on:
            add(spec, name, "the target does not let this field be set on create")
        if meta.get("updateable") is False and "update" in spec.on:
            add(spec, name, "the target does not let this field be updated; use on: [create]")
        if meta.get("required") and not (spec.required or spec.default is not None or spec.kind == "const"):
            add(spec, name, "the target requires this field: mark it required or give it a default")
    for name, meta in target_fields.items():
        if meta.get("required") and meta.get("createable", True) and name not in mapping.fields:
            add(None, name, f"the target requires '{name}' on create and the mapping does not set it")
    return found
