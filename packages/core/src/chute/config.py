"""API configuration: Cortex's Async API YAML, parsed into frozen msgspec Structs.

A file is a YAML list of APIs (``kind: AsyncAPI``). Unknown keys are rejected and every problem
is reported with the file and its JSON path (``$[0].pod.containers[1].compute.mem``). Loading
checks msgspec's types first, then the rules Cortex enforced in ``pkg/types/spec/validations.go``
(plus a few of chute's own), and collects every violation before raising. The returned objects
carry Cortex's defaults filled in (``init_replicas``, ``target_in_flight``, ``endpoint``), so no
caller repeats that logic. The keys, defaults and rules are documented in docs/configuration.md.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import random
import re
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, DecimalException
from typing import Any, Literal

import msgspec
import yaml

from chute.backoff import Backoff
from chute.config_problems import compose, locate, type_problems
from chute.errors import ConfigError

logger = logging.getLogger("chute.config")

Quantity = str | int | float


# --- the file's shape -----------------------------------------------------------------------
# Field order is the order `dump_apis` writes; kw_only lets required fields come last.


class Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class HTTPGet(Base, frozen=True, kw_only=True):
    port: int
    path: str = "/"


class TCPSocket(Base, frozen=True, kw_only=True):
    port: int


class Exec(Base, frozen=True, kw_only=True):
    command: list[str]


class Probe(Base, frozen=True, kw_only=True):
    http_get: HTTPGet | None = None
    tcp_socket: TCPSocket | None = None
    exec: Exec | None = None
    initial_delay_seconds: int = 0
    timeout_seconds: int = 1
    period_seconds: int = 10
    success_threshold: int = 1
    failure_threshold: int = 3


class PreStop(Base, frozen=True, kw_only=True):
    http_get: HTTPGet | None = None
    exec: Exec | None = None


class Compute(Base, frozen=True, kw_only=True):
    cpu: Quantity | None = "200m"
    gpu: int = 0
    inf: int = 0
    mem: Quantity | None = None
    shm: Quantity | None = None


class Container(Base, frozen=True, kw_only=True):
    name: str
    image: str
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] = {}
    compute: Compute = Compute()
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    pre_stop: PreStop | None = None


class Pod(Base, frozen=True, kw_only=True):
    port: int = 8080
    max_concurrency: int = 1
    containers: list[Container]


class Autoscaling(Base, frozen=True, kw_only=True):
    min_replicas: int = 1
    max_replicas: int = 100
    init_replicas: int | None = None  # load_apis fills in min_replicas
    target_in_flight: float | None = None  # load_apis fills in pod.max_concurrency
    window: str = "60s"
    downscale_stabilization_period: str = "5m"
    upscale_stabilization_period: str = "1m"
    max_downscale_factor: float = 0.75
    max_upscale_factor: float = 1.5
    downscale_tolerance: float = 0.05
    upscale_tolerance: float = 0.05


class UpdateStrategy(Base, frozen=True, kw_only=True):
    max_surge: str | int = "25%"
    max_unavailable: str | int = "25%"


class Networking(Base, frozen=True, kw_only=True):
    endpoint: str | None = None  # load_apis fills in "/<name>", canonical


# chute's own keys (not in Cortex): docs/configuration.md, docs/retries.md, docs/deadlines.md,
# docs/webhooks.md.

#: Failure types (``error.type``) that ``retries.retry_on`` may name.
RETRYABLE_FAILURE_TYPES = frozenset(
    {"connection", "timeout", "container_status", "content_type", "invalid_json"}
)
#: The events a webhook may subscribe to: the terminal statuses.
WEBHOOK_EVENTS = ("completed", "failed", "cancelled", "expired")


class Retries(Base, frozen=True, kw_only=True):
    """How often a failed attempt is tried again, and after how long (docs/retries.md)."""

    max_attempts: int = 1  # total, including the first; 1 = Cortex's behaviour (no retry)
    initial_backoff: str = "1s"
    max_backoff: str = "5m"
    multiplier: float = 2.0
    jitter: bool = True
    retry_on: tuple[str | int, ...] = ("connection", "timeout", "429", "503")

    @property
    def initial_backoff_seconds(self) -> float:
        return parse_duration(self.initial_backoff)

    @property
    def max_backoff_seconds(self) -> float:
        return parse_duration(self.max_backoff)

    @property
    def retry_on_types(self) -> frozenset[str]:
        """The failure types that retry (``connection``, ``timeout``, ...)."""
        return frozenset(str(item) for item in self.retry_on if not _is_status(item))

    @property
    def retry_on_status_codes(self) -> frozenset[int]:
        """The container status codes that retry (429, 503, ...)."""
        return frozenset(int(item) for item in self.retry_on if _is_status(item))

    def retries(self, error_type: str, status_code: int | None) -> bool:
        """Whether a failure of this type (and container status code) is worth another try."""
        if status_code is not None and status_code in self.retry_on_status_codes:
            return True
        return error_type in self.retry_on_types

    def backoff(self, attempt: int, *, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before the attempt after ``attempt`` (1-based):
        ``initial * multiplier**(attempt-1)``, capped at ``max_backoff``, then with full
        jitter a uniform draw from ``[0, that]`` (:class:`chute.backoff.Backoff`)."""
        return Backoff(
            first=self.initial_backoff_seconds,
            cap=self.max_backoff_seconds,
            factor=self.multiplier,
            jitter="full" if self.jitter else "none",
        ).delay(attempt, rand=rand)


