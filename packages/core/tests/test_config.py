"""API configuration: Cortex's files load unchanged, defaults are filled, every rule reports the
file, the path and what was expected, and ``chute validate`` prints it all."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from chute.cli import main
from chute.config import (
    API,
    ConfigIssue,
    ConfigValidationError,
    Deadlines,
    Retries,
    dump_apis,
    find_api,
    load_apis,
    loads_apis,
    parse_duration,
    parse_quantity,
)
from chute.errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"
HELLO = CONFIGS / "cortex-hello-world.yaml"
EVERY_KEY = CONFIGS / "every-key.yaml"


def hello() -> dict[str, Any]:
    """The hello-world API as plain data, for tests that break one thing in it."""
    document = yaml.safe_load(HELLO.read_text())
    assert isinstance(document, list)
    return copy.deepcopy(document[0])


def write(tmp_path: Path, document: Any, name: str = "apis.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def issues_of(path: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigValidationError) as caught:
        load_apis(path)
    return caught.value.issues


# --- valid files ----------------------------------------------------------------------------


def test_cortex_hello_world_loads_unchanged_with_cortex_defaults() -> None:
    [api] = load_apis(HELLO)
    assert api.name == "hello-world"
    assert api.kind == "AsyncAPI"
    assert api.pod.port == 8080
    assert api.pod.max_concurrency == 1
    [container] = api.pod.containers
    assert container.image == "quay.io/cortexlabs-test/async-hello-world-cpu:latest"
    assert container.compute.cpu == "200m"
    assert container.compute.mem == "128Mi"
    assert container.env == {}
    probe = container.readiness_probe
    assert probe is not None
    assert probe.http_get is not None
    assert (probe.http_get.path, probe.http_get.port) == ("/healthz", 8080)
    assert (probe.initial_delay_seconds, probe.timeout_seconds, probe.period_seconds) == (0, 1, 10)
    assert (probe.success_threshold, probe.failure_threshold) == (1, 3)
    assert container.liveness_probe is None
    # Derived defaults are filled in the returned object, so callers never recompute them.
    scaling = api.autoscaling
    assert (scaling.min_replicas, scaling.max_replicas, scaling.init_replicas) == (1, 100, 1)
    assert scaling.target_in_flight == 1.0
    assert (scaling.window, scaling.downscale_stabilization_period) == ("60s", "5m")
    assert scaling.upscale_stabilization_period == "1m"
    assert (scaling.max_downscale_factor, scaling.max_upscale_factor) == (0.75, 1.5)
    assert (scaling.downscale_tolerance, scaling.upscale_tolerance) == (0.05, 0.05)
    assert api.node_groups is None
    assert (api.update_strategy.max_surge, api.update_strategy.max_unavailable) == ("25%", "25%")
    assert api.networking.endpoint == "/hello-world"
    assert api.endpoint == "/hello-world"


def test_every_key_loads_as_written() -> None:
    classifier, textgen = load_apis(EVERY_KEY)
    assert classifier.pod.port == 9000
    assert classifier.pod.max_concurrency == 4
    model, sidecar = classifier.pod.containers
    assert model.command == ["python", "-m", "server"]
    assert model.args == ["--port", "$(CORTEX_PORT)"]
    assert model.env == {"MODEL_PATH": "/mnt/model", "LOG_LEVEL": "debug"}
    assert (model.compute.cpu, model.compute.gpu, model.compute.inf) == (1.5, 1, 0)
    assert (model.compute.mem, model.compute.shm) == ("4Gi", "1Gi")
    assert model.readiness_probe is not None
    assert model.readiness_probe.success_threshold == 2
    assert model.liveness_probe is not None
    assert model.liveness_probe.exec is not None
    assert model.liveness_probe.exec.command == ["cat", "/tmp/alive"]
    assert model.pre_stop is not None
    assert model.pre_stop.exec is not None
    assert sidecar.compute.cpu is None  # an explicit null: no CPU request
    assert sidecar.readiness_probe is not None
    assert sidecar.readiness_probe.tcp_socket is not None
    assert sidecar.pre_stop is not None
    assert sidecar.pre_stop.http_get is not None
    assert sidecar.pre_stop.http_get.path == "/drain"
    scaling = classifier.autoscaling
    assert (scaling.min_replicas, scaling.max_replicas, scaling.init_replicas) == (0, 12, 2)
    assert scaling.target_in_flight == 6.5
    assert scaling.window == "2m30s"
    assert scaling.max_upscale_factor == 3.0
    assert classifier.node_groups == ["gpu-a10", "gpu_spot"]
    assert classifier.update_strategy.max_surge == 1
    assert classifier.update_strategy.max_unavailable == "0%"
    assert classifier.networking.endpoint == "/vision/classify"  # canonical
    assert classifier.endpoint == "/vision/classify"
    # The second API takes target_in_flight from max_concurrency and keeps its own endpoint.
    assert textgen.autoscaling.target_in_flight == 1.0
    assert textgen.endpoint == "/text"


def test_target_in_flight_defaults_to_max_concurrency(tmp_path: Path) -> None:
    api = hello()
    api["pod"]["max_concurrency"] = 8
    api["autoscaling"] = {"min_replicas": 3}
    [loaded] = load_apis(write(tmp_path, [api]))
    assert loaded.autoscaling.target_in_flight == 8.0
    assert loaded.autoscaling.init_replicas == 3


@pytest.mark.parametrize("path", [HELLO, EVERY_KEY], ids=["hello", "every-key"])
def test_dump_is_normalised_and_loads_back_equal(path: Path) -> None:
    apis = load_apis(path)
    text = dump_apis(apis)
    assert loads_apis(text) == apis
    assert dump_apis(loads_apis(text)) == text  # stable
    # Every default is written out, in the documented key order.
    first = yaml.safe_load(text)[0]
    assert list(first) == [
        "name",
        "kind",
        "pod",
        "autoscaling",
        *(["node_groups"] if apis[0].node_groups is not None else []),
        "update_strategy",
        "networking",
        "retries",
        "deadlines",
        "results",
    ]
    assert list(first["pod"]) == ["port", "max_concurrency", "containers"]
    assert "init_replicas" in first["autoscaling"]
    assert "target_in_flight" in first["autoscaling"]


def test_dump_keeps_an_explicit_null_that_overrides_a_default() -> None:
    text = dump_apis(load_apis(EVERY_KEY))
    sidecar = yaml.safe_load(text)[0]["pod"]["containers"][1]
    assert sidecar["compute"]["cpu"] is None
    assert "command" not in sidecar  # unset and null by default: left out


def test_structs_are_frozen_and_reject_unknown_fields() -> None:
    [api] = load_apis(HELLO)
    with pytest.raises(AttributeError):
        api.name = "other"  # type: ignore[misc]
    with pytest.raises(msgspec.ValidationError, match="unknown field `extra`"):
        msgspec.convert(
            {"name": "a", "kind": "AsyncAPI", "pod": {"containers": []}, "extra": 1}, API
        )


# --- invalid files: one mistake each --------------------------------------------------------

C0 = "pod.containers[0]"

# (id, changes to hello-world as {dotted path: value or DELETE}, expected issue path, message)
DELETE = object()
BAD_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("name-uppercase", {"name": "Hello"}, "$[0].name", 'DNS-1035 label.*\\(got "Hello"\\)'),
    ("name-ends-dash", {"name": "hello-"}, "$[0].name", "ending with a letter or digit"),
    ("name-too-long", {"name": "a" * 43}, "$[0].name", "at most 42 characters \\(got 43\\)"),
    ("name-b-prefix", {"name": "b-hello"}, "$[0].name", "not start with 'b-'"),
    ("name-number", {"name": 12}, "$[0].name", "expected a string \\(got an integer\\); quote"),
    ("name-missing", {"name": DELETE}, "$[0].name", "^required key is missing$"),
    ("kind-realtime", {"kind": "RealtimeAPI"}, "$", "at least one API of kind AsyncAPI.*"),
    ("kind-typo", {"kind": "AsyncApi"}, "$[0].kind", '^expected AsyncAPI \\(got "AsyncApi"\\)$'),
    ("unknown-top-key", {"replicas": 3}, "$[0].replicas", "unknown key; .*expected one of: name,"),
    (
        "unknown-key-typo",
        {f"{C0}.compute.memory": "1Gi"},
        f"$[0].{C0}.compute.memory",
        "did you mean 'mem'",
    ),
    ("port-gateway", {"pod.port": 8888}, "$[0].pod.port", "other than 8888.*\\(got 8888\\)"),
    ("port-admin", {"pod.port": 15000}, "$[0].pod.port", "other than 15000.*dequeuer"),
    ("port-range", {"pod.port": 70000}, "$[0].pod.port", "port in 1..65535 \\(got 70000\\)"),
    (
        "port-string",
        {"pod.port": "http"},
        "$[0].pod.port",
        "expected an integer \\(got a string\\)",
    ),
    ("concurrency-0", {"pod.max_concurrency": 0}, "$[0].pod.max_concurrency", "1..100 \\(got 0\\)"),
    ("concurrency-101", {"pod.max_concurrency": 101}, "$[0].pod.max_concurrency", "1..100"),
    ("no-containers", {"pod.containers": []}, "$[0].pod.containers", "at least one container"),
    ("containers-map", {"pod.containers": {}}, "$[0].pod.containers", "expected a list"),
    ("container-dequeuer", {f"{C0}.name": "dequeuer"}, f"$[0].{C0}.name", "other than 'dequeuer'"),
    ("container-proxy", {f"{C0}.name": "proxy"}, f"$[0].{C0}.name", "'proxy'"),
    ("container-name-dns", {f"{C0}.name": "my_api"}, f"$[0].{C0}.name", "DNS-1035"),
    ("container-long", {f"{C0}.name": "a" * 64}, f"$[0].{C0}.name", "at most 63 characters"),
    ("image-empty", {f"{C0}.image": ""}, f"$[0].{C0}.image", "image reference"),
    ("image-missing", {f"{C0}.image": DELETE}, f"$[0].{C0}.image", "required key is missing"),
    ("image-bad", {f"{C0}.image": "Quay.io/Org/App"}, f"$[0].{C0}.image", "image reference"),
    ("env-cortex", {f"{C0}.env": {"CORTEX_X": "1"}}, f"$[0].{C0}.env.CORTEX_X", "reserved"),
    ("env-kubexit", {f"{C0}.env": {"KUBEXIT_X": "1"}}, f"$[0].{C0}.env.KUBEXIT_X", "reserved"),
    (
        "env-chute",
        {f"{C0}.env": {"CHUTE_QUEUE_URL": "x"}},
        f"$[0].{C0}.env.CHUTE_QUEUE_URL",
        "CHUTE_",
    ),
    ("env-int", {f"{C0}.env": {"A": "x", "PORT": 80}}, f"$[0].{C0}.env.PORT", "expected a string"),
    ("env-name", {f"{C0}.env": {"1A": "x"}}, f"$[0].{C0}.env.1A", "variable name"),
    ("cpu-small", {f"{C0}.compute.cpu": "10m"}, f"$[0].{C0}.compute.cpu", 'at least 20m.*"10m"'),
    ("cpu-bool", {f"{C0}.compute.cpu": True}, f"$[0].{C0}.compute.cpu", "got a boolean"),
    ("cpu-syntax", {f"{C0}.compute.cpu": "2 cores"}, f"$[0].{C0}.compute.cpu", "quantity such as"),
    ("mem-small", {f"{C0}.compute.mem": "19Mi"}, f"$[0].{C0}.compute.mem", "at least 20Mi"),
    ("mem-syntax", {f"{C0}.compute.mem": "1GB"}, f"$[0].{C0}.compute.mem", '\\(got "1GB"\\)'),
    ("gpu-negative", {f"{C0}.compute.gpu": -1}, f"$[0].{C0}.compute.gpu", "0 or more \\(got -1\\)"),
    ("gpu-float", {f"{C0}.compute.gpu": 0.5}, f"$[0].{C0}.compute.gpu", "expected an integer"),
    ("inf-negative", {f"{C0}.compute.inf": -2}, f"$[0].{C0}.compute.inf", "0 or more"),
    (
        "gpu-and-inf",
        {f"{C0}.compute.gpu": 1, f"{C0}.compute.inf": 1},
        "$[0].pod",
        "GPUs or Inferentia chips, not both",
    ),
    (
        "shm-over-mem",
        {f"{C0}.compute.shm": "1Gi"},
        f"$[0].{C0}.compute.shm",
        'at most mem \\("128Mi"\\)',
    ),
    (
        "readiness-both",
        {f"{C0}.readiness_probe.tcp_socket": {"port": 8080}},
        f"$[0].{C0}.readiness_probe",
        "exactly one of http_get or tcp_socket",
    ),
    (
        "readiness-none",
        {f"{C0}.readiness_probe.http_get": DELETE},
        f"$[0].{C0}.readiness_probe",
        "exactly one of http_get or tcp_socket",
    ),
    (
        "readiness-exec",
        {f"{C0}.readiness_probe": {"exec": {"command": ["true"]}}},
        f"$[0].{C0}.readiness_probe.exec",
        "exec readiness probes are not supported",
    ),
    (
        "readiness-port",
        {f"{C0}.readiness_probe.http_get.port": 0},
        f"$[0].{C0}.readiness_probe.http_get.port",
        "1..65535 \\(got 0\\)",
    ),
    (
        "readiness-period",
        {f"{C0}.readiness_probe.period_seconds": -1},
        f"$[0].{C0}.readiness_probe.period_seconds",
        "1 or more \\(got -1\\)",
    ),
    (
        "legacy-predictor",
        {"predictor": {"type": "python", "path": "predictor.py"}},
        "$[0].predictor",
        "Cortex's API format from before v0.36",
    ),
    (
        "readiness-delay",
        {f"{C0}.readiness_probe.initial_delay_seconds": -1},
        f"$[0].{C0}.readiness_probe.initial_delay_seconds",
        "0 or more",
    ),
    (
        "probe-port-missing",
        {f"{C0}.readiness_probe.http_get.port": DELETE},
        f"$[0].{C0}.readiness_probe.http_get.port",
        "required key is missing",
    ),
    (
        "liveness-two",
        {f"{C0}.liveness_probe": {"exec": {"command": ["true"]}, "tcp_socket": {"port": 1}}},
        f"$[0].{C0}.liveness_probe",
        "exactly one of http_get, tcp_socket or exec",
    ),
    (
        "liveness-success",
        {f"{C0}.liveness_probe": {"tcp_socket": {"port": 8080}, "success_threshold": 2}},
        f"$[0].{C0}.liveness_probe.success_threshold",
        "1 for a liveness probe",
    ),
    (
        "liveness-empty-command",
        {f"{C0}.liveness_probe": {"exec": {"command": []}}},
        f"$[0].{C0}.liveness_probe.exec.command",
        "at least one word",
    ),
    (
        "pre-stop-tcp",
        {f"{C0}.pre_stop": {"tcp_socket": {"port": 1}}},
        f"$[0].{C0}.pre_stop.tcp_socket",
        "unknown key; expected one of: http_get, exec",
    ),
    (
        "pre-stop-none",
        {f"{C0}.pre_stop": {}},
        f"$[0].{C0}.pre_stop",
        "exactly one of http_get or exec",
    ),
    (
        "min-negative",
        {"autoscaling.min_replicas": -1},
        "$[0].autoscaling.min_replicas",
        "0 or more",
    ),
    ("max-zero", {"autoscaling.max_replicas": 0}, "$[0].autoscaling.max_replicas", "1 or more"),
    (
        "min-over-max",
        {"autoscaling.min_replicas": 5, "autoscaling.max_replicas": 2},
        "$[0].autoscaling.min_replicas",
        "at most max_replicas \\(2\\) \\(got 5\\)",
    ),
    (
        "init-below-min",
        {"autoscaling.min_replicas": 2, "autoscaling.init_replicas": 1},
        "$[0].autoscaling.init_replicas",
        "at least min_replicas \\(2\\)",
    ),
    (
        "init-above-max",
        {"autoscaling.max_replicas": 3, "autoscaling.init_replicas": 4},
        "$[0].autoscaling.init_replicas",
        "at most max_replicas \\(3\\)",
    ),
    (
        "target-zero",
        {"autoscaling.target_in_flight": 0},
        "$[0].autoscaling.target_in_flight",
        "greater than 0",
    ),
    ("window-15s", {"autoscaling.window": "15s"}, "$[0].autoscaling.window", "multiple of 10s"),
    ("window-5s", {"autoscaling.window": "5s"}, "$[0].autoscaling.window", "at least 10s"),
    ("window-int", {"autoscaling.window": 60}, "$[0].autoscaling.window", "expected a string"),
    (
        "period-syntax",
        {"autoscaling.downscale_stabilization_period": "5 min"},
        "$[0].autoscaling.downscale_stabilization_period",
        'duration such as 60s.*\\(got "5 min"\\)',
    ),
    (
        "period-negative",
        {"autoscaling.upscale_stabilization_period": "-1m"},
        "$[0].autoscaling.upscale_stabilization_period",
        "0s or more",
    ),
    (
        "downscale-factor",
        {"autoscaling.max_downscale_factor": 1},
        "$[0].autoscaling.max_downscale_factor",
        "in \\[0, 1\\)",
    ),
    (
        "upscale-factor",
        {"autoscaling.max_upscale_factor": 1},
        "$[0].autoscaling.max_upscale_factor",
        "greater than 1",
    ),
    (
        "downscale-tolerance",
        {"autoscaling.downscale_tolerance": -0.1},
        "$[0].autoscaling.downscale_tolerance",
        "in \\[0, 1\\)",
    ),
    (
        "upscale-tolerance",
        {"autoscaling.upscale_tolerance": -0.1},
        "$[0].autoscaling.upscale_tolerance",
        "0 or more",
    ),
    ("node-group-chars", {"node_groups": ["ok", "no way"]}, "$[0].node_groups[1]", "letters"),
    ("node-groups-empty", {"node_groups": []}, "$[0].node_groups", "omit the key"),
    (
        "surge-percent",
        {"update_strategy.max_surge": "150%"},
        "$[0].update_strategy.max_surge",
        '"0%".."100%" \\(got "150%"\\)',
    ),
    (
        "surge-negative",
        {"update_strategy.max_surge": -1},
        "$[0].update_strategy.max_surge",
        "0 or more",
    ),
    (
        "surge-and-unavailable-zero",
        {"update_strategy": {"max_surge": 0, "max_unavailable": "0%"}},
        "$[0].update_strategy",
        "max_surge or max_unavailable above 0",
    ),
    ("endpoint-chars", {"networking.endpoint": "/a b"}, "$[0].networking.endpoint", "letters"),
    ("endpoint-double", {"networking.endpoint": "/a//b"}, "$[0].networking.endpoint", "'//'"),
    ("endpoint-root", {"networking.endpoint": "/"}, "$[0].networking.endpoint", "other than '/'"),
    (
        "endpoint-long",
        {"networking.endpoint": "/" + "a" * 1000},
        "$[0].networking.endpoint",
        "at most 1000 characters",
    ),
    # chute's own keys
    ("retries-zero", {"retries.max_attempts": 0}, "$[0].retries.max_attempts", "1..100"),
    ("retries-many", {"retries.max_attempts": 101}, "$[0].retries.max_attempts", "1..100"),
    (
        "retries-backoff",
        {"retries.initial_backoff": "soon"},
        "$[0].retries.initial_backoff",
        "expected a duration",
    ),
    (
        "retries-cap-below-initial",
        {"retries": {"initial_backoff": "10s", "max_backoff": "1s"}},
        "$[0].retries.max_backoff",
        'at least initial_backoff \\("10s"\\)',
    ),
    ("retries-multiplier", {"retries.multiplier": 0.5}, "$[0].retries.multiplier", "1 or more"),
    (
        "retries-on-unknown",
        {"retries.retry_on": ["connection", "oops"]},
        "$[0].retries.retry_on[1]",
        "status code or one of: connection, container_status",
    ),
    ("retries-on-code", {"retries.retry_on": [700]}, "$[0].retries.retry_on[0]", "100..599"),
    ("retries-unknown-key", {"retries.attempts": 3}, "$[0].retries.attempts", "max_attempts"),
    ("deadline-zero", {"deadlines.queue": "0s"}, "$[0].deadlines.queue", "greater than 0s"),
    ("deadline-bad", {"deadlines.execution": "5"}, "$[0].deadlines.execution", "duration"),
    (
        "webhook-no-url",
        {"webhook": {"events": ["failed"]}},
        "$[0].webhook",
        "expected url, request_urls or both",
    ),
    (
        "webhook-request-url",
        {"webhook": {"request_urls": ["ftp://x"]}},
        "$[0].webhook.request_urls[0]",
        "a host",
    ),
    ("webhook-url", {"webhook.url": "ftp://x/y"}, "$[0].webhook.url", "http:// or https://"),
    (
        "webhook-event",
        {"webhook": {"url": "http://x/", "events": ["done"]}},
        "$[0].webhook.events[0]",
        "one of: completed, failed, cancelled, expired",
    ),
    (
        "webhook-event-twice",
        {"webhook": {"url": "http://x/", "events": ["failed", "failed"]}},
        "$[0].webhook.events[1]",
        "once",
    ),
    (
        "webhook-no-events",
        {"webhook": {"url": "http://x/", "events": []}},
        "$[0].webhook.events",
        "at least one event",
    ),
    (
        "webhook-secret-env",
        {"webhook": {"url": "http://x/", "secret_env": "MY SECRET"}},
        "$[0].webhook.secret_env",
        "environment variable name",
    ),
    ("auth-empty", {"auth": {}}, "$[0].auth", "keys_env or keys_file"),
    ("auth-env", {"auth": {"keys_env": "1KEYS"}}, "$[0].auth.keys_env", "variable name"),
]


def apply(document: dict[str, Any], changes: dict[str, Any]) -> None:
    """Set (or delete) values at dotted paths such as ``pod.containers[0].compute.mem``."""
    for dotted, value in changes.items():
        *parents, last = re.findall(r"\w+|\[\d+\]", dotted)
        node: Any = document
        for part in parents:
            node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_bad_config_reports_path_and_expectation(
    tmp_path: Path, changes: dict[str, Any], path: str, message: str
) -> None:
    api = hello()
    apply(api, changes)
    file = write(tmp_path, [api])
    issues = issues_of(file)
    assert [(issue.file, issue.path) for issue in issues] == [(str(file), path)], issues
    assert re.search(message, issues[0].message), issues[0].message
    assert str(issues[0]) == f"{file}:{issues[0].line}: {path}: {issues[0].message}"
    assert issues[0].line is not None


def test_every_problem_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    first = hello()
    apply(first, {"pod.port": 8888, f"{C0}.compute.mem": "1Mi", "autoscaling.window": "15s"})
    second = hello()
    apply(second, {"name": "second", "kind": "AsyncApi"})
    third = hello()
    apply(third, {"name": "Third", "pod.max_concurrency": 0})
    issues = issues_of(write(tmp_path, [first, second, third]))
    assert [issue.path for issue in issues] == [
        "$[0].pod.port",
        f"$[0].{C0}.compute.mem",
        "$[0].autoscaling.window",
        "$[1].kind",
        "$[2].name",
        "$[2].pod.max_concurrency",
    ]
    assert issues[3].message == 'expected AsyncAPI (got "AsyncApi")'


def test_a_file_mixing_kinds_serves_its_async_apis_and_says_what_it_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    realtime = {"name": "realtime", "kind": "RealtimeAPI", "pod": {"containers": []}}
    batch = {"name": "batch", "kind": "BatchAPI", "pod": {"containers": []}}
    task = {"name": "task", "kind": "TaskAPI"}
    with caplog.at_level("WARNING", logger="chute.config"):
        apis = load_apis(write(tmp_path, [realtime, hello(), batch, task]))
    assert [api.name for api in apis] == ["hello-world"]
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "$[0]: skipped RealtimeAPI 'realtime': chute runs Cortex's AsyncAPIs only",
        "$[2]: skipped BatchAPI 'batch': chute runs Cortex's AsyncAPIs only",
        "$[3]: skipped TaskAPI 'task': chute runs Cortex's AsyncAPIs only",
    ]


def test_a_file_without_async_apis_is_refused_naming_what_it_holds(tmp_path: Path) -> None:
    realtime = {"name": "realtime", "kind": "RealtimeAPI", "pod": {"containers": []}}
    [issue] = issues_of(write(tmp_path, [realtime]))
    assert issue.path == "$"
    assert "skipped $[0] (RealtimeAPI 'realtime')" in issue.message


def test_cortex_accepts_a_null_port_and_zero_probe_timings_as_the_defaults(tmp_path: Path) -> None:
    api = hello()
    probe = {"http_get": {"port": 8080, "path": "/healthz"}, "period_seconds": 0}
    probe |= {"timeout_seconds": 0, "success_threshold": 0, "failure_threshold": 0}
    apply(api, {"pod.port": None, f"{C0}.readiness_probe": probe})
    [loaded] = load_apis(write(tmp_path, [api]))
    assert loaded.pod.port == 8080
    ready = loaded.pod.containers[0].readiness_probe
    assert ready is not None
    timings = (ready.timeout_seconds, ready.period_seconds)
    assert timings + (ready.success_threshold, ready.failure_threshold) == (1, 10, 1, 3)


def test_containers_are_checked_each_and_together(tmp_path: Path) -> None:
    api = hello()
    second = copy.deepcopy(api["pod"]["containers"][0])
    second["compute"]["cpu"] = "1m"
    api["pod"]["containers"].append(second)
    issues = issues_of(write(tmp_path, [api]))
    assert [(i.path, i.message) for i in issues] == [
        (
            "$[0].pod.containers[1].name",
            "expected a container name unique in the pod; "
            '$[0].pod.containers[0] already uses it (got "api")',
        ),
        ("$[0].pod.containers[1].compute.cpu", 'expected at least 20m (0.02 CPU) (got "1m")'),
    ]


def test_gpu_and_inf_in_different_containers_of_one_pod(tmp_path: Path) -> None:
    api = hello()
    api["pod"]["containers"][0]["compute"]["gpu"] = 1
    other = {"name": "neuron", "image": "busybox", "compute": {"inf": 2}}
    api["pod"]["containers"].append(other)
    [issue] = issues_of(write(tmp_path, [api]))
    assert issue.path == "$[0].pod"
    assert "gpu 1 and inf 2" in issue.message


def test_duplicate_names_across_apis(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, [hello(), hello()]))
    assert [(i.path, i.message) for i in issues] == [
        ("$[1].name", 'expected a unique name; $[0] has it too (got "hello-world")')
    ]


def test_duplicate_endpoints_across_apis(tmp_path: Path) -> None:
    first, second, third = hello(), hello(), hello()
    second["name"] = "two"
    second["networking"] = {"endpoint": "hello-world/"}  # canonical /hello-world, like first's
    third["name"] = "hello-world-2"
    third["networking"] = {"endpoint": "/two"}  # second's default endpoint is /hello-world...
    fourth = hello()
    fourth["name"] = "two"  # ...and this name is taken
    issues = issues_of(write(tmp_path, [first, second, third, fourth]))
    assert [(i.path, i.message) for i in issues] == [
        (
            "$[1].networking.endpoint",
            "expected a unique endpoint; /hello-world is already the endpoint of API "
            '"hello-world" at $[0] (got "hello-world/")',
        ),
        ("$[3].name", 'expected a unique name; $[1] has it too (got "two")'),
    ]


def test_default_endpoint_clash_is_reported_on_the_name(tmp_path: Path) -> None:
    first, second = hello(), hello()
    first["name"] = "one"
    first["networking"] = {"endpoint": "/hello-world"}
    [issue] = issues_of(write(tmp_path, [first, second]))
    assert issue.path == "$[1].name"
    assert '/hello-world is already the endpoint of API "one" at $[0]' in issue.message


# --- invalid files: the file as a whole -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a YAML list of APIs (got an empty file)"),
        ("# only a comment\n", "expected a YAML list of APIs (got an empty file)"),
        ("[]\n", "expected at least one API (got an empty list)"),
        ("name: x\nkind: AsyncAPI\n", "(got a mapping); write a single API as a list item"),
        ("just text\n", "expected a YAML list of APIs (got a string)"),
        ("- 5\n", "expected an API: a mapping with keys name, kind and pod (got an integer)"),
    ],
)
def test_file_that_is_not_a_list_of_apis(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "apis.yaml"
    file.write_text(text)
    [issue] = issues_of(file)
    assert issue.path in ("$", "$[0]")
    assert message in issue.message


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text("- name: a\n  kind: AsyncAPI\n  pod: [oops\n  other: 1\n")
    [issue] = issues_of(file)
    assert issue.file == str(file)
    assert issue.line == 4
    assert issue.message.startswith("invalid YAML at line 4, column")


def test_duplicate_yaml_keys_are_an_error(tmp_path: Path) -> None:
    file = tmp_path / "dup.yaml"
    file.write_text("- name: a\n  kind: AsyncAPI\n  name: b\n")
    [issue] = issues_of(file)
    assert issue.line == 3
    assert "found duplicate key 'name'" in issue.message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file") as caught:
        load_apis(tmp_path / "nope.yaml")
    assert not isinstance(caught.value, ConfigValidationError)


def test_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_apis(tmp_path)


# --- helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("1", Decimal(1)),
        (1, Decimal(1)),
        (0.5, Decimal("0.5")),
        ("0.5", Decimal("0.5")),
        (".5", Decimal("0.5")),
        ("1Gi", Decimal(2**30)),
        ("512Mi", Decimal(512 * 2**20)),
        ("1.5Ki", Decimal(1536)),
        ("1G", Decimal(10**9)),
        ("2k", Decimal(2000)),
        ("1e3", Decimal(1000)),
        ("1E-3", Decimal("0.001")),
        ("100n", Decimal("1E-7")),
        ("+2M", Decimal(2 * 10**6)),
        ("-1", Decimal(-1)),
    ],
)
def test_parse_quantity(text: str | int | float, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1GB", "Gi", "1.2.3", "1 Gi", "ten", "1e", "1e9999999999"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="expected a quantity"):
        parse_quantity(text)


def test_parse_quantity_rejects_booleans_and_infinity() -> None:
    with pytest.raises(ConfigError):
        parse_quantity(True)
    with pytest.raises(ConfigError):
        parse_quantity(float("inf"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("2m30s", 150.0),
        ("0", 0.0),
        ("-1m", -60.0),
        ("100us", 0.0001),
        ("1µs", 0.000001),  # Go accepts the micro sign
        ("10ns", 1e-8),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "60", "1d", "5 m", "m", "1h 30m", "s1", "-"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="expected a duration"):
        parse_duration(text)


def test_find_api() -> None:
    apis = load_apis(EVERY_KEY)
    assert find_api(apis, "text-generator").endpoint == "/text"
    with pytest.raises(ConfigError, match="known: image-classifier, text-generator"):
        find_api(apis, "missing")


# --- chute validate -------------------------------------------------------------------------


def test_validate_prints_normalised_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EVERY_KEY)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == dump_apis(load_apis(EVERY_KEY))
    assert loads_apis(out) == load_apis(EVERY_KEY)


def test_validate_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--quiet", str(HELLO)]) == 0
    assert capsys.readouterr() == ("", "")


def test_validate_prints_each_issue_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = hello()
    apply(api, {"pod.port": 8888, f"{C0}.compute.mem": "10Mi"})
    file = write(tmp_path, [api])
    assert main(["validate", str(file)]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    lines = file.read_text().splitlines()
    port = next(n for n, text in enumerate(lines, 1) if text.strip() == "port: 8888")
    mem = next(n for n, text in enumerate(lines, 1) if text.strip() == "mem: 10Mi")
    assert err.splitlines() == [
        f"{file}:{port}: $[0].pod.port: expected a port other than 8888, the gateway's (got 8888)",
        f'{file}:{mem}: $[0].{C0}.compute.mem: expected at least 20Mi (got "10Mi")',
    ]


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    assert main(["validate", str(missing)]) == 3
    assert capsys.readouterr().err == f"chute validate: {missing}: no such file\n"


def test_validate_as_a_real_process(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    good = subprocess.run(
        [sys.executable, "-m", "chute", "validate", str(HELLO)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert "endpoint: /hello-world" in good.stdout
    assert loads_apis(good.stdout) == load_apis(HELLO)

    api = hello()
    apply(api, {"kind": "TaskAPI"})
    bad = subprocess.run(
        [sys.executable, "-m", "chute", "validate", str(write(tmp_path, [api]))],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 3
    assert bad.stdout == ""
    assert re.fullmatch(
        r".*apis\.yaml:1: \$: expected at least one API of kind AsyncAPI.*TaskAPI.*\n", bad.stderr
    )


def test_undecodable_bytes_are_an_error(tmp_path: Path) -> None:
    file = tmp_path / "latin1.yaml"
    file.write_bytes(b"- name: caf\xe9\n")
    [issue] = issues_of(file)
    assert issue.message.startswith("invalid YAML text at byte 11")
    assert "expected UTF-8" in issue.message


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    file = tmp_path / "merge.yaml"
    file.write_text(
        "- &base\n"
        "  name: one\n"
        "  kind: AsyncAPI\n"
        "  pod: {containers: [{name: api, image: busybox}]}\n"
        "- <<: *base\n"
        "  name: two\n"
    )
    assert [api.endpoint for api in load_apis(file)] == ["/one", "/two"]


# --- chute's own keys: retries, deadlines, webhook, auth ------------------------------------


def test_chute_keys_default_to_cortex_behaviour() -> None:
    [api] = load_apis(HELLO)
    assert api.retries.max_attempts == 1  # no retry, as Cortex
    assert api.retries.retry_on_types == {"connection", "timeout"}
    assert api.retries.retry_on_status_codes == {429, 503}
    assert (api.deadlines.queue_seconds, api.deadlines.execution_seconds) == (None, None)
    assert api.webhook is None
    assert api.auth is None


def test_chute_keys_load_as_written(tmp_path: Path) -> None:
    api = hello()
    api["retries"] = {
        "max_attempts": 5,
        "initial_backoff": "200ms",
        "max_backoff": "10s",
        "multiplier": 3,
        "jitter": False,
        "retry_on": ["connection", 500, "502"],
    }
    api["deadlines"] = {"queue": "10m", "execution": "1h30m"}
    api["webhook"] = {
        "url": "https://example.com/hook",
        "events": ["failed"],
        "secret_env": "CHUTE_WEBHOOK_SECRET",
    }
    api["auth"] = {"keys_env": "API_KEYS", "keys_file": "/etc/keys"}
    [loaded] = load_apis(write(tmp_path, [api]))
    retries = loaded.retries
    assert retries.max_attempts == 5
    assert (retries.initial_backoff_seconds, retries.max_backoff_seconds) == (0.2, 10.0)
    assert retries.retry_on_status_codes == {500, 502}
    assert retries.retry_on_types == {"connection"}
    assert retries.retries("container_status", 502)
    assert retries.retries("connection", None)
    assert not retries.retries("timeout", None)
    assert not retries.retries("container_status", 400)
    assert (loaded.deadlines.queue_seconds, loaded.deadlines.execution_seconds) == (600.0, 5400.0)
    assert loaded.webhook is not None
    assert loaded.webhook.events == ("failed",)
    assert loaded.webhook.secret_env == "CHUTE_WEBHOOK_SECRET"
    assert loaded.auth is not None
    assert (loaded.auth.keys_env, loaded.auth.keys_file) == ("API_KEYS", "/etc/keys")
    assert loads_apis(dump_apis([loaded])) == [loaded]


def test_backoff_is_exponential_capped_with_full_jitter() -> None:
    fixed = Retries(initial_backoff="1s", max_backoff="10s", multiplier=2.0, jitter=False)
    assert [fixed.backoff(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert fixed.backoff(10_000) == 10.0  # no overflow
    jittered = Retries(initial_backoff="1s", max_backoff="10s")
    assert jittered.backoff(3, rand=lambda: 0.5) == 2.0
    assert jittered.backoff(3, rand=lambda: 0.0) == 0.0
    draws = [jittered.backoff(4) for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in draws)
    assert len(set(draws)) > 100  # really random


def test_durations_are_parsed_once_when_the_struct_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    retries = Retries(initial_backoff="250ms", max_backoff="2s", retry_on=("timeout", 503))
    deadlines = loads_apis(
        "- {name: a, kind: AsyncAPI, pod: {containers: [{name: c, image: i}]},"
        " deadlines: {queue: 1m, execution: 1h30m}}"
    )[0].deadlines
    parsed: list[str] = []

    def counting(text: str) -> float:
        parsed.append(text)
        return parse_duration(text)

    monkeypatch.setattr("chute.config._models.parse_duration", counting)
    for _ in range(3):
        assert retries.initial_backoff_seconds == 0.25
        assert retries.max_backoff_seconds == 2.0
        assert retries.backoff(2, rand=lambda: 1.0) == 0.5
        assert retries.retries("timeout", None)
        assert retries.retries("container_status", 503)
        assert (deadlines.queue_seconds, deadlines.execution_seconds) == (60.0, 5400.0)
    assert parsed == []
    # Derived values are not fields: not written, not compared, and remade by replace().
    assert msgspec.json.decode(msgspec.json.encode(retries)) == {
        "initial_backoff": "250ms",
        "max_backoff": "2s",
        "retry_on": ["timeout", 503],
    }
    assert msgspec.structs.replace(retries, max_backoff="3s").max_backoff_seconds == 3.0
    assert Deadlines().queue_seconds is None


def test_a_duration_that_is_not_one_still_raises_when_read() -> None:
    with pytest.raises(ConfigError, match="expected a duration"):
        _ = Retries(initial_backoff="soon").initial_backoff_seconds
    with pytest.raises(ConfigError, match="expected a duration"):
        _ = Deadlines(execution="forever").execution_seconds
