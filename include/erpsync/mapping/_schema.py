"""Check a mapping document against include/mappings/mapping.schema.json, in words a user reads.

jsonschema's own messages ("Additional properties are not allowed ('form' was unexpected)") are
accurate but say neither the line nor what to do, so each error kind is rephrased here and placed
on the line of the offending key.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from erpsync.mapping._errors import Problem, problem
from erpsync.mapping._yaml import YamlDoc, dotted

__all__ = ["SCHEMA_NAME", "schema", "schema_path", "schema_problems"]

SCHEMA_NAME = "mapping.schema.json"
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "a mapping",
    type(None): "empty (null)",
}


def schema_path() -> Path:
    """Return the schema file: the source tree's include/mappings first (it matches this code), else
    the one in ERPSYNC_MAPPINGS_DIR (a non-editable install, as in the Docker image, has no source
    tree beside the package; the image sets ERPSYNC_MAPPINGS_DIR to its copy of include/mappings).
    """
    from erpsync.mapping._errors import MappingError, problem

    candidates = [Path(__file__).resolve().parents[2] / "mappings" / SCHEMA_NAME]
    configured = os.environ.get("ERPSYNC_MAPPINGS_DIR")
    if configured:
        candidates.append(Path(configured) / SCHEMA_NAME)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shown = ", ".join(str(c) for c in candidates)
    raise MappingError(problem(shown, None, "", "the mapping schema was not found; set ERPSYNC_MAPPINGS_DIR"))


@lru_cache(maxsize=4)
def _schema_at(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def schema() -> dict[str, Any]:
    """Return the mapping JSON schema (each file read once per process)."""
    return _schema_at(schema_path())


def schema_problems(doc: YamlDoc) -> list[Problem]:
    """Return every schema violation of `doc`, each with its line, field and a readable problem."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    problems: list[Problem] = []
    seen: set[tuple] = set()
    for error in validator.iter_errors(doc.data):
        for item in _explain(doc, error):
            marker = (item.line, item.field, item.problem)
            if marker not in seen:
                seen.add(marker)
                problems.append(item)
    return problems


def _describe(value: Any) -> str:
    kind = _TYPE_NAMES.get(type(value), type(value).__name__)
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{kind} ({shown})" if not isinstance(value, dict | list) else kind


def _explain(doc: YamlDoc, error) -> list[Problem]:
    path = tuple(error.absolute_path)
    kind = error.validator
    if kind in {"if", "then", "else", "allOf", "anyOf", "oneOf", "$ref"} and error.context:
        return [p for sub in error.context for p in _explain(doc, sub)]

    def at(where: tuple, text: str) -> Problem:
        return problem(doc.path, doc.line(where), dotted(where), text)

    if "propertyNames" in error.schema_path:
        name = error.instance
        return [
            at(
                (*path, name),
                f"{name!r} is not a valid name here (expected a dotted path or a snake_case id)",
            )
        ]
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
        return [
            at((*path, key), f"unknown key '{key}'" + (f" (allowed: {', '.join(known)})" if known else ""))
            for key in extra
        ]
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [at(path, f"missing required key '{missing}'")]
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return [at(path, f"wrong type: expected {expected}, got {_describe(error.instance)}")]
    if kind == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        if "transform" in path:
            return [at(path, f"unknown transform {error.instance!r} (known: {allowed})")]
        return [at(path, f"{error.instance!r} is not allowed here (choose one of: {allowed})")]
    if kind == "pattern":
        value = error.instance
        return [at(path, f"{value!r} is not a valid name here (expected a dotted path like Owner.FirstName)")]
    if kind in {"minItems", "minProperties", "minLength"}:
        return [at(path, f"must not be empty ({error.message})")]
    if kind == "uniqueItems":
        return [at(path, f"lists a value twice: {error.instance!r}")]
    if kind in {"minimum", "maximum"}:
        return [at(path, f"{error.instance!r} is out of range ({kind} {error.validator_value})")]
    return [at(path, error.message)]
