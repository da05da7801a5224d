"""Typed callers of chute-k8s's hooks (``chute_k8s.hookspecs``), as chute's own
:class:`~chute.registry.PluginManager` has for core's: nothing in chute-k8s calls a hook
through pluggy but this."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chute.registry import PluginManager, plugin_manager
from chute_k8s import hookspecs

if TYPE_CHECKING:
    from chute.config import API
    from chute_k8s.cluster import Cluster


class K8sHooks:
    """chute-k8s's hooks on a plugin manager (the process-wide one by default), with the
    plugins loaded and chute-k8s's hook specifications added, whether or not chute-k8s's own
    plugin is registered in it."""

    def __init__(self, manager: PluginManager | None = None) -> None:
        self.manager = manager or plugin_manager()
        if not self.manager.has_hook("chute_k8s_objects"):
            self.manager.add_hookspecs(hookspecs)
        self.manager.load()

    def keda_trigger(
        self, queue_url: str, queue_name: str, api: API, cluster: Mapping[str, str]
    ) -> dict[str, object] | None:
        """The first plugin's answer to ``chute_keda_trigger``, or None when no plugin serves
        ``queue_url``."""
        answer: dict[str, object] | None = self.manager.pm.hook.chute_keda_trigger(
            queue_url=queue_url, queue_name=queue_name, api=api, cluster=cluster
        )
        return answer

    def adjust_objects(
        self, objects: list[dict[str, Any]], api: API | None, cluster: Cluster
    ) -> None:
        """Every plugin's ``chute_k8s_objects`` on ``objects``, in place."""
        self.manager.pm.hook.chute_k8s_objects(objects=objects, api=api, cluster=cluster)
