"""Every hook of chute's core a plugin can implement. This module is the reference.

A plugin is a distribution (``chute-<name>``, package ``chute_<name>``) with an entry point in
group ``chute`` pointing at a module that implements some of these hooks with
``@chute.hookimpl``. Hooks are synchronous: they register and configure; async work lives on
the objects they register. Callers never call a hook through pluggy: they use the typed
methods of :class:`chute.registry.PluginManager`. See docs/plugins.md.

A plugin may define hooks of its own (chute-k8s does, in ``chute_k8s.hookspecs``) and add them
with :func:`chute_add_hookspecs`. An implementation of a hook nobody declares is an error
(:class:`~chute.errors.PluginError`), unless it is marked ``@hookimpl(optionalhook=True)``: a
hook of a plugin that may not be installed (a queue backend's ``chute_keda_trigger``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from chute.cli import CommandRegistrar
    from chute.registry import BackendRegistry, PluginManager

PROJECT_NAME = "chute"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec(historic=True)
def chute_add_hookspecs(manager: PluginManager) -> None:
    """Add a plugin's own hook specifications: call ``manager.add_hookspecs(module)``.

    Called once for every plugin, as soon as it is registered (a plugin registered later is
    called then), before any implementation is checked against the known hooks.
    """


@hookspec
def chute_register_backends(registry: BackendRegistry) -> None:
    """Register queue and store factories for URL schemes.

    Call ``registry.add_queue(scheme, factory)`` and ``registry.add_store(scheme, factory)``;
    a factory takes the full URL string and returns a ``Queue`` or ``Store``. Import heavy SDKs
    inside the factory, not at module level, so that loading the plugin stays cheap.
    """


@hookspec
def chute_add_commands(commands: CommandRegistrar) -> None:
    """Add subcommands to the ``chute`` command line (e.g. chute-k8s adds ``render``).

    Call ``commands.add(name, run=function, help=...)``, which returns the subcommand's
    ``argparse.ArgumentParser`` for its arguments (``commands.group(name, help=...)`` for a
    command with actions of its own, as ``chute dead-letter list``); ``function(args)`` returns
    the exit status and may raise :class:`~chute.errors.ChuteError` for a clean one-line error.
    Called after core's own subcommands, when the parser is built; import heavy modules inside
    ``function``.
    """
