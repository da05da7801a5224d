"""The ``chute`` command. Each subcommand lives in its own module with ``register`` and
``run``; heavy imports happen inside ``run`` so that ``chute --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from chute._version import __version__
from chute.cli import _exit as exit_codes
from chute.cli._argtypes import parse_size, positive_seconds
from chute.cli._registrar import CommandRegistrar, Handler
from chute.cli._watching import watch
from chute.errors import ChuteError

__all__ = [
    "CommandRegistrar",
    "Handler",
    "build_parser",
    "main",
    "parse_size",
    "positive_seconds",
    "watch",
]

#: Subcommands that first-party distributions add, and the extra that installs each.
PLUGIN_COMMANDS = {
    "render": "chute[k8s]",
    "deploy": "chute[k8s]",
    "delete": "chute[k8s]",
}


def _subcommand_modules() -> list[ModuleType]:
    """Every public module in this package defines one subcommand: ``register(commands)``,
    given the :class:`CommandRegistrar`, and ``ORDER``."""
    modules = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    parser, _ = _build()
    return parser


def _build() -> tuple[argparse.ArgumentParser, CommandRegistrar]:
    parser = argparse.ArgumentParser(
        prog="chute", description="Async APIs for containerised HTTP services."
    )
    parser.add_argument("--version", action="version", version=f"chute {__version__}")
    commands = CommandRegistrar(parser)
    for module in _subcommand_modules():
        module.register(commands)
    _add_plugin_commands(commands)
    return parser, commands


def _add_plugin_commands(commands: CommandRegistrar) -> None:
    """Subcommands from plugins (hook ``chute_add_commands``). A broken plugin is reported and
    skipped, so that core's own commands keep working."""
    from chute.registry import plugin_manager

    try:
        plugin_manager().add_commands(commands)
    except ChuteError as exc:
        print(f"chute: warning: {exc}", file=sys.stderr)


def _missing_command(commands: CommandRegistrar, argv: Sequence[str]) -> str | None:
    """The install hint for a plugin subcommand that is not there, if ``argv`` asks for one."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command not in PLUGIN_COMMANDS or command in commands.names:
        return None
    from chute.install import install_line
    from chute.registry import plugin_manager

    extra = PLUGIN_COMMANDS[command]
    plugin = extra.removeprefix("chute[").removesuffix("]")
    why = plugin_manager().not_loaded(plugin)
    if why:
        return (
            f"chute: {command!r} comes with the plugin {plugin!r}, installed but not loaded: {why}"
        )
    return f"chute: {command!r} comes with {extra}; install it with: {install_line(plugin)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = _build()
    hint = _missing_command(commands, sys.argv[1:] if argv is None else argv)
    if hint is not None:
        print(hint, file=sys.stderr)
        return exit_codes.USAGE
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except ChuteError as exc:
        print(f"chute {args.command}: {exc}", file=sys.stderr)
        return exit_codes.for_error(exc)
    except BaseExceptionGroup as group:
        # A task group's error (anyio): one clear line when it holds a single chute error.
        only = _only_chute_error(group)
        if only is None:
            raise
        print(f"chute {args.command}: {only}", file=sys.stderr)
        return exit_codes.for_error(only)
    except KeyboardInterrupt:
        return exit_codes.INTERRUPTED
    return code


def _only_chute_error(group: BaseExceptionGroup[BaseException]) -> ChuteError | None:
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 and isinstance(leaves[0], ChuteError) else None


if __name__ == "__main__":
    sys.exit(main())
