"""Everything an API file needs on a cluster, as plain Kubernetes objects (dicts).

Checks come first and report every problem at once; nothing is rendered until they pass.
Then the namespace's shared objects, then each API's (sorted by name), each group passed
through the ``chute_k8s_objects`` hook.
"""

from __future__ import annotations

from typing import Any

from chute.config import API, parse_quantity
from chute.errors import ConfigError
from chute.registry import PluginManager
from chute_k8s import gateway, observability, scaling, workload
from chute_k8s.cluster import Cluster
from chute_k8s.hooks import K8sHooks

Obj = dict[str, Any]


def check(apis: list[API], cluster: Cluster, *, file: str = "API file") -> list[str]:
    """Rules that depend on the cluster, or that Kubernetes enforces on a pod, beyond what
    loading the API file checks. One line per problem: ``file: $[i].path: message``."""
    out: list[str] = []
    known = set(cluster.node_groups)
    for i, api in enumerate(apis):
        where = f"{file}: $[{i}]"
        for k, group in enumerate(api.node_groups or []):
            if known and group not in known:
                out.append(
                    f"{where}.node_groups[{k}]: expected one of the cluster file's node_groups "
                    f"({', '.join(sorted(known))}) (got {group!r})"
                )
        for j, container in enumerate(api.pod.containers):
            compute = container.compute
            path = f"{where}.pod.containers[{j}].compute"
            if compute.inf > 0 and compute.cpu is None and compute.mem is None:
                out.append(
                    f"{path}: Inferentia needs huge pages, and Kubernetes grants huge pages only "
                    "to a container that requests cpu or mem: set one of them"
                )
            if compute.shm is not None and parse_quantity(compute.shm) > 0 and compute.mem is None:
                out.append(
                    f"{path}.shm: a memory-backed /dev/shm counts against the container's "
                    "memory; set mem too, so that the scheduler reserves it"
                )
    return out


def render(
    apis: list[API],
    cluster: Cluster,
    *,
    manager: PluginManager | None = None,
    file: str = "API file",
) -> list[Obj]:
    """Every object, in a stable order. Raises :class:`~chute.errors.ConfigError` listing
    every problem before anything is rendered."""
    problems = check(apis, cluster, file=file)
    if problems:
        raise ConfigError("\n".join(problems))
    hooks = K8sHooks(manager)
    ordered = sorted(apis, key=lambda api: api.name)
    per_api = [
        [workload.deployment(api, cluster), scaling.scaled_object(api, cluster, hooks)]
        for api in ordered
    ]
    shared = [
        gateway.apis_configmap(apis, cluster),
        gateway.client_configmap(cluster),
        gateway.gateway_deployment(apis, cluster),
        gateway.gateway_service(cluster),
        gateway.gateway_autoscaler(cluster),
        *gateway.cortex_address(cluster),
        *scaling.trigger_authentications(cluster),
        *observability.objects(cluster),
    ]
    hooks.adjust_objects(shared, None, cluster)
    out = list(shared)
    for api, objects in zip(ordered, per_api, strict=True):
        hooks.adjust_objects(objects, api, cluster)
        out += objects
    return out