def _is_status(item: str | int) -> bool:
    return isinstance(item, int) or item.isdigit()


class Deadlines(Base, frozen=True, kw_only=True):
    """How long a request may wait in the queue and run in the container (docs/deadlines.md).
    ``None`` keeps Cortex's behaviour: no limit."""

    queue: str | None = None
    execution: str | None = None

    @property
    def queue_seconds(self) -> float | None:
        return None if self.queue is None else parse_duration(self.queue)

    @property
    def execution_seconds(self) -> float | None:
        return None if self.execution is None else parse_duration(self.execution)


class Results(Base, frozen=True, kw_only=True):
    """What a container may answer (docs/results.md). ``json`` is Cortex's rule: a JSON body
    with ``Content-Type: application/json``. ``any``: any content type; a result that is not
    JSON is stored as bytes with its type, and read at ``GET <endpoint>/<id>/result``."""

    content_type: Literal["json", "any"] = "json"


class Webhook(Base, frozen=True, kw_only=True):
    """Where and for which events a request's outcome is POSTed (docs/webhooks.md)."""

    #: Where every request's outcome goes; None: only requests that name a URL get one.
    url: str | None = None
    events: tuple[str, ...] = WEBHOOK_EVENTS
    #: Name of the environment variable holding the Standard Webhooks secret (``whsec_…``);
    #: ``None`` sends unsigned deliveries.
    secret_env: str | None = None
    #: Where a request's own URL (``X-Chute-Webhook``) may point: hosts (``hooks.example.com``,
    #: ``*.example.com``) or URL prefixes (``https://example.com/hooks/``). Empty: the header
    #: is refused (400).
    request_urls: tuple[str, ...] = ()
    #: Let request URLs reach loopback, private, link-local and other non-public addresses.
    private_targets: bool = False


class Auth(Base, frozen=True, kw_only=True):
    """Bearer-token API keys for the gateway (docs/auth.md)."""

    keys_env: str | None = None  # env var holding comma-separated keys
    keys_file: str | None = None  # file with one key per line


