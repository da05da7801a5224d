"""The API file's shape: frozen msgspec Structs, one per mapping of a Cortex ``AsyncAPI``
(plus chute's own keys), with the few derived values callers read (``API.endpoint``,
``Retries.backoff``). Field order is the order ``dump_apis`` writes."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import ClassVar, Literal

import msgspec

from chute.backoff import Backoff
from chute.config._units import parse_duration
from chute.errors import ConfigError

Quantity = str | int | float


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


def _seconds(text: str | None) -> float | None:
    """``text`` parsed as a duration, once, when a Struct is made; None when it is none (the
    rules report a bad one at load, and the property that reads it raises then)."""
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ConfigError:
        return None


class Retries(Base, frozen=True, kw_only=True, dict=True):
    """How often a failed attempt is tried again, and after how long (docs/retries.md)."""

    max_attempts: int = 1  # total, including the first; 1 = Cortex's behaviour (no retry)
    initial_backoff: str = "1s"
    max_backoff: str = "5m"
    multiplier: float = 2.0
    jitter: bool = True
    retry_on: tuple[str | int, ...] = ("connection", "timeout", "429", "503")

    # Derived once in __post_init__ (read on every failed attempt); not fields.
    _initial_backoff: ClassVar[float | None]
    _max_backoff: ClassVar[float | None]
    _retry_on_types: ClassVar[frozenset[str]]
    _retry_on_status_codes: ClassVar[frozenset[int]]

    def __post_init__(self) -> None:
        set_ = msgspec.structs.force_setattr
        set_(self, "_initial_backoff", _seconds(self.initial_backoff))
        set_(self, "_max_backoff", _seconds(self.max_backoff))
        set_(self, "_retry_on_types", frozenset(str(i) for i in self.retry_on if not _is_status(i)))
        set_(
            self,
            "_retry_on_status_codes",
            frozenset(int(i) for i in self.retry_on if _is_status(i)),
        )

    @property
    def initial_backoff_seconds(self) -> float:
        if self._initial_backoff is None:
            return parse_duration(self.initial_backoff)  # not a duration: raises ConfigError
        return self._initial_backoff

    @property
    def max_backoff_seconds(self) -> float:
        if self._max_backoff is None:
            return parse_duration(self.max_backoff)  # not a duration: raises ConfigError
        return self._max_backoff

    @property
    def retry_on_types(self) -> frozenset[str]:
        """The failure types that retry (``connection``, ``timeout``, ...)."""
        return self._retry_on_types

    @property
    def retry_on_status_codes(self) -> frozenset[int]:
        """The container status codes that retry (429, 503, ...)."""
        return self._retry_on_status_codes

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


class Deadlines(Base, frozen=True, kw_only=True, dict=True):
    """How long a request may wait in the queue and run in the container (docs/deadlines.md).
    ``None`` keeps Cortex's behaviour: no limit."""

    queue: str | None = None
    execution: str | None = None

    # Parsed once in __post_init__; not fields.
    _queue: ClassVar[float | None]
    _execution: ClassVar[float | None]

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "_queue", _seconds(self.queue))
        msgspec.structs.force_setattr(self, "_execution", _seconds(self.execution))

    @property
    def queue_seconds(self) -> float | None:
        if self.queue is not None and self._queue is None:
            return parse_duration(self.queue)  # not a duration: raises ConfigError
        return self._queue

    @property
    def execution_seconds(self) -> float | None:
        if self.execution is not None and self._execution is None:
            return parse_duration(self.execution)  # not a duration: raises ConfigError
        return self._execution


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
