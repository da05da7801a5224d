"""The hook chute-k8s adds to chute's plugin manager: adjust the rendered objects.

Implement it in any chute plugin (an entry point in group ``chute``) with ``@chute.hookimpl``;
see docs/kubernetes.md ("Adjusting the objects").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chute.hookspecs import hookspec

if TYPE_CHECKING:
    from chute.config import API
    from chute_k8s.cluster import Cluster


@hookspec
def chute_k8s_objects(objects: list[dict[str, Any]], api: API | None, cluster: Cluster) -> None:
    """Change, add or remove rendered Kubernetes objects, in place.

    Called once per API with that API's objects (its Deployment and ScaledObject), and once
    with ``api=None`` for the objects shared by the namespace (gateway, ConfigMaps,
    monitoring). Objects are plain dicts, as ``chute render`` prints them; keep them
    deterministic so that the output stays stable. Every implementation is called.
    """