class API(Base, frozen=True, kw_only=True):
    name: str
    kind: Literal["AsyncAPI"]
    pod: Pod
    autoscaling: Autoscaling = Autoscaling()
    node_groups: list[str] | None = None
    update_strategy: UpdateStrategy = UpdateStrategy()
    networking: Networking = Networking()
    retries: Retries = Retries()
    deadlines: Deadlines = Deadlines()
    results: Results = Results()
    webhook: Webhook | None = None
    auth: Auth | None = None

    @property
    def endpoint(self) -> str:
        """The route prefix: ``networking.endpoint`` or ``/<name>``, canonical (no trailing /)."""
        raw = self.networking.endpoint or self.name
        return "/" + raw.strip("/")


# --- errors ---------------------------------------------------------------------------------


class ConfigIssue(msgspec.Struct, frozen=True):
    """One problem in a configuration file: where it is and what was expected there."""

    file: str
    path: str  # JSON path: "$[0].pod.containers[1].compute.mem"; "$" for the whole file
    message: str
    line: int | None = None  # 1-based, where the path is written in the file

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}"


class ConfigValidationError(ConfigError):
    """A configuration file has one or more problems; ``issues`` lists every one of them."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


# --- Kubernetes quantities and Go durations -------------------------------------------------

_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_SUFFIX_SCALE = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a Kubernetes quantity (``500m``, ``1``, ``0.5``, ``1Gi``, ``512Mi``, ``1G``, ``1e3``)
    into an exact :class:`~decimal.Decimal` in base units (cores, bytes).

    Raises :class:`~chute.errors.ConfigError` when the value is not a quantity.
    """
    if isinstance(value, bool):  # YAML's true/false are ints to Python, never quantities
        raise ConfigError(f"expected a quantity such as 500m, 1 or 512Mi (got {_show(value)})")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"expected a finite quantity (got {_show(value)})")
        return Decimal(repr(value))
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ConfigError(
            f"expected a quantity such as 500m, 1, 0.5, 1Gi, 512Mi, 1G or 1e3 (got {_show(value)})"
        )
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E"):
        try:
            return number.scaleb(int(suffix[1:]))
        except DecimalException as exc:  # absurd exponents
            raise ConfigError(f"expected a quantity in range (got {_show(value)})") from exc
    return number * _SUFFIX_SCALE[suffix]


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_NS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "μs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


def _duration_ns(text: str) -> int:
    """Go's ``time.ParseDuration``, exact, in integer nanoseconds."""
    raw = text.strip()
    sign = -1 if raw.startswith("-") else 1
    body = raw[1:] if raw[:1] in ("+", "-") else raw
    if body == "0":
        return 0
    total = Decimal(0)
    position = 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += Decimal(match[1]) * _DURATION_NS[match[2]]
        position = match.end()
    if not body or position != len(body):
        raise ConfigError(
            "expected a duration such as 60s, 5m, 1h30m or 500ms, in units ns, us, ms, s, m, h "
            f"(got {_show(text)})"
        )
    return sign * int(total)


def parse_duration(text: str) -> float:
    """Parse a Go-style duration (``60s``, ``5m``, ``1h30m``, ``500ms``) into seconds.

    Raises :class:`~chute.errors.ConfigError` when the text is not a duration.
    """
    return _duration_ns(text) / 1e9


# --- loading --------------------------------------------------------------------------------

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


# --- issues ---------------------------------------------------------------------------------


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
_OTHER_KINDS = ("RealtimeAPI", "BatchAPI", "TaskAPI", "TrafficSplitter")


def _readable_types(spec: str) -> str:
    names = [_MSGSPEC_TYPES.get(part.strip(), part.strip()) for part in spec.split("|")]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


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
        # Every problem of the API, not only msgspec's first (chute/config_problems.py).
        found = type_problems(item, API, where, _translate) or [_translate(str(exc), where, item)]
        for path, message in found:
            issues.add(path, message)
        return None


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


# --- rules ----------------------------------------------------------------------------------

