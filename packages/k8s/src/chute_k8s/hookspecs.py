"""The hooks chute-k8s adds to chute's plugin manager (its plugin's ``chute_add_hookspecs``).

Implement them in any chute plugin (an entry point in group ``chute``) with
``@chute.hookimpl``; a plugin that works without chute-k8s too (a queue backend answering
``chute_keda_trigger``) marks its implementation ``@chute.hookimpl(optionalhook=True)``, so
that chute does not reject it where chute-k8s is not installed. chute-k8s calls them through
:class:`chute_k8s.hooks.K8sHooks`. See docs/plugins.md ("More hooks") and docs/kubernetes.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chute.hookspecs import hookspec

if TYPE_CHECKING:
    from chute.config import API
    from chute_k8s.cluster import Cluster


@hookspec(firstresult=True)
def chute_keda_trigger(
    queue_url: str, queue_name: str, api: API, cluster: Mapping[str, str]
) -> dict[str, object] | None:
    """The KEDA trigger that scales ``api`` on the depth of its queue, for a queue backend
    this plugin serves; ``None`` when ``queue_url`` is not this plugin's.

    Return one entry of a ScaledObject's ``spec.triggers``: ``{"type": ..., "metadata": {...}}``
    plus ``"authenticationRef"`` where credentials are needed. ``queue_name`` is the backend's
    own name for the API's queue. The target per replica is ``api.autoscaling.target_in_flight``.
    Used by ``chute render``; the first plugin to answer wins.

    ``cluster`` holds what a trigger may need to know about the target cluster (an impl takes
    it only if it needs it): ``namespace``, ``gateway_url`` (the in-cluster gateway) and
    ``prometheus_url`` (the Prometheus server KEDA can query). chute-k8s passes the API's name
    as ``queue_name``. Raise :class:`~chute.errors.ConfigError` for a queue of this plugin that
    cannot drive autoscaling on a cluster.
    """


@hookspec
def chute_k8s_objects(objects: list[dict[str, Any]], api: API | None, cluster: Cluster) -> None:
    """Change, add or remove rendered Kubernetes objects, in place.

    Called once per API with that API's objects (its Deployment and ScaledObject), and once
    with ``api=None`` for the objects shared by the namespace (gateway, ConfigMaps,
    monitoring). Objects are plain dicts, as ``chute render`` prints them; keep them
    deterministic so that the output stays stable. Every implementation is called.
    """
