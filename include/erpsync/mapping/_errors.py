"""Errors of the mapping package: one ConfigError that lists every problem found in a file.

A user fixing a mapping wants all problems at once, each with its place, so `MappingError` carries
a list of `Problem(file, line, field, problem)` and its message prints them one per line, sorted by
line. The first problem is also exposed as `.file`, `.line`, `.field` and `.problem`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erpsync.errors import ConfigError

__all__ = ["MappingError", "Problem"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a mapping file, and where."""

    file: str
    line: int | None
    field: str
    problem: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field or '(top level)'}: {self.problem}"


class MappingError(ConfigError):
    """A mapping file (or a value map it uses) is invalid; the message names file, line, field, problem."""

    def __init__(self, problems: list[Problem] | Problem):
        if isinstance(problems, Problem):
            problems = [problems]
        if not problems:
            raise ValueError("MappingError needs at least one problem")
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.field))
        first = self.problems[0]
        self.file, self.line, self.field, self.problem = first.file, first.line, first.field, first.problem
        if len(self.problems) == 1:
            message = first.problem
            field = f" field '{first.field}':" if first.field else ""
            message = f"{field} {first.problem}".strip()
        else:
            message = f"{len(self.problems)} problems:\n" + "\n".join(f"  {p}" for p in self.problems)
        where = f"{first.file}:{first.line}" if first.line else first.file
        super().__init__(message, where=where, details={"field": first.field, "line": first.line})


def problem(path: Path | str, line: int | None, field: str, text: str) -> Problem:
    """Build a Problem with the file shown as given (relative paths stay relative)."""
    return Problem(str(path), line, field, text)