_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_NODE_GROUP = re.compile(r"^[A-Za-z0-9_-]+$")
_ENDPOINT_CHARS = re.compile(r"^[a-zA-Z0-9_./-]*$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_PERCENT = re.compile(r"^(\d+)%$")
# The docker/distribution reference grammar (name[:tag][@digest]).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IMAGE = re.compile(
    rf"^(?:(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?/)?"
    rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)

GATEWAY_PORT = 8888  # Cortex reserved it for its gateway and in-pod proxy; so does chute
DEQUEUER_ADMIN_PORT = 15000  # the dequeuer sidecar's /healthz and /metrics
RESERVED_CONTAINER_NAMES = frozenset({"dequeuer", "proxy"})
RESERVED_ENV_PREFIXES = ("CORTEX_", "KUBEXIT_", "CHUTE_")
MAX_API_NAME = 42
MAX_CONTAINER_NAME = 63
MAX_ENDPOINT = 1000
_MIN_CPU = Decimal("0.02")  # 20m
_MIN_MEM = Decimal(20 * 2**20)  # 20Mi
_TEN_SECONDS_NS = 10 * 10**9


def _check_dns_1035(value: str, path: str, limit: int, issues: _Issues) -> bool:
    if not _DNS_1035.match(value):
        issues.add(
            path,
            "expected a DNS-1035 label: lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit",
            value,
        )
        return False
    if len(value) > limit:
        issues.add(path, f"expected at most {limit} characters (got {len(value)})")
        return False
    return True


def _check_api(api: API, where: str, issues: _Issues) -> None:
    if _check_dns_1035(api.name, f"{where}.name", MAX_API_NAME, issues) and api.name.startswith(
        "b-"
    ):
        issues.add(f"{where}.name", "expected a name that does not start with 'b-'", api.name)
    _check_pod(api.pod, f"{where}.pod", issues)
    _check_autoscaling(api, f"{where}.autoscaling", issues)
    _check_node_groups(api.node_groups, f"{where}.node_groups", issues)
    _check_update_strategy(api.update_strategy, f"{where}.update_strategy", issues)
    if api.networking.endpoint is not None:
        _check_endpoint(api.networking.endpoint, f"{where}.networking.endpoint", issues)
    _check_retries(api.retries, f"{where}.retries", issues)
    _check_deadlines(api.deadlines, f"{where}.deadlines", issues)
    if api.webhook is not None:
        _check_webhook(api.webhook, f"{where}.webhook", issues)
    if api.auth is not None:
        _check_auth(api.auth, f"{where}.auth", issues)


def _check_pod(pod: Pod, where: str, issues: _Issues) -> None:
    if pod.port == GATEWAY_PORT:
        issues.add(
            f"{where}.port", f"expected a port other than {GATEWAY_PORT}, the gateway's", pod.port
        )
    elif pod.port == DEQUEUER_ADMIN_PORT:
        issues.add(
            f"{where}.port",
            f"expected a port other than {DEQUEUER_ADMIN_PORT}, the dequeuer's admin port",
            pod.port,
        )
    else:
        _check_port(pod.port, f"{where}.port", issues)
    if not 1 <= pod.max_concurrency <= 100:
        issues.add(f"{where}.max_concurrency", "expected an integer in 1..100", pod.max_concurrency)
    if not pod.containers:
        issues.add(f"{where}.containers", "expected at least one container (got an empty list)")
    names: dict[str, int] = {}
    for j, container in enumerate(pod.containers):
        path = f"{where}.containers[{j}]"
        if container.name in names:
            issues.add(
                f"{path}.name",
                f"expected a container name unique in the pod; "
                f"{where}.containers[{names[container.name]}] already uses it",
                container.name,
            )
        names.setdefault(container.name, j)
        _check_container(container, path, issues)
    gpus = sum(c.compute.gpu for c in pod.containers)
    infs = sum(c.compute.inf for c in pod.containers)
    if gpus > 0 and infs > 0:
        issues.add(
            where,
            f"expected GPUs or Inferentia chips, not both (got gpu {gpus} and inf {infs} "
            "across the pod's containers)",
        )


