"""Every hook a chute plugin can implement. This module is the reference.

A plugin is a distribution (``chute-<name>``, package ``chute_<name>``) with an entry point in
group ``chute`` pointing at a module that implements some of these hooks with
``@chute.hookimpl``. Hooks are synchronous: they register and configure; async work lives on
the objects they register. See docs/plugins.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from chute.config import API
    from chute.registry import BackendRegistry

PROJECT_NAME = "chute"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def chute_register_backends(registry: BackendRegistry) -> None:
    """Register queue and store factories for URL schemes.

    Call ``registry.add_queue(scheme, factory)`` and ``registry.add_store(scheme, factory)``;
    a factory takes the full URL string and returns a ``Queue`` or ``Store``. Import heavy SDKs
    inside the factory, not at module level, so that loading the plugin stays cheap.
    """


@hookspec(firstresult=True)
def chute_keda_trigger(queue_url: str, queue_name: str, api: API) -> dict[str, object] | None:
    """The KEDA trigger that scales ``api`` on the depth of its queue, for a queue backend
    this plugin serves; ``None`` when ``queue_url`` is not this plugin's.

    Return one entry of a ScaledObject's ``spec.triggers``: ``{"type": ..., "metadata": {...}}``
    plus ``"authenticationRef"`` where credentials are needed. ``queue_name`` is the backend's
    own name for the API's queue. The target per replica is ``api.autoscaling.target_in_flight``.
    Used by ``chute render`` (chute-k8s); the first plugin to answer wins.
    """
