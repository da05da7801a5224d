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
    import argparse
    from collections.abc import Mapping

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
def chute_keda_trigger(
    queue_url: str, queue_name: str, api: API, cluster: Mapping[str, str]
) -> dict[str, object] | None:
    """The KEDA trigger that scales ``api`` on the depth of its queue, for a queue backend
    this plugin serves; ``None`` when ``queue_url`` is not this plugin's.

    Return one entry of a ScaledObject's ``spec.triggers``: ``{"type": ..., "metadata": {...}}``
    plus ``"authenticationRef"`` where credentials are needed. ``queue_name`` is the backend's
    own name for the API's queue. The target per replica is ``api.autoscaling.target_in_flight``.
    Used by ``chute render`` (chute-k8s); the first plugin to answer wins.

    ``cluster`` holds what a trigger may need to know about the target cluster (an impl takes
    it only if it needs it): ``namespace``, ``gateway_url`` (the in-cluster gateway) and
    ``prometheus_url`` (the Prometheus server KEDA can query). chute-k8s passes the API's name
    as ``queue_name``. Raise :class:`~chute.errors.ConfigError` for a queue of this plugin that
    cannot drive autoscaling on a cluster.
    """


@hookspec
def chute_add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add subcommands to the ``chute`` command line (e.g. chute-k8s adds ``render``).

    Call ``subparsers.add_parser(name, help=...)``, add its arguments and
    ``set_defaults(run=function)``; ``function(args)`` returns the exit status and may raise
    :class:`~chute.errors.ChuteError` for a clean one-line error. Called after core's own
    subcommands, when the parser is built; import heavy modules inside ``run``.
    """
