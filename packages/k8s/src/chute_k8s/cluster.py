"""The cluster file: where and how chute's objects run on a Kubernetes cluster.

A YAML mapping parsed into frozen msgspec Structs that reject unknown keys; every key has a
default, so an empty file is valid. Problems are reported with the file and the key's path,
as for the API file. The keys are documented in docs/kubernetes.md.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Literal

import msgspec
import yaml

from chute._version import __version__
from chute.config import parse_duration, parse_quantity
from chute.errors import ConfigError

#: The image ``packages/k8s/Dockerfile`` builds (``docker build -t chute:<version> ...``).
DEFAULT_IMAGE = f"chute:{__version__}"
#: The port the gateway serves on in its pod and behind its Service (Cortex's 8888).
GATEWAY_PORT = 8888
#: Cortex's in-cluster gateway address: ``http://<service>.<namespace>.svc.cluster.local``.
CORTEX_SERVICE = "ingressgateway-apis"
CORTEX_NAMESPACE = "istio-system"
#: Where KEDA finds Prometheus when the queue's trigger reads a metric (kube-prometheus-stack).
DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"


class Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Images(Base, frozen=True, kw_only=True):
    #: Image running ``chute gateway`` (the Dockerfile's image carries both commands).
    gateway: str = DEFAULT_IMAGE
    #: Image running ``chute-dequeuer``, the sidecar of every API pod.
    dequeuer: str = DEFAULT_IMAGE
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    #: Names of docker-registry Secrets for private images (chute's and the APIs').
    pull_secrets: list[str] = []


class Gateway(Base, frozen=True, kw_only=True):
    #: In-cluster URL of the gateway, for chaining and the client config file; default
    #: ``http://<name>-gateway.<namespace>.svc:8888``.
    url: str | None = None
    replicas: int = 2  # at creation; then the HorizontalPodAutoscaler decides
    min_replicas: int = 1
    max_replicas: int = 20
    target_cpu_utilization: int = 90  # percent of the CPU request (Cortex: 90)
    cpu: str = "400m"  # request (Cortex: 400m)
    mem: str = "512Mi"  # request (Cortex: 512Mi)
    max_body_size: str = "100MiB"
    graceful_timeout: float = 30.0
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    #: Serve Cortex's in-cluster address too: a Service ``ingressgateway-apis`` in namespace
    #: ``istio-system`` (an ExternalName to this gateway, which then also answers on port 80),
    #: so that containers chaining by Cortex's URL
    #: ``http://ingressgateway-apis.istio-system.svc.cluster.local/<api>`` reach chute
    #: unchanged. Turn off where the cluster runs Istio itself (that name is Istio's there).
    cortex_address: bool = True


class Dequeuer(Base, frozen=True, kw_only=True):
    #: Seconds in-flight requests may finish after SIGTERM before they are given back.
    grace_period: float = 30.0
    #: Seconds of lease on a received message (a crashed pod's requests return after it).
    lease: float = 30.0


class Toleration(Base, frozen=True, kw_only=True):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class Alerts(Base, frozen=True, kw_only=True):
    #: Render a PrometheusRule (needs the Prometheus operator's CRDs).
    enabled: bool = False
    #: Failed / (completed + failed) over 5 minutes above which ChuteFailureRatioHigh fires.
    failure_ratio: float = 0.05
    #: How long requests may wait with none finishing before ChuteQueueStalled fires.
    stalled_for: str = "10m"
    #: How long the queue may grow with no replica before ChuteQueueGrowingWithoutReplicas.
    no_replicas_for: str = "5m"


class Observability(Base, frozen=True, kw_only=True):
    #: ``prometheus.io/scrape|port|path`` annotations on the gateway and API pods.
    prometheus_annotations: bool = True
    #: A ServiceMonitor (gateway) and a PodMonitor (dequeuers) for the Prometheus operator.
    monitors: bool = False
    #: Labels on monitors and rules, for the operator's selectors (e.g. ``release: prom``).
    monitor_labels: dict[str, str] = {}
    scrape_interval: str = "10s"  # Cortex scraped every 10 s
    #: The Prometheus server KEDA queries when a queue's trigger is a Prometheus query.
    prometheus_url: str = DEFAULT_PROMETHEUS_URL
    #: A ConfigMap holding the Grafana dashboard (picked up by Grafana's sidecar).
    grafana_dashboard: bool = True
    dashboard_labels: dict[str, str] = msgspec.field(
        default_factory=lambda: {"grafana_dashboard": "1"}
    )
    alerts: Alerts = Alerts()


class Cluster(Base, frozen=True, kw_only=True):
    """Everything ``chute render`` needs beyond the API file."""

    namespace: str = "default"
    #: Prefix of the shared objects (``<name>-gateway``, ``<name>-apis``) and the
    #: ``app.kubernetes.io/instance`` label that ``chute deploy`` prunes by.
    name: str = "chute"
    queue_url: str = "redis://redis:6379/0"
    store_url: str = "redis://redis:6379/0"
    #: Secret whose keys become environment variables of the gateway and the dequeuers
    #: (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, ...); optional, may be absent.
    credentials_secret: str = "chute-credentials"
    images: Images = Images()
    gateway: Gateway = Gateway()
    dequeuer: Dequeuer = Dequeuer()
    #: Seconds Kubernetes waits after SIGTERM before killing an API pod; default the
    #: dequeuer's grace period plus 30 s. Must leave the dequeuer at least 5 s past its grace.
    termination_grace_period: int | None = None
    #: Node labels every API pod requires (``nodeSelector``).
    node_selector: dict[str, str] = {}
    #: The node label whose value is the node group an API's ``node_groups`` name.
    node_group_label: str = "alpha.eksctl.io/nodegroup-name"
    #: The node groups that exist; when set, an API naming another one is an error.
    node_groups: list[str] = []
    #: Tolerations of every API pod; GPU and Inferentia tolerations are added when asked.
    tolerations: list[Toleration] = []
    #: Extra labels on every object.
    labels: dict[str, str] = {}
    #: KEDA TriggerAuthentication specs by name, rendered as objects (for triggers that
    #: name one in ``authenticationRef``, e.g. ``chute-aws`` for SQS).
    trigger_authentications: dict[str, dict[str, Any]] = {}
    #: KEDA's polling interval in seconds (Cortex's autoscaler ticked every 10 s).
    polling_interval: int = 10
    observability: Observability = Observability()

    @property
    def gateway_url(self) -> str:
        return self.gateway.url or f"http://{self.name}-gateway.{self.namespace}.svc:{GATEWAY_PORT}"

    @property
    def grace_seconds(self) -> int:
        """``terminationGracePeriodSeconds`` of the API pods."""
        if self.termination_grace_period is not None:
            return self.termination_grace_period
        return math.ceil(self.dequeuer.grace_period) + 30


#: What the dequeuer needs after its grace period: give the rest back and exit.
GRACE_MARGIN = 5

_DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def load_cluster(path: str | os.PathLike[str]) -> Cluster:
    """Read a cluster file. Raises :class:`~chute.errors.ConfigError` naming the file, the key
    and what was expected."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the cluster file: {exc.strerror or exc}") from None
    return loads_cluster(data, file=file)


