"""The rules an API must follow beyond its types: Cortex's ``pkg/types/spec/validations.go``
plus chute's own (reserved ports, names and variables, webhooks, auth), each problem added
with its JSON path."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from chute.config._issues import _Issues, _show
from chute.config._models import (
    API,
    RETRYABLE_FAILURE_TYPES,
    WEBHOOK_EVENTS,
    Auth,
    Compute,
    Container,
    Deadlines,
    Pod,
    Probe,
    Quantity,
    Retries,
    UpdateStrategy,
    Webhook,
    _is_status,
)
from chute.config._units import _duration_ns, parse_quantity
from chute.errors import ConfigError

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
