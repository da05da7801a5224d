"""The Deployment ``api-<name>`` of one API: the user containers, then the dequeuer sidecar.

Follows what Cortex's operator rendered (``pkg/workloads/k8s.go``), with the dequeuer's
real flags: see docs/kubernetes.md for each field and where it comes from.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from chute._version import __version__
from chute.config import API, Container, HTTPGet, PreStop, Probe, Quantity, parse_quantity
from chute_k8s import names
from chute_k8s.cluster import Cluster

#: The dequeuer's admin port (``/healthz``, ``/metrics``), Cortex's 15000.
ADMIN_PORT = 15000
#: Exactly what Cortex requested for its dequeuer.
DEQUEUER_RESOURCES = {"requests": {"cpu": "100m", "memory": "100Mi"}}
GPU_RESOURCE = "nvidia.com/gpu"
NEURON_RESOURCE = "aws.amazon.com/neuron"
#: Cortex gave every Inferentia chip 128 huge pages of 2 MiB.
HUGEPAGES_PER_CHIP_MI = 256

Obj = dict[str, Any]


def quantity(value: Quantity) -> str:
    """A quantity as Kubernetes spells it: strings as written, numbers without exponent."""
    if isinstance(value, str):
        return value
    return format(Decimal(repr(value)) if isinstance(value, float) else Decimal(value), "f")


def _http_get(action: HTTPGet) -> Obj:
    return {"path": action.path, "port": action.port}


def probe(spec: Probe) -> Obj:
    """A liveness probe, one to one."""
    out: Obj = {}
    if spec.http_get is not None:
        out["httpGet"] = _http_get(spec.http_get)
    if spec.tcp_socket is not None:
        out["tcpSocket"] = {"port": spec.tcp_socket.port}
    if spec.exec is not None:
        out["exec"] = {"command": list(spec.exec.command)}
    out.update(
        initialDelaySeconds=spec.initial_delay_seconds,
        timeoutSeconds=spec.timeout_seconds,
        periodSeconds=spec.period_seconds,
        successThreshold=spec.success_threshold,
        failureThreshold=spec.failure_threshold,
    )
    return out


def pre_stop(spec: PreStop) -> Obj:
    if spec.http_get is not None:
        return {"httpGet": _http_get(spec.http_get)}
    assert spec.exec is not None  # the API file's rules allow exactly one
    return {"exec": {"command": list(spec.exec.command)}}


def resources(container: Container) -> Obj:
    """Requests from ``compute``; accelerators as request and limit (extended resources must
    be equal in both); no CPU or memory limit, as in Cortex."""
    compute = container.compute
    requests: Obj = {}
    limits: Obj = {}
    if compute.cpu is not None:
        requests["cpu"] = quantity(compute.cpu)
    if compute.mem is not None:
        requests["memory"] = quantity(compute.mem)
    if compute.gpu > 0:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(compute.gpu)
    if compute.inf > 0:
        requests[NEURON_RESOURCE] = limits[NEURON_RESOURCE] = str(compute.inf)
        pages = f"{compute.inf * HUGEPAGES_PER_CHIP_MI}Mi"
        requests["hugepages-2Mi"] = limits["hugepages-2Mi"] = pages
    out: Obj = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def _has_shm(container: Container) -> bool:
    shm = container.compute.shm
    return shm is not None and parse_quantity(shm) > 0


def user_container(api: API, container: Container, cluster: Cluster) -> Obj:
    env = [
        {"name": "CORTEX_VERSION", "value": __version__},
        {"name": "CORTEX_CLI_CONFIG_DIR", "value": names.CLIENT_CONFIG_DIR},
        {"name": "CORTEX_PORT", "value": str(api.pod.port)},
        {"name": "CHUTE_GATEWAY_URL", "value": cluster.gateway_url},
    ]
    # Sorted, as Cortex did, so that reordering the file does not roll the pods.
    env += [{"name": key, "value": value} for key, value in sorted(container.env.items())]
    mounts = [
        {"name": "mnt", "mountPath": "/mnt"},
        {
            "name": "client-config",
            "mountPath": f"{names.CLIENT_CONFIG_DIR}/cli.yaml",
            "subPath": "cli.yaml",
            "readOnly": True,
        },
    ]
    if _has_shm(container):
        mounts.append({"name": f"dshm-{container.name}", "mountPath": "/dev/shm"})
    out: Obj = {"name": container.name, "image": container.image}
    if container.command is not None:
        out["command"] = list(container.command)
    if container.args is not None:
        out["args"] = list(container.args)
    out["env"] = env
    out["resources"] = resources(container)
    if container.compute.inf > 0:  # what the Neuron runtime needs (as Cortex granted)
        out["securityContext"] = {"capabilities": {"add": ["SYS_ADMIN", "IPC_LOCK"]}}
    # No readiness probe here: the dequeuer runs the API's readiness probes and is ready only
    # when they pass, so the pod is ready exactly when the user containers are.
    if container.liveness_probe is not None:
        out["livenessProbe"] = probe(container.liveness_probe)
    if container.pre_stop is not None:
        out["lifecycle"] = {"preStop": pre_stop(container.pre_stop)}
    out["volumeMounts"] = mounts
    return out


def dequeuer_args(api: API, cluster: Cluster) -> list[str]:
    """The sidecar's flags (``chute-dequeuer --help``)."""
    return [
        "--api-file",
        names.API_FILE,
        "--api",
        api.name,
        "--user-port",
        str(api.pod.port),
        "--workers",
        str(api.pod.max_concurrency),
        "--admin-port",
        str(ADMIN_PORT),
        "--admin-host",
        "0.0.0.0",
        "--queue",
        cluster.queue_url,
        "--store",
        cluster.store_url,
        "--grace-period",
        f"{cluster.dequeuer.grace_period:g}",
        "--lease",
        f"{cluster.dequeuer.lease:g}",
    ]


