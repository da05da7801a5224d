"""chute-k8s's plugin entry point (group ``chute``, name ``k8s``): adds the ``render``,
``deploy``, ``delete`` and ``status`` subcommands, and its own hooks (``chute_k8s.hookspecs``)
to chute's plugin manager. Nothing heavy is imported here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chute import hookimpl

if TYPE_CHECKING:
    from chute.cli import CommandRegistrar
    from chute.registry import PluginManager


@hookimpl
def chute_add_hookspecs(manager: PluginManager) -> None:
    from chute_k8s import hookspecs

    manager.add_hookspecs(hookspecs)


@hookimpl
def chute_add_commands(commands: CommandRegistrar) -> None:
    from chute_k8s import cli

    cli.register(commands)
