"""Every type problem of an API file in one run, each with its line (``chute validate``).

msgspec stops at the first error of a document. :func:`type_problems` walks the raw YAML data
along the config Structs instead: unknown and missing keys of every mapping, and each value
checked on its own, so a file with three typos gets three problems. :func:`locate` finds the
line of a problem's path in the YAML node tree (``yaml.compose``), never from an error text.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterator
from typing import Any

import msgspec
import yaml

#: One problem: its JSON path (``$[0].pod.port``) and what was expected there.
Problem = tuple[str, str]

_TOKEN = re.compile(r"\[(\d+)\]|\.([^.\[]+)")


def type_problems(
    raw: Any, annotation: Any, path: str, translate: typing.Callable[[str, str, Any], Problem]
) -> list[Problem]:
    """Every problem of ``raw`` against ``annotation`` (a config Struct, usually ``API``).

    ``translate(error, path, raw)`` turns the message of a leaf value's msgspec error into a
    path and a readable message (chute.config's wording); the walk itself decides the paths.
    """
    struct = _struct(annotation)
    if struct is not None and isinstance(raw, dict):
        return list(_struct_problems(raw, struct, path, translate))
    item = _list_item(annotation)
    if item is not None and _struct(item) is not None and isinstance(raw, list):
        found: list[Problem] = []
        for i, value in enumerate(raw):
            found += type_problems(value, item, f"{path}[{i}]", translate)
        return found
    try:
        msgspec.convert(raw, annotation)
    except msgspec.ValidationError as exc:
        return [translate(str(exc), path, raw)]
    return []


def _struct_problems(
    raw: dict[Any, Any],
    struct: type[msgspec.Struct],
    path: str,
    translate: typing.Callable[[str, str, Any], Problem],
) -> Iterator[Problem]:
    fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
    for key, value in raw.items():
        if not isinstance(key, str):
            yield path, "expected keys that are strings"
            continue
        field = fields.get(key)
        if field is None:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            yield f"{path}.{key}", f"unknown key; {hint}expected one of: {', '.join(fields)}"
            continue
        yield from type_problems(value, field.type, f"{path}.{key}", translate)
    for name, field in fields.items():
        if field.required and name not in raw:
            yield f"{path}.{name}", "required key is missing"


def _struct(annotation: Any) -> type[msgspec.Struct] | None:
    """The Struct class in ``X`` or ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, msgspec.Struct):
                return arg
    return None


def _list_item(annotation: Any) -> Any:
    """``X`` for ``list[X]`` or ``list[X] | None``; None otherwise."""
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) is list:
                return typing.get_args(arg)[0]
    return None


def compose(data: str | bytes, loader: type[yaml.SafeLoader]) -> yaml.Node | None:
    """The YAML node tree of ``data`` (None if it does not parse: that is reported apart)."""
    try:
        node: yaml.Node | None = yaml.compose(data, Loader=loader)
    except yaml.YAMLError:
        return None
    return node


def locate(root: yaml.Node | None, path: str) -> int | None:
    """The 1-based line of ``path`` (``$[0].pod.containers[1].compute.mem``) in the node tree.

    A key's line is where the key is written; a missing key's is its parent's line; an
    item's is where the item starts. None when the tree does not hold the path at all.
    """
    if root is None or not path.startswith("$"):
        return None
    node: yaml.Node = root
    line = node.start_mark.line
    for match in _TOKEN.finditer(path, 1):
        index, key = match.groups()
        if index is not None:
            if not isinstance(node, yaml.SequenceNode) or int(index) >= len(node.value):
                return line + 1
            node = node.value[int(index)]
            line = node.start_mark.line
            continue
        if not isinstance(node, yaml.MappingNode):
            return line + 1
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                line = key_node.start_mark.line
                node = value_node
                break
        else:
            return line + 1  # a missing key: the line of the key (or item) that holds it
    return line + 1
