"""Problems in an API file: :class:`ConfigIssue` (file, JSON path, line, message; the error that
lists them is ``chute.errors.ConfigValidationError``), and how a value or a YAML error reads in
a message."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import yaml


class ConfigIssue(msgspec.Struct, frozen=True):
    """One problem in a configuration file: where it is and what was expected there."""

    file: str
    path: str  # JSON path: "$[0].pod.containers[1].compute.mem"; "$" for the whole file
    message: str
    line: int | None = None  # 1-based, where the path is written in the file

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}"


def _show(value: Any) -> str:
    """A value as the user wrote it (JSON spelling: "text", 12, true, null)."""
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


class _Issues:
    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[ConfigIssue] = []

    def add(self, path: str, message: str, got: Any = msgspec.UNSET) -> None:
        if got is not msgspec.UNSET:
            message = f"{message} (got {_show(got)})"
        self.items.append(ConfigIssue(self.file, path, message))


def _api_index(issue: ConfigIssue) -> int:
    match = re.match(r"^\$\[(\d+)\]", issue.path)
    return int(match[1]) if match else -1


def _yaml_issue(file: str, exc: yaml.YAMLError) -> ConfigIssue:
    if isinstance(exc, yaml.reader.ReaderError):  # bad bytes: no line, only an offset
        return ConfigIssue(
            file, "$", f"invalid YAML text at byte {exc.position}: {exc.reason} (expected UTF-8)"
        )
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{context}, {problem}" if context and "duplicate" not in problem else problem
    if mark is None:
        return ConfigIssue(file, "$", f"invalid YAML: {detail}")
    line = mark.line + 1
    return ConfigIssue(
        file, "$", f"invalid YAML at line {line}, column {mark.column + 1}: {detail}", line
    )


def _kind(value: Any) -> str:
    """How a YAML value reads to a user: 'a mapping', 'a string', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"
