"""Find and load mapping files: one YAML per flow, validated against the schema on every load.

The mappings folder is `ERPSYNC_MAPPINGS_DIR` when set (a team's own folder of custom or changed
flows), else the repository's include/mappings. It is read when a task runs, never at import.
"""

from __future__ import annotations

import os
from pathlib import Path

from erpsync.mapping._errors import MappingError, problem
from erpsync.mapping._model import Mapping, build_mapping
from erpsync.mapping._schema import schema_problems
from erpsync.mapping._yaml import load_yaml

__all__ = ["default_mappings_dir", "list_flows", "load_all", "load_flow", "load_mapping", "mappings_dir"]


def default_mappings_dir() -> Path:
    """Return the repository's include/mappings folder."""
    return Path(__file__).resolve().parents[2] / "mappings"


def mappings_dir(mappings_dir: str | Path | None = None) -> Path:
    """Return the folder to read mappings from: argument > ERPSYNC_MAPPINGS_DIR > include/mappings."""
    if mappings_dir is not None:
        return Path(mappings_dir)
    configured = os.environ.get("ERPSYNC_MAPPINGS_DIR")
    return Path(configured) if configured else default_mappings_dir()


def load_mapping(path: str | Path) -> Mapping:
    """Load and validate one mapping file.

    :param path: the YAML file.
    :raises MappingError: naming file, line, field and problem for every error found.
    """
    doc = load_yaml(Path(path))
    if not isinstance(doc.data, dict):
        raise MappingError(problem(doc.path, 1, "", "a mapping file must be a YAML mapping (key: value)"))
    problems = schema_problems(doc)
    if problems:
        raise MappingError(problems)
    mapping, problems = build_mapping(doc)
    if problems:
        raise MappingError(problems)
    assert mapping is not None
    return mapping


def list_flows(mappings_dir_: str | Path | None = None) -> list[str]:
    """Return the flow names (file stems) of every mapping file in the folder, sorted."""
    folder = mappings_dir(mappings_dir_)
    return sorted(p.stem for p in folder.glob("*.yaml") if p.is_file())


def load_flow(flow_name: str, mappings_dir: str | Path | None = None) -> Mapping:
    """Load the mapping of `flow_name` (the file `<flow_name>.yaml`) from the mappings folder.

    :param flow_name: the DAG id of the flow.
    :param mappings_dir: folder to read; defaults to ERPSYNC_MAPPINGS_DIR, then include/mappings.
    :raises MappingError: when the file is missing or invalid.
    """
    folder = globals()["mappings_dir"](mappings_dir)
    path = folder / f"{flow_name}.yaml"
    if not path.is_file():
        known = ", ".join(list_flows(folder)) or "none"
        raise MappingError(problem(path, None, "", f"no mapping for flow '{flow_name}' (found: {known})"))
    return load_mapping(path)


def load_all(mappings_dir_: str | Path | None = None) -> dict[str, Mapping | MappingError]:
    """Load every flow in the folder; a broken file gives its MappingError, the others still load.

    The validate command prints one green/red line per flow from this, so one bad file never hides
    the state of the others.
    """
    folder = mappings_dir(mappings_dir_)
    loaded: dict[str, Mapping | MappingError] = {}
    for flow in list_flows(folder):
        try:
            loaded[flow] = load_mapping(folder / f"{flow}.yaml")
        except MappingError as exc:
            loaded[flow] = exc
    return loaded