def _check_port(port: int, path: str, issues: _Issues) -> None:
    if not 1 <= port <= 65535:
        issues.add(path, "expected a port in 1..65535", port)


def _check_container(container: Container, where: str, issues: _Issues) -> None:
    if (
        _check_dns_1035(container.name, f"{where}.name", MAX_CONTAINER_NAME, issues)
        and container.name in RESERVED_CONTAINER_NAMES
    ):
        issues.add(
            f"{where}.name",
            "expected a name other than 'dequeuer' and 'proxy', which chute's sidecars use",
            container.name,
        )
    if not container.image.strip():
        issues.add(f"{where}.image", "expected a container image reference", container.image)
    elif len(container.image) > 255 + 128 + 80 or not _IMAGE.match(container.image):
        issues.add(
            f"{where}.image",
            "expected an image reference like registry.example.com/team/app:tag",
            container.image,
        )
    for key in container.env:
        path = f"{where}.env.{key}"
        if key.startswith(RESERVED_ENV_PREFIXES):
            issues.add(
                path,
                "expected a variable name not starting with CORTEX_, KUBEXIT_ or CHUTE_, "
                "which are reserved",
            )
        elif not _ENV_NAME.match(key):
            issues.add(
                path,
                "expected a variable name of letters, digits, '_', '-' and '.' not "
                "starting with a digit",
            )
    _check_compute(container.compute, f"{where}.compute", issues)
    if container.readiness_probe is not None:
        _check_probe(container.readiness_probe, f"{where}.readiness_probe", issues, liveness=False)
    if container.liveness_probe is not None:
        _check_probe(container.liveness_probe, f"{where}.liveness_probe", issues, liveness=True)
    if container.pre_stop is not None:
        stop = container.pre_stop
        path = f"{where}.pre_stop"
        if (stop.http_get is None) == (stop.exec is None):
            issues.add(path, "expected exactly one of http_get or exec")
        if stop.http_get is not None:
            _check_port(stop.http_get.port, f"{path}.http_get.port", issues)
        if stop.exec is not None and not stop.exec.command:
            issues.add(f"{path}.exec.command", "expected at least one word (got an empty list)")


def _quantity(value: Quantity | None, path: str, issues: _Issues) -> Decimal | None:
    if value is None:
        return None
    try:
        return parse_quantity(value)
    except ConfigError as exc:
        issues.add(path, str(exc))
        return None


def _check_compute(compute: Compute, where: str, issues: _Issues) -> None:
    cpu = _quantity(compute.cpu, f"{where}.cpu", issues)
    if cpu is not None and cpu < _MIN_CPU:
        issues.add(f"{where}.cpu", "expected at least 20m (0.02 CPU)", compute.cpu)
    mem = _quantity(compute.mem, f"{where}.mem", issues)
    if mem is not None and mem < _MIN_MEM:
        issues.add(f"{where}.mem", "expected at least 20Mi", compute.mem)
    shm = _quantity(compute.shm, f"{where}.shm", issues)
    if shm is not None and shm < 0:
        issues.add(f"{where}.shm", "expected a size of 0 or more", compute.shm)
    if shm is not None and mem is not None and shm > mem:
        issues.add(f"{where}.shm", f"expected at most mem ({_show(compute.mem)})", compute.shm)
    for key in ("gpu", "inf"):
        count: int = getattr(compute, key)
        if count < 0:
            issues.add(f"{where}.{key}", "expected an integer of 0 or more", count)