def loads_cluster(data: str | bytes, *, file: str = "<string>") -> Cluster:
    """Like :func:`load_cluster`, for text in memory."""
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: invalid YAML: {exc}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{file}: $: expected a mapping of cluster settings")
    try:
        cluster = msgspec.convert(document, Cluster)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `")
        path = where.rstrip("`") or "$"
        raise ConfigError(f"{file}: {path}: {message}") from None
    problems = check_cluster(cluster)
    if problems:
        raise ConfigError("\n".join(f"{file}: {problem}" for problem in problems))
    return cluster


def check_cluster(cluster: Cluster) -> list[str]:
    """Every rule the types cannot say, as ``"$.path: message"`` lines."""
    out: list[str] = []
    for key in ("namespace", "name"):
        value = getattr(cluster, key)
        if not _DNS_1123_LABEL.match(value) or len(value) > 40:
            out.append(
                f"$.{key}: expected lowercase letters, digits and '-', at most 40 characters "
                f"(got {value!r})"
            )
    for key in ("queue_url", "store_url"):
        if "://" not in getattr(cluster, key):
            out.append(f"$.{key}: expected a backend URL such as redis://redis:6379/0")
    if cluster.store_url.lower().startswith("sqlite:"):
        out.append(
            "$.store_url: the embedded SQLite store is a file on one machine; the gateway and "
            "the dequeuers run in different pods and cannot share it: use redis://, s3:// or gs://"
        )
    gw = cluster.gateway
    if not 1 <= gw.min_replicas <= gw.max_replicas:
        out.append("$.gateway: expected 1 <= min_replicas <= max_replicas")
    if not gw.min_replicas <= gw.replicas <= gw.max_replicas:
        out.append("$.gateway.replicas: expected a number in min_replicas..max_replicas")
    if not 1 <= gw.target_cpu_utilization <= 100:
        out.append("$.gateway.target_cpu_utilization: expected a percentage in 1..100")
    for key in ("cpu", "mem", "max_body_size"):
        value = getattr(gw, key)
        try:
            parse_quantity(value.replace("iB", "i").replace("B", ""))
        except ConfigError as exc:
            out.append(f"$.gateway.{key}: {exc}")
    if cluster.dequeuer.grace_period < 0 or cluster.dequeuer.lease <= 0:
        out.append("$.dequeuer: expected grace_period >= 0 and lease > 0")
    if cluster.grace_seconds < cluster.dequeuer.grace_period + GRACE_MARGIN:
        out.append(
            f"$.termination_grace_period: expected at least {GRACE_MARGIN} s more than "
            f"dequeuer.grace_period ({cluster.dequeuer.grace_period:g} s), so the dequeuer can "
            f"finish its requests and give the rest back before it is killed "
            f"(got {cluster.termination_grace_period})"
        )
    if cluster.polling_interval < 1:
        out.append("$.polling_interval: expected 1 or more seconds")
    alerts = cluster.observability.alerts
    for key in ("stalled_for", "no_replicas_for"):
        try:
            parse_duration(getattr(alerts, key))
        except ConfigError as exc:
            out.append(f"$.observability.alerts.{key}: {exc}")
    try:
        parse_duration(cluster.observability.scrape_interval)
    except ConfigError as exc:
        out.append(f"$.observability.scrape_interval: {exc}")
    if not 0 < alerts.failure_ratio <= 1:
        out.append("$.observability.alerts.failure_ratio: expected a number in (0, 1]")
    for i, toleration in enumerate(cluster.tolerations):
        if toleration.operator == "Exists" and toleration.value is not None:
            out.append(f"$.tolerations[{i}]: expected no value with operator Exists")
    return out
