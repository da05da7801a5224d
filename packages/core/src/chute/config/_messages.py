"""msgspec's error texts (``Expected `int`, got `str` - at `$.pod.port```) turned into a JSON
path and a readable message in chute's wording."""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

import msgspec

from chute.config._models import API

_MSGSPEC_TYPES = {
    "object": "a mapping",
    "array": "a list",
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
}
_MSGSPEC_AT = re.compile(
    r"^(?P<what>.*?)(?: - at `(?P<key>key)` in `(?P<kpath>[^`]*)`| - at `(?P<path>[^`]*)`)?$"
)
_MSGSPEC_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]+)`(?:, got `(?P<got>[^`]+)`)?$")
_MSGSPEC_FIELD = re.compile(
    r"^Object (?P<what>contains unknown|missing required) field `(?P<field>[^`]+)`$"
)


def _readable_types(spec: str) -> str:
    names = [_MSGSPEC_TYPES.get(part.strip(), part.strip()) for part in spec.split("|")]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _translate(error: str, where: str, raw: Any) -> tuple[str, str]:
    """Turn msgspec's 'Expected `int`, got `str` - at `$.pod.port`' into a path and a message."""
    at = _MSGSPEC_AT.match(error)
    assert at is not None  # the pattern matches any text
    what = at["what"]
    if at["key"]:
        return where + at["kpath"][1:], "expected keys that are strings"
    relative = (at["path"] or "$")[1:]
    if "[...]" in relative:  # msgspec does not name the mapping key; find it in the data
        relative = _name_keys(raw, relative) or relative
    path = where + relative
    expected = _MSGSPEC_EXPECTED.match(what)
    if expected:
        want, got = expected["want"], expected["got"]
        message = f"expected {_readable_types(want)}"
        if not relative and want == "object":
            message = "expected an API: a mapping with keys name, kind and pod"
        if got:
            message += f" (got {_readable_types(got)})"
        if want.startswith("str") and got in ("int", "float", "bool"):
            message += "; quote the value to make it a string"
        return path, message
    field = _MSGSPEC_FIELD.match(what)
    if field:
        name = field["field"]
        if field["what"] == "missing required":
            return f"{path}.{name}", "required key is missing"
        known = _field_names(relative)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{path}.{name}", f"unknown key; {hint}expected one of: {', '.join(known)}"
    return path, what[:1].lower() + what[1:]


def _name_keys(raw: Any, relative: str) -> str | None:
    """Replace msgspec's ``[...]`` (a mapping value) with the first key whose value is not a
    string, the only kind of mapping value the file has (``env``)."""
    node, out = raw, ""
    try:
        for token in re.findall(r"\.\w+|\[\d+\]|\[\.\.\.\]", relative):
            if token == "[...]":
                key = next(k for k, v in node.items() if not isinstance(v, str))
                node, out = node[key], f"{out}.{key}"
            elif token.startswith("["):
                node, out = node[int(token[1:-1])], out + token
            else:
                node, out = node[token[1:]], out + token
    except (LookupError, StopIteration, AttributeError, TypeError):
        return None
    return out


def _field_names(relative: str) -> list[str]:
    """The keys allowed at a path inside one API ('.pod.containers[0]' → Container's fields)."""
    current: Any = API
    for name in re.findall(r"\.(\w+)", relative):
        hints = {f.name: f.type for f in msgspec.structs.fields(current)}
        current = _struct_in(hints.get(name))
        if current is None:
            return []
    return [f.encode_name for f in msgspec.structs.fields(current)]


def _struct_in(annotation: Any) -> Any:
    """The Struct class inside ``X``, ``X | None`` or ``list[X]``, if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) in (
        typing.Union,
        list,
    ):
        for arg in typing.get_args(annotation):
            found = _struct_in(arg)
            if found is not None:
                return found
    return None