def _check_probe(probe: Probe, where: str, issues: _Issues, *, liveness: bool) -> None:
    handlers = [
        name for name in ("http_get", "tcp_socket", "exec") if getattr(probe, name) is not None
    ]
    if liveness:
        if len(handlers) != 1:
            issues.add(where, "expected exactly one of http_get, tcp_socket or exec")
    elif probe.exec is not None:
        issues.add(
            f"{where}.exec",
            "expected http_get or tcp_socket; exec readiness probes are not supported, since "
            "the dequeuer (not Kubernetes) runs them",
        )
    elif len(handlers) != 1:
        issues.add(where, "expected exactly one of http_get or tcp_socket")
    if probe.http_get is not None:
        _check_port(probe.http_get.port, f"{where}.http_get.port", issues)
    if probe.tcp_socket is not None:
        _check_port(probe.tcp_socket.port, f"{where}.tcp_socket.port", issues)
    if probe.exec is not None and liveness and not probe.exec.command:
        issues.add(f"{where}.exec.command", "expected at least one word (got an empty list)")
    if probe.initial_delay_seconds < 0:
        issues.add(
            f"{where}.initial_delay_seconds", "expected 0 or more", probe.initial_delay_seconds
        )
    for key in ("timeout_seconds", "period_seconds", "success_threshold", "failure_threshold"):
        value: int = getattr(probe, key)
        if value < 1:
            issues.add(f"{where}.{key}", "expected 1 or more", value)
    if liveness and probe.success_threshold > 1:
        # Kubernetes rejects anything else on a liveness probe.
        issues.add(
            f"{where}.success_threshold", "expected 1 for a liveness probe", probe.success_threshold
        )


def _duration(value: str, path: str, issues: _Issues) -> int | None:
    try:
        return _duration_ns(value)
    except ConfigError as exc:
        issues.add(path, str(exc))
        return None


def _check_autoscaling(api: API, where: str, issues: _Issues) -> None:
    scaling = api.autoscaling
    low, high, init = scaling.min_replicas, scaling.max_replicas, scaling.init_replicas
    if low < 0:
        issues.add(f"{where}.min_replicas", "expected 0 or more", low)
    if high <= 0:
        issues.add(f"{where}.max_replicas", "expected 1 or more", high)
    if low >= 0 and 0 < high < low:
        issues.add(f"{where}.min_replicas", f"expected at most max_replicas ({high})", low)
    elif init is not None and low >= 0 and high > 0:
        if init < low:
            issues.add(f"{where}.init_replicas", f"expected at least min_replicas ({low})", init)
        elif init > high:
            issues.add(f"{where}.init_replicas", f"expected at most max_replicas ({high})", init)
    target = scaling.target_in_flight
    if target is not None and not (math.isfinite(target) and target > 0):
        issues.add(f"{where}.target_in_flight", "expected a number greater than 0", target)

    window = _duration(scaling.window, f"{where}.window", issues)
    if window is not None and (window < _TEN_SECONDS_NS or window % _TEN_SECONDS_NS):
        issues.add(
            f"{where}.window",
            "expected a duration of at least 10s and a multiple of 10s",
            scaling.window,
        )
    for key in ("downscale_stabilization_period", "upscale_stabilization_period"):
        text: str = getattr(scaling, key)
        period = _duration(text, f"{where}.{key}", issues)
        if period is not None and period < 0:
            issues.add(f"{where}.{key}", "expected a duration of 0s or more", text)

    down, up = scaling.max_downscale_factor, scaling.max_upscale_factor
    if not 0 <= down < 1:
        issues.add(f"{where}.max_downscale_factor", "expected a number in [0, 1)", down)
    if not up > 1:  # also catches NaN
        issues.add(f"{where}.max_upscale_factor", "expected a number greater than 1", up)
    if not 0 <= scaling.downscale_tolerance < 1:
        issues.add(
            f"{where}.downscale_tolerance",
            "expected a number in [0, 1)",
            scaling.downscale_tolerance,
        )
    if not 0 <= scaling.upscale_tolerance < math.inf:
        issues.add(
            f"{where}.upscale_tolerance",
            "expected a number of 0 or more",
            scaling.upscale_tolerance,
        )