def dequeuer_container(api: API, cluster: Cluster) -> Obj:
    return {
        "name": "dequeuer",
        "image": cluster.images.dequeuer,
        "imagePullPolicy": cluster.images.pull_policy,
        "command": ["chute-dequeuer"],
        "args": dequeuer_args(api, cluster),
        "envFrom": [credentials(cluster)],
        "ports": [{"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        "resources": DEQUEUER_RESOURCES,
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": ADMIN_PORT},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "volumeMounts": [
            {"name": "api-file", "mountPath": names.API_FILE_DIR, "readOnly": True},
            {"name": "mnt", "mountPath": "/mnt"},
        ],
    }


def credentials(cluster: Cluster) -> Obj:
    """The backend credentials as environment; optional, so a cluster without the Secret
    (in-cluster Redis without a password, workload identity) still starts."""
    return {"secretRef": {"name": cluster.credentials_secret, "optional": True}}


def scrape_annotations(cluster: Cluster, port: int) -> dict[str, str]:
    if not cluster.observability.prometheus_annotations:
        return {}
    return {
        "prometheus.io/path": "/metrics",
        "prometheus.io/port": str(port),
        "prometheus.io/scrape": "true",
    }


def tolerations(api: API, cluster: Cluster) -> list[Obj]:
    out = [_toleration(t.key, t.operator, t.value, t.effect) for t in cluster.tolerations]
    if any(c.compute.gpu > 0 for c in api.pod.containers):
        out.append(_toleration(GPU_RESOURCE, "Exists", None, "NoSchedule"))
    if any(c.compute.inf > 0 for c in api.pod.containers):
        out.append(_toleration(NEURON_RESOURCE, "Exists", None, "NoSchedule"))
    return out


def _toleration(key: str | None, operator: str, value: str | None, effect: str | None) -> Obj:
    out: Obj = {}
    if key is not None:
        out["key"] = key
    out["operator"] = operator
    if value is not None:
        out["value"] = value
    if effect is not None:
        out["effect"] = effect
    return out


def volumes(api: API, cluster: Cluster) -> list[Obj]:
    out: list[Obj] = [
        {"name": "mnt", "emptyDir": {}},
        {"name": "client-config", "configMap": {"name": names.client_configmap(cluster)}},
        {"name": "api-file", "configMap": {"name": names.apis_configmap(cluster)}},
    ]
    for container in api.pod.containers:
        if _has_shm(container):
            assert container.compute.shm is not None
            out.append(
                {
                    "name": f"dshm-{container.name}",
                    "emptyDir": {"medium": "Memory", "sizeLimit": quantity(container.compute.shm)},
                }
            )
    return out


def pod_spec(api: API, cluster: Cluster) -> Obj:
    spec: Obj = {
        "containers": [user_container(api, c, cluster) for c in api.pod.containers]
        + [dequeuer_container(api, cluster)],
        "terminationGracePeriodSeconds": cluster.grace_seconds,
        "volumes": volumes(api, cluster),
    }
    if cluster.node_selector:
        spec["nodeSelector"] = dict(sorted(cluster.node_selector.items()))
    if api.node_groups:
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": cluster.node_group_label,
                                    "operator": "In",
                                    "values": list(api.node_groups),
                                }
                            ]
                        }
                    ]
                }
            }
        }
    found = tolerations(api, cluster)
    if found:
        spec["tolerations"] = found
    if cluster.images.pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in cluster.images.pull_secrets]
    return spec


def _rollout(value: str | int) -> str | int:
    """Cortex read ``"2"`` as 2; Kubernetes takes a string only as a percentage."""
    return int(value) if isinstance(value, str) and value.isdigit() else value


def deployment(api: API, cluster: Cluster) -> Obj:
    """The API's Deployment. ``replicas`` is ``init_replicas``; ``chute deploy`` keeps the
    running count of an existing Deployment instead (as Cortex did)."""
    scaling = api.autoscaling
    labels = names.labels(cluster, "api", api)
    template_annotations = {
        names.SPEC_HASH: names.api_hash(api),
        **scrape_annotations(cluster, ADMIN_PORT),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": names.deployment(api),
            "namespace": cluster.namespace,
            "labels": labels,
            "annotations": {
                "chute.dev/endpoint": api.endpoint,
                "chute.dev/max-concurrency": str(api.pod.max_concurrency),
            },
        },
        "spec": {
            "replicas": scaling.init_replicas,
            "selector": {"matchLabels": names.selector(cluster, "api", api)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": _rollout(api.update_strategy.max_surge),
                    "maxUnavailable": _rollout(api.update_strategy.max_unavailable),
                },
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": dict(sorted(template_annotations.items())),
                },
                "spec": pod_spec(api, cluster),
            },
        },
    }
