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
from chute.errors import ChuteError

#: Subcommands that first-party distributions add, and the extra that installs each.
PLUGIN_COMMANDS = {
    "render": "chute[k8s]",
    "deploy": "chute[k8s]",
    "delete": "chute[k8s]",
}


def _subcommand_modules() -> list[ModuleType]:
    """Every module in this package defines one subcommand (``register`` and ``ORDER``)."""
    modules = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chute", description="Async APIs for containerised HTTP services."
    )
    parser.add_argument("--version", action="version", version=f"chute {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _subcommand_modules():
        module.register(sub)
    _add_plugin_commands(sub)
    return parser


def _add_plugin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Subcommands from plugins (hook ``chute_add_commands``). A broken plugin is reported and
    skipped, so that core's own commands keep working."""
    from chute.registry import plugin_manager

    manager = plugin_manager()
    try:
        _ = manager.backends  # loads every entry point in group "chute"
    except ChuteError as exc:
        print(f"chute: warning: {exc}", file=sys.stderr)
        return
    manager.pm.hook.chute_add_commands(subparsers=sub)


def _missing_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """The install hint for a plugin subcommand that is not installed, if ``argv`` asks for one."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command not in PLUGIN_COMMANDS:
        return None
    for action in parser._actions:  # argparse has no public way to list subcommands
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return None
    from chute.install import install_line

    extra = PLUGIN_COMMANDS[command]
    line = install_line(extra.removeprefix("chute[").removesuffix("]"))
    return f"chute: {command!r} comes with {extra}; install it with: {line}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    hint = _missing_command(parser, sys.argv[1:] if argv is None else argv)
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