def _check_node_groups(groups: list[str] | None, where: str, issues: _Issues) -> None:
    if groups is None:
        return
    if not groups:
        issues.add(where, "expected at least one node group; omit the key to allow them all")
    seen: set[str] = set()
    for k, group in enumerate(groups):
        if not _NODE_GROUP.match(group):
            issues.add(f"{where}[{k}]", "expected letters, digits, '-' and '_' only", group)
        elif group in seen:
            issues.add(f"{where}[{k}]", "expected each node group once", group)
        seen.add(group)


def _rollout_amount(value: str | int, path: str, issues: _Issues) -> int | None:
    """An update-strategy amount: an int ≥ 0 or "N%" (0..100). Returns N, or None if invalid."""
    if isinstance(value, int):
        number = value
    elif value.isdigit():  # Cortex casts the key to a string, so "2" means 2
        number = int(value)
    else:
        match = _PERCENT.match(value)
        if match is None or int(match[1]) > 100:
            issues.add(
                path, 'expected an integer of 0 or more, or a percentage "0%".."100%"', value
            )
            return None
        return int(match[1])
    if number < 0:
        issues.add(path, 'expected an integer of 0 or more, or a percentage "0%".."100%"', value)
        return None
    return number


def _check_update_strategy(strategy: UpdateStrategy, where: str, issues: _Issues) -> None:
    surge = _rollout_amount(strategy.max_surge, f"{where}.max_surge", issues)
    unavailable = _rollout_amount(strategy.max_unavailable, f"{where}.max_unavailable", issues)
    if surge == 0 and unavailable == 0:
        issues.add(where, "expected max_surge or max_unavailable above 0 (got both 0)")


def _check_endpoint(raw: str, path: str, issues: _Issues) -> None:
    canonical = "/" + raw.strip("/")  # what API.endpoint returns
    if not _ENDPOINT_CHARS.match(raw):
        issues.add(path, "expected letters, digits and '_', '.', '/', '-' only", raw)
    elif "//" in raw:
        issues.add(path, "expected no empty path segment ('//')", raw)
    elif canonical == "/":
        issues.add(path, "expected a path other than '/'", raw)
    elif len(canonical) > MAX_ENDPOINT:
        issues.add(path, f"expected at most {MAX_ENDPOINT} characters (got {len(canonical)})")


def _check_retries(retries: Retries, where: str, issues: _Issues) -> None:
    if not 1 <= retries.max_attempts <= 100:
        issues.add(f"{where}.max_attempts", "expected an integer in 1..100", retries.max_attempts)
    initial = _duration(retries.initial_backoff, f"{where}.initial_backoff", issues)
    if initial is not None and initial < 0:
        issues.add(f"{where}.initial_backoff", "expected a duration of 0s or more")
    ceiling = _duration(retries.max_backoff, f"{where}.max_backoff", issues)
    if initial is not None and ceiling is not None and initial >= 0 and ceiling < initial:
        issues.add(
            f"{where}.max_backoff",
            f"expected at least initial_backoff ({_show(retries.initial_backoff)})",
            retries.max_backoff,
        )
    if not (math.isfinite(retries.multiplier) and retries.multiplier >= 1):
        issues.add(f"{where}.multiplier", "expected a number of 1 or more", retries.multiplier)
    for k, item in enumerate(retries.retry_on):
        path = f"{where}.retry_on[{k}]"
        if _is_status(item):
            if not 100 <= int(item) <= 599:
                issues.add(path, "expected a status code in 100..599", item)
        elif item not in RETRYABLE_FAILURE_TYPES:
            known = ", ".join(sorted(RETRYABLE_FAILURE_TYPES))
            issues.add(path, f"expected a status code or one of: {known}", item)


def _check_deadlines(deadlines: Deadlines, where: str, issues: _Issues) -> None:
    for key in ("queue", "execution"):
        text: str | None = getattr(deadlines, key)
        if text is None:
            continue
        value = _duration(text, f"{where}.{key}", issues)
        if value is not None and value <= 0:
            issues.add(f"{where}.{key}", "expected a duration greater than 0s", text)


