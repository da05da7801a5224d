"""API configuration: Cortex's Async API YAML, parsed into frozen msgspec Structs.

A file is a YAML list of APIs (``kind: AsyncAPI``). Unknown keys are rejected and every problem
is reported with the file and its JSON path (``$[0].pod.containers[1].compute.mem``). Loading
checks msgspec's types first, then the rules Cortex enforced in ``pkg/types/spec/validations.go``
(plus a few of chute's own), and collects every violation before raising. The returned objects
carry Cortex's defaults filled in (``init_replicas``, ``target_in_flight``, ``endpoint``), so no
caller repeats that logic. The keys, defaults and rules are documented in docs/configuration.md.

The rooms: ``_models`` (the Structs), ``_units`` (quantities and durations), ``_load`` (reading
and writing a file), ``_messages`` (msgspec's error texts in chute's words), ``_problems``
(every type problem of a file with its line), ``_rules`` (the validation rules) and
``_issues`` (a problem and the error that lists them). Import from ``chute.config`` only.
"""

from __future__ import annotations

from chute.config._issues import ConfigIssue
from chute.config._load import dump_apis, find_api, load_apis, loads_apis
from chute.config._models import (
    API,
    RETRYABLE_FAILURE_TYPES,
    WEBHOOK_EVENTS,
    Auth,
    Autoscaling,
    Base,
    Compute,
    Container,
    Deadlines,
    Exec,
    HTTPGet,
    Networking,
    Pod,
    PreStop,
    Probe,
    Quantity,
    Results,
    Retries,
    TCPSocket,
    UpdateStrategy,
    Webhook,
)
from chute.config._rules import (
    DEQUEUER_ADMIN_PORT,
    GATEWAY_PORT,
    MAX_API_NAME,
    MAX_CONTAINER_NAME,
    MAX_ENDPOINT,
    RESERVED_CONTAINER_NAMES,
    RESERVED_ENV_PREFIXES,
)
from chute.config._units import parse_duration, parse_quantity
from chute.errors import ConfigError, ConfigValidationError

__all__ = [
    "API",
    "DEQUEUER_ADMIN_PORT",
    "GATEWAY_PORT",
    "MAX_API_NAME",
    "MAX_CONTAINER_NAME",
    "MAX_ENDPOINT",
    "RESERVED_CONTAINER_NAMES",
    "RESERVED_ENV_PREFIXES",
    "RETRYABLE_FAILURE_TYPES",
    "WEBHOOK_EVENTS",
    "Auth",
    "Autoscaling",
    "Base",
    "Compute",
    "ConfigError",
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
    "Quantity",
    "Results",
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
