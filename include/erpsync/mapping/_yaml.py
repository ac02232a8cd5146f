"""Read a YAML file into plain data plus the line of every key, refusing duplicate keys.

PyYAML silently keeps the last of two equal keys, which would hide a field defined twice, and its
constructed dicts forget where each key came from. So the document is composed into nodes first
(line marks kept, duplicates detected), then constructed; `lines` maps each path (a tuple of keys
and list indexes) to the 1-based line where that key or item starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from erpsync.mapping._errors import MappingError, problem

__all__ = ["YamlDoc", "load_yaml"]

PathT = tuple[str | int, ...]


class YamlDoc:
    """Plain data of one YAML file and the line of every path in it."""

    def __init__(self, path: Path, data: Any, lines: dict[PathT, int]):
        self.path, self.data, self.lines = path, data, lines

    def line(self, path: PathT) -> int | None:
        """Return the line of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def dotted(path: PathT) -> str:
    """Show a data path the way a user reads it: fields.Name.map.values, quality.source[2]."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_yaml(path: Path) -> YamlDoc:
    """Parse `path`; raise MappingError naming the line on a syntax error or a duplicate key."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingError(problem(path, None, "", "file not found")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(problem(path, None, "", f"cannot read file: {exc}")) from None

    loader = _loader_class()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise MappingError(problem(path, 1, "", "file is empty"))
        lines: dict[PathT, int] = {(): node.start_mark.line + 1}
        duplicates: list = []
        _walk(node, (), lines, duplicates, path)
        if duplicates:
            raise MappingError(duplicates)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        text_ = " ".join(x for x in (exc.context, exc.problem) if x)
        raise MappingError(problem(path, line, "", f"YAML syntax error: {text_}")) from None
    except yaml.YAMLError as exc:
        raise MappingError(problem(path, None, "", f"YAML error: {exc}")) from None
    finally:
        loader.dispose()
    return YamlDoc(path, data, lines)


_LOADER = None


def _loader_class():
    """Return a safe loader that reads booleans the YAML 1.2 way (only true/false).

    PyYAML follows YAML 1.1, where the bare key `on` (as in `on: [create]`) and the values
    yes/no/on/off become booleans; a mapping file would then silently lose its `on` key and a
    value map its "no" entry. Only true/false (any case) stay booleans here.
    """
    global _LOADER
    if _LOADER is None:
        import re

        import yaml

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        class Loader(base):  # type: ignore[misc, valid-type]
            pass

        Loader.yaml_implicit_resolvers = {
            first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
            for first, resolvers in base.yaml_implicit_resolvers.items()
        }
        Loader.add_implicit_resolver(
            "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
        )
        _LOADER = Loader
    return _LOADER


def _walk(node, here: PathT, lines: dict[PathT, int], duplicates: list, file: Path) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                duplicates.append(
                    problem(
                        file,
                        line,
                        dotted((*here, key)),
                        f"duplicate key '{key}' (first defined on line {seen[key]}); "
                        "YAML would silently keep only the last one",
                    )
                )
                continue
            seen[key] = line
            lines[(*here, key)] = line
            _walk(value_node, (*here, key), lines, duplicates, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*here, index)] = item.start_mark.line + 1
            _walk(item, (*here, index), lines, duplicates, file)
