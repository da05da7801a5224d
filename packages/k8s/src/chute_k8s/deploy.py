"""``chute deploy``, ``chute delete`` and ``chute status`` on a live cluster (via :class:`Kube`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from chute.backends.base import QueueDepth
from chute.errors import ChuteError, NotFound
from chute.registry import open_queue
from chute_k8s import names
from chute_k8s.cluster import CORTEX_NAMESPACE, Cluster
from chute_k8s.kube import Kube

Obj = dict[str, Any]
Say = Callable[[str], None]

#: Every kind chute renders, in the order a prune deletes them (the scaler before what it
#: scales). Plugin-added kinds are pruned too when they carry chute's labels.
KINDS = [
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
]


def _key(obj: Obj) -> tuple[str, str, str]:
    return (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])


def _keep_replicas(kube: Kube, obj: Obj) -> Obj:
    """An existing Deployment keeps its replica count (the autoscaler's), as Cortex did;
    ``replicas`` of the rendered object applies only at creation."""
    if obj["kind"] != "Deployment" or "replicas" not in obj.get("spec", {}):
        return obj
    meta = obj["metadata"]
    live = kube.get(obj["apiVersion"], "Deployment", meta["namespace"], meta["name"])
    if live is None or live.get("spec", {}).get("replicas") is None:
        return obj
    return {**obj, "spec": {**obj["spec"], "replicas": live["spec"]["replicas"]}}


def deploy(
    objects: list[Obj], cluster: Cluster, kube: Kube, say: Say = print, *, dry_run: bool = False
) -> None:
    """Apply every object (server-side, field manager ``chute``), then delete the objects
    chute made earlier in this namespace that are no longer rendered (APIs removed from the
    file, monitoring turned off). ``dry_run`` changes nothing: it only reads the cluster and
    says what would be applied and pruned."""
    for obj in objects:  # every kind must exist before anything changes
        kube.require(obj["apiVersion"], obj["kind"])
    for obj in objects:
        if dry_run:
            say(f"would apply {obj['kind']} {obj['metadata']['name']}")
            continue
        kube.apply(_keep_replicas(kube, obj), field_manager=names.FIELD_MANAGER)
        say(f"applied {obj['kind']} {obj['metadata']['name']}")
    rendered = {_key(obj) for obj in objects}
    kinds = list(KINDS)
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) not in kinds:
            kinds.append((obj["apiVersion"], obj["kind"]))
    for api_version, kind in kinds:
        for namespace in _namespaces(cluster, kind):
            for live in kube.list(api_version, kind, namespace, names.prune_selector(cluster)):
                if _key(live) not in rendered:
                    name = live["metadata"]["name"]
                    if dry_run:
                        say(f"would prune {kind} {name}")
                    elif kube.delete(api_version, kind, namespace, name):
                        say(f"pruned {kind} {name}")


def _namespaces(cluster: Cluster, kind: str) -> list[str]:
    """Where chute's objects of ``kind`` may live: the cluster's namespace, and for Services
    Cortex's (the in-cluster address, pruned when the cluster file turns it off)."""
    if kind == "Service" and cluster.namespace != CORTEX_NAMESPACE:
        return [cluster.namespace, CORTEX_NAMESPACE]
    return [cluster.namespace]


def delete_api(api: str, cluster: Cluster, kube: Kube, say: Say = print) -> None:
    """Delete one API's objects (Deployment, ScaledObject, and any other with its label)."""
    selector = f"{names.prune_selector(cluster)},{names.API_LABEL}={api}"
    deleted = 0
    for api_version, kind in KINDS:
        for live in kube.list(api_version, kind, cluster.namespace, selector):
            if kube.delete(api_version, kind, cluster.namespace, live["metadata"]["name"]):
                say(f"deleted {kind} {live['metadata']['name']}")
                deleted += 1
    if not deleted:
        raise NotFound(
            f"no API {api!r} deployed by chute in namespace {cluster.namespace!r} "
            f"(instance {cluster.name!r})"
        )


class APIStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``chute status``."""

    api: str
    desired: int
    ready: int
    updated: int
    min_replicas: int | None = None
    max_replicas: int | None = None
    scaler_ready: str | None = None  # the ScaledObject's Ready condition: True/False/Unknown
    depth: QueueDepth | None = None
    depth_error: str | None = None


def _condition(obj: Obj | None, kind: str) -> str | None:
    if obj is None:
        return None
    for condition in obj.get("status", {}).get("conditions", []):
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return "Unknown"


async def _depths(queue_url: str, apis: list[str]) -> dict[str, QueueDepth | str]:
    """Each API's queue depth, or why it could not be read."""
    out: dict[str, QueueDepth | str] = {}
    try:
        queue = open_queue(queue_url)
    except ChuteError as exc:
        return dict.fromkeys(apis, str(exc))
    async with queue:
        if not queue.supports_depth:
            return dict.fromkeys(apis, f"{type(queue).__name__} cannot count its messages")
        for api in apis:
            try:
                with anyio.fail_after(5):
                    out[api] = await queue.depth(api)
            except ChuteError as exc:
                out[api] = str(exc)
            except TimeoutError:
                out[api] = f"no answer from {queue_url} within 5 s"
    return out


def status(cluster: Cluster, kube: Kube, *, queue_url: str | None = None) -> list[APIStatus]:
    """Replicas and ready pods of every API chute deployed here, and its queue's depth read
    from ``queue_url`` (default: the cluster file's, which must be reachable from here)."""
    selector = f"{names.prune_selector(cluster)},{names.COMPONENT}=api"
    deployments = kube.list("apps/v1", "Deployment", cluster.namespace, selector)
    scalers = {
        s["metadata"].get("labels", {}).get(names.API_LABEL): s
        for s in kube.list("keda.sh/v1alpha1", "ScaledObject", cluster.namespace, selector)
    }
    apis = sorted(d["metadata"].get("labels", {}).get(names.API_LABEL, "") for d in deployments)
    depths = anyio.run(_depths, queue_url or cluster.queue_url, apis) if apis else {}
    rows = []
    for d in sorted(deployments, key=lambda d: d["metadata"]["name"]):
        api = d["metadata"].get("labels", {}).get(names.API_LABEL, "")
        scaler = scalers.get(api)
        found = depths.get(api)
        rows.append(
            APIStatus(
                api=api,
                desired=int(d.get("spec", {}).get("replicas") or 0),
                ready=int(d.get("status", {}).get("readyReplicas") or 0),
                updated=int(d.get("status", {}).get("updatedReplicas") or 0),
                min_replicas=None if scaler is None else scaler["spec"].get("minReplicaCount"),
                max_replicas=None if scaler is None else scaler["spec"].get("maxReplicaCount"),
                scaler_ready=_condition(scaler, "Ready"),
                depth=found if isinstance(found, QueueDepth) else None,
                depth_error=found if isinstance(found, str) else None,
            )
        )
    return rows


def format_status(rows: list[APIStatus]) -> str:
    """A plain table, one API a line."""
    header = (
        "API",
        "READY",
        "DESIRED",
        "UPDATED",
        "MIN",
        "MAX",
        "SCALER",
        "QUEUED",
        "IN FLIGHT",
        "DEAD",
    )
    table = [header]
    notes = []
    for row in rows:
        depth = row.depth
        table.append(
            (
                row.api,
                str(row.ready),
                str(row.desired),
                str(row.updated),
                "-" if row.min_replicas is None else str(row.min_replicas),
                "-" if row.max_replicas is None else str(row.max_replicas),
                row.scaler_ready or "missing",
                "?" if depth is None else str(depth.queued),
                "?" if depth is None else str(depth.in_flight),
                "?" if depth is None else str(depth.dead),
            )
        )
        if row.depth_error:
            notes.append(f"{row.api}: queue depth unknown: {row.depth_error}")
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    return "\n".join(lines + notes) + "\n"
