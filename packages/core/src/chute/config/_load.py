"""Reading an API file: safe YAML without duplicate keys, Cortex's other kinds skipped, msgspec's
type check, the rules, every problem collected with its line; and writing it back
(:func:`dump_apis`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import msgspec
import yaml

from chute.config._issues import (
    ConfigIssue,
    _api_index,
    _Issues,
    _kind,
    _yaml_issue,
)
from chute.config._messages import _translate
from chute.config._models import API
from chute.config._problems import compose, locate, type_problems
from chute.config._rules import _check_across, _check_api
from chute.errors import ConfigError, ConfigValidationError

logger = logging.getLogger("chute.config")

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe YAML loading that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        result: dict[Any, Any] = super().construct_mapping(node, deep)
        return result


def load_apis(path: str | os.PathLike[str]) -> list[API]:
    """Read an API configuration file: a YAML list of Cortex ``AsyncAPI`` specs.

    Returns the APIs with defaults filled in. Raises :class:`ConfigValidationError` listing
    every problem found, or :class:`~chute.errors.ConfigError` when the file cannot be read.
    """
    file = os.fspath(path)
    try:
        with open(file, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, expected a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    return loads_apis(data, file=file)


def loads_apis(data: str | bytes, *, file: str = "<string>") -> list[API]:
    """Like :func:`load_apis`, for YAML text already in memory; ``file`` names it in errors."""
    try:
        document = yaml.load(data, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigValidationError([_yaml_issue(file, exc)]) from None

    if document is None:
        raise ConfigValidationError(
            [ConfigIssue(file, "$", "expected a YAML list of APIs (got an empty file)")]
        )
    if not isinstance(document, list):
        hint = ""
        if isinstance(document, dict) and "name" in document:
            hint = "; write a single API as a list item: '- name: ...'"
        raise ConfigValidationError(
            [ConfigIssue(file, "$", f"expected a YAML list of APIs (got {_kind(document)}){hint}")]
        )
    if not document:
        raise ConfigValidationError(
            [ConfigIssue(file, "$", "expected at least one API (got an empty list)")]
        )

    issues = _Issues(file)
    apis: list[API | None] = []
    skipped: list[tuple[int, str, Any]] = []
    for i, item in enumerate(document):
        if _other_kind(item):
            # Cortex files mix kinds; chute serves the AsyncAPIs and says what it left out.
            skipped.append((i, item["kind"], item.get("name", "?")))
            continue
        api = _convert_api(item, f"$[{i}]", issues)
        if api is not None:
            _check_api(api, f"$[{i}]", issues)
        apis.append(api)
    if not apis and not issues.items:
        listing = ", ".join(f"$[{i}] ({kind} {name!r})" for i, kind, name in skipped)
        issues.add(
            "$",
            "expected at least one API of kind AsyncAPI: chute runs Cortex's Async APIs only "
            f"(skipped {listing})",
        )
    _check_across(apis, issues)
    issues.items.sort(key=_api_index)  # stable: each API's issues together, in file order
    if issues.items:
        tree = compose(data, _Loader)
        raise ConfigValidationError(
            [msgspec.structs.replace(i, line=locate(tree, i.path)) for i in issues.items]
        )
    for i, kind, name in skipped:
        logger.warning(
            "%s: $[%d]: skipped %s %r: chute runs Cortex's AsyncAPIs only",
            file,
            i,
            kind,
            name,
            extra={"file": file, "path": f"$[{i}]", "kind": kind},
        )
    return [_with_defaults(api) for api in apis if api is not None]


def find_api(apis: Iterable[API], name: str) -> API:
    """The API called ``name``; :class:`~chute.errors.ConfigError` naming the known ones if none."""
    known = []
    for api in apis:
        if api.name == name:
            return api
        known.append(api.name)
    listing = ", ".join(sorted(known)) or "none"
    raise ConfigError(f"no API named {name!r} in the configuration (known: {listing})")


def dump_apis(apis: Iterable[API]) -> str:
    """The APIs as normalised YAML: every key written, defaults filled, in a stable order.

    Loading the output again gives equal objects.
    """
    return msgspec.yaml.encode([_plain(api) for api in apis]).decode()


def _plain(value: Any) -> Any:
    """Builtins for YAML output. Unlike ``msgspec.to_builtins`` this writes defaults too; a
    ``None`` is written only where it overrides a non-null default (``cpu: null``)."""
    if isinstance(value, msgspec.Struct):
        out = {}
        for field in msgspec.structs.fields(value):
            item = getattr(value, field.name)
            if item is None and field.default is None:
                continue
            out[field.encode_name] = _plain(item)
        return out
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


_OTHER_KINDS = ("RealtimeAPI", "BatchAPI", "TaskAPI", "TrafficSplitter")


def _other_kind(item: Any) -> bool:
    """An entry of another Cortex API kind (RealtimeAPI, BatchAPI, …), which chute skips."""
    return isinstance(item, dict) and item.get("kind") in _OTHER_KINDS


#: Keys of Cortex's API format before v0.36 (Python predictors and handlers, not containers).
_LEGACY_KEYS = ("predictor", "handler")


def _cortex_defaults(item: Any) -> Any:
    """``item`` with the values Cortex accepts as 'use the default' taken out, so the defaults
    apply: ``pod.port: null``, and probe timings of 0 (Kubernetes defaults a 0 there)."""
    if not isinstance(item, dict) or not isinstance(item.get("pod"), dict):
        return item
    pod = dict(item["pod"])
    if "port" in pod and pod["port"] is None:
        del pod["port"]
    containers = pod.get("containers")
    if isinstance(containers, list):
        pod["containers"] = [_probe_defaults(c) for c in containers]
    return {**item, "pod": pod}


def _probe_defaults(container: Any) -> Any:
    if not isinstance(container, dict):
        return container
    out = dict(container)
    for key in ("readiness_probe", "liveness_probe"):
        probe = out.get(key)
        if isinstance(probe, dict):
            out[key] = {
                k: v
                for k, v in probe.items()
                if not (k in _PROBE_TIMINGS and v == 0 and not isinstance(v, bool))
            }
    return out


#: Probe timings whose 0 means Kubernetes' default (timeout 1 s, period 10 s, thresholds 1, 3).
_PROBE_TIMINGS = ("timeout_seconds", "period_seconds", "success_threshold", "failure_threshold")


def _convert_api(item: Any, where: str, issues: _Issues) -> API | None:
    """msgspec's type check of one API; its first error becomes one issue with its path."""
    if isinstance(item, dict) and "kind" in item and item["kind"] != "AsyncAPI":
        issues.add(f"{where}.kind", "expected AsyncAPI", item["kind"])
        return None
    legacy = [k for k in _LEGACY_KEYS if isinstance(item, dict) and k in item]
    if legacy:
        issues.add(
            f"{where}.{legacy[0]}",
            f"this is Cortex's API format from before v0.36 (`{legacy[0]}:` with Python "
            "code); chute runs the container format of v0.36 and later: serve your code as a "
            "web server (POST / on $CORTEX_PORT, answering JSON) in an image, list it under "
            "`pod.containers`, and drop the `predictor`/`handler` key (see "
            "docs/coming-from-cortex.md)",
        )
        return None
    item = _cortex_defaults(item)
    try:
        return msgspec.convert(item, API)
    except msgspec.ValidationError as exc:
        # Every problem of the API, not only msgspec's first (chute/config/_problems.py).
        found = type_problems(item, API, where, _translate) or [_translate(str(exc), where, item)]
        for path, message in found:
            issues.add(path, message)
        return None


def _with_defaults(api: API) -> API:
    """Fill in the defaults Cortex derives from other keys (validations.go, ValidateAPI)."""
    scaling = api.autoscaling
    init = scaling.min_replicas if scaling.init_replicas is None else scaling.init_replicas
    target = (
        float(api.pod.max_concurrency)
        if scaling.target_in_flight is None
        else float(scaling.target_in_flight)
    )
    return msgspec.structs.replace(
        api,
        autoscaling=msgspec.structs.replace(scaling, init_replicas=init, target_in_flight=target),
        networking=msgspec.structs.replace(api.networking, endpoint=api.endpoint),
    )