_WEBHOOK_URL = re.compile(r"^https?://[^/\s?#]+(?:[/?#]\S*)?$", re.IGNORECASE)
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOST_PATTERN = re.compile(
    r"^(\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
    r"|^\[[0-9A-Fa-f:.]+\]$"
)


def _check_webhook(webhook: Webhook, where: str, issues: _Issues) -> None:
    if webhook.url is None and not webhook.request_urls:
        issues.add(where, "expected url, request_urls or both; omit webhook to send none")
    if webhook.url is not None and not _WEBHOOK_URL.match(webhook.url):
        issues.add(f"{where}.url", "expected an http:// or https:// URL", webhook.url)
    for k, entry in enumerate(webhook.request_urls):
        if not (_WEBHOOK_URL.match(entry) or _HOST_PATTERN.match(entry)):
            issues.add(
                f"{where}.request_urls[{k}]",
                "expected a host (hooks.example.com, *.example.com) or an http(s):// URL prefix",
                entry,
            )
    if not webhook.events:
        issues.add(f"{where}.events", "expected at least one event; omit webhook to send none")
    seen: set[str] = set()
    for k, event in enumerate(webhook.events):
        if event not in WEBHOOK_EVENTS:
            issues.add(
                f"{where}.events[{k}]", f"expected one of: {', '.join(WEBHOOK_EVENTS)}", event
            )
        elif event in seen:
            issues.add(f"{where}.events[{k}]", "expected each event once", event)
        seen.add(event)
    if webhook.secret_env is not None and not _ENV_VAR.match(webhook.secret_env):
        issues.add(
            f"{where}.secret_env",
            "expected an environment variable name (letters, digits, '_')",
            webhook.secret_env,
        )


def _check_auth(auth: Auth, where: str, issues: _Issues) -> None:
    if auth.keys_env is None and auth.keys_file is None:
        issues.add(where, "expected keys_env or keys_file (or both); omit auth to allow anyone")
    if auth.keys_env is not None and not _ENV_VAR.match(auth.keys_env):
        issues.add(
            f"{where}.keys_env",
            "expected an environment variable name (letters, digits, '_')",
            auth.keys_env,
        )
    if auth.keys_file is not None and not auth.keys_file.strip():
        issues.add(f"{where}.keys_file", "expected a file path", auth.keys_file)


def _check_across(apis: list[API | None], issues: _Issues) -> None:
    """Names and endpoints must be unique across the file: they route requests."""
    names: dict[str, int] = {}
    endpoints: dict[str, tuple[int, str]] = {}
    for i, api in enumerate(apis):
        if api is None:
            continue
        if api.name in names:
            issues.add(
                f"$[{i}].name", f"expected a unique name; $[{names[api.name]}] has it too", api.name
            )
            continue  # its default endpoint clashes too: say it once
        names[api.name] = i
        if api.endpoint in endpoints:
            other, other_name = endpoints[api.endpoint]
            explicit = api.networking.endpoint is not None
            issues.add(
                f"$[{i}].networking.endpoint" if explicit else f"$[{i}].name",
                f"expected a unique endpoint; {api.endpoint} is already the endpoint of "
                f"API {_show(other_name)} at $[{other}]",
                api.networking.endpoint if explicit else api.name,
            )
        else:
            endpoints[api.endpoint] = (i, api.name)


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


__all__ = [
    "API",
    "Auth",
    "Autoscaling",
    "Compute",
    "ConfigIssue",
    "ConfigValidationError",
    "Container",
    "Deadlines",
    "Exec",
    "HTTPGet",
    "Networking",
    "Pod",
    "PreStop",
    "Probe",
    "Retries",
    "TCPSocket",
    "UpdateStrategy",
    "Webhook",
    "dump_apis",
    "find_api",
    "load_apis",
    "loads_apis",
    "parse_duration",
    "parse_quantity",
]
