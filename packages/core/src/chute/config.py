"""API configuration: Cortex's Async API YAML, parsed into frozen msgspec Structs.

A file is a YAML list of APIs (``kind: AsyncAPI``). Unknown keys are rejected and every error
names its path (``$[0].pod.containers[1].compute.mem``). Defaults are Cortex's. chute's own
settings live under documented keys of their own (see docs/configuration.md).

Cross-field rules that msgspec's types cannot express are checked in ``chute.config_rules``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Quantity = str | int | float


class Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class HTTPGet(Base, frozen=True):
    port: int
    path: str = "/"


class TCPSocket(Base, frozen=True):
    port: int


class Exec(Base, frozen=True):
    command: list[str]


class Probe(Base, frozen=True):
    http_get: HTTPGet | None = None
    tcp_socket: TCPSocket | None = None
    exec: Exec | None = None
    initial_delay_seconds: int = 0
    timeout_seconds: int = 1
    period_seconds: int = 10
    success_threshold: int = 1
    failure_threshold: int = 3


class PreStop(Base, frozen=True):
    http_get: HTTPGet | None = None
    exec: Exec | None = None


class Compute(Base, frozen=True):
    cpu: Quantity | None = "200m"
    gpu: int = 0
    inf: int = 0
    mem: Quantity | None = None
    shm: Quantity | None = None


class Container(Base, frozen=True):
    name: str
    image: str
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] = {}
    compute: Compute = Compute()
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    pre_stop: PreStop | None = None


class Pod(Base, frozen=True):
    containers: list[Container]
    port: int = 8080
    max_concurrency: int = 1


class Autoscaling(Base, frozen=True):
    min_replicas: int = 1
    max_replicas: int = 100
    init_replicas: int | None = None
    target_in_flight: float | None = None
    window: str = "60s"
    downscale_stabilization_period: str = "5m"
    upscale_stabilization_period: str = "1m"
    max_downscale_factor: float = 0.75
    max_upscale_factor: float = 1.5
    downscale_tolerance: float = 0.05
    upscale_tolerance: float = 0.05


class UpdateStrategy(Base, frozen=True):
    max_surge: str | int = "25%"
    max_unavailable: str | int = "25%"


class Networking(Base, frozen=True):
    endpoint: str | None = None


class API(Base, frozen=True):
    name: str
    kind: Literal["AsyncAPI"]
    pod: Pod
    autoscaling: Autoscaling = Autoscaling()
    node_groups: list[str] | None = None
    update_strategy: UpdateStrategy = UpdateStrategy()
    networking: Networking = Networking()

    @property
    def endpoint(self) -> str:
        """The route prefix: ``networking.endpoint`` or ``/<name>``, canonical (no trailing /)."""
        raw = self.networking.endpoint or self.name
        return "/" + raw.strip("/")
