"""What every namespace gets once: the API file and client config ConfigMaps, and the shared
gateway (Deployment, Service, HorizontalPodAutoscaler), as Cortex's async-gateway was."""

from __future__ import annotations

import math
from typing import Any

import msgspec

from chute.config import API, dump_apis
from chute_k8s import names
from chute_k8s.cluster import CORTEX_NAMESPACE, CORTEX_SERVICE, GATEWAY_PORT, Cluster
from chute_k8s.workload import credentials, scrape_annotations

Obj = dict[str, Any]


def _configmap(cluster: Cluster, name: str, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": cluster.namespace,
            "labels": names.labels(cluster, "config"),
        },
        "data": data,
    }


def api_file(apis: list[API]) -> str:
    """The API file the pods read: normalised (defaults filled, stable), sorted by name."""
    return dump_apis(sorted(apis, key=lambda api: api.name))


def apis_configmap(apis: list[API], cluster: Cluster) -> Obj:
    return _configmap(cluster, names.apis_configmap(cluster), {names.API_FILE_KEY: api_file(apis)})


class _Environment(msgspec.Struct):
    name: str
    operator_endpoint: str


class _CLIConfig(msgspec.Struct):
    default_environment: str
    environments: list[_Environment]


def client_configmap(cluster: Cluster) -> Obj:
    """Cortex's ``cli.yaml``: ``chute.Client()`` inside a container reads the gateway from it."""
    config = _CLIConfig("default", [_Environment("default", cluster.gateway_url)])
    text = msgspec.yaml.encode(config).decode()
    return _configmap(cluster, names.client_configmap(cluster), {"cli.yaml": text})


def gateway_deployment(apis: list[API], cluster: Cluster) -> Obj:
    gw = cluster.gateway
    labels = names.labels(cluster, "gateway")
    annotations = {
        names.SPEC_HASH: names.spec_hash(api_file(apis)),
        **scrape_annotations(cluster, GATEWAY_PORT),
    }
    container: Obj = {
        "name": "gateway",
        "image": cluster.images.gateway,
        "imagePullPolicy": cluster.images.pull_policy,
        "command": ["chute"],
        "args": [
            "gateway",
            names.API_FILE,
            "--host",
            "0.0.0.0",
            "--port",
            str(GATEWAY_PORT),
            "--queue",
            cluster.queue_url,
            "--store",
            cluster.store_url,
            "--max-body-size",
            gw.max_body_size,
            "--grace-period",
            f"{gw.graceful_timeout:g}",
        ],
        "envFrom": [credentials(cluster)],
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "resources": {"requests": {"cpu": gw.cpu, "memory": gw.mem}},
        "volumeMounts": [{"name": "api-file", "mountPath": names.API_FILE_DIR, "readOnly": True}],
    }
    spec: Obj = {
        "containers": [container],
        "terminationGracePeriodSeconds": math.ceil(gw.graceful_timeout) + 10,
        "volumes": [{"name": "api-file", "configMap": {"name": names.apis_configmap(cluster)}}],
    }
    if cluster.images.pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in cluster.images.pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": names.gateway(cluster),
            "namespace": cluster.namespace,
            "labels": labels,
        },
        "spec": {
            "replicas": gw.replicas,
            "selector": {"matchLabels": names.selector(cluster, "gateway")},
            "template": {
                "metadata": {"labels": labels, "annotations": dict(sorted(annotations.items()))},
                "spec": spec,
            },
        },
    }


def gateway_service(cluster: Cluster) -> Obj:
    ports: list[Obj] = [
        {"name": "http", "port": GATEWAY_PORT, "targetPort": "http", "protocol": "TCP"}
    ]
    if cluster.gateway.cortex_address:
        # An ExternalName keeps the port the client dialled: Cortex's URL has none (80).
        ports.append({"name": "http-cortex", "port": 80, "targetPort": "http", "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": names.gateway(cluster),
            "namespace": cluster.namespace,
            "labels": names.labels(cluster, "gateway"),
        },
        "spec": {
            "type": cluster.gateway.service_type,
            "selector": names.selector(cluster, "gateway"),
            "ports": ports,
        },
    }


def cortex_address(cluster: Cluster) -> list[Obj]:
    """Cortex's in-cluster gateway name, pointing at chute's gateway (when the cluster file
    asks for it): the ``istio-system`` namespace and an ExternalName Service in it."""
    if not cluster.gateway.cortex_address:
        return []
    labels = names.labels(cluster, "gateway")
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            # Created when missing, never pruned: where Istio runs, it owns this namespace.
            "metadata": {"name": CORTEX_NAMESPACE},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": CORTEX_SERVICE, "namespace": CORTEX_NAMESPACE, "labels": labels},
            "spec": {
                "type": "ExternalName",
                "externalName": f"{names.gateway(cluster)}.{cluster.namespace}.svc.cluster.local",
            },
        },
    ]


def gateway_autoscaler(cluster: Cluster) -> Obj:
    gw = cluster.gateway
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": names.gateway(cluster),
            "namespace": cluster.namespace,
            "labels": names.labels(cluster, "gateway"),
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": names.gateway(cluster),
            },
            "minReplicas": gw.min_replicas,
            "maxReplicas": gw.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": gw.target_cpu_utilization,
                        },
                    },
                }
            ],
        },
    }
