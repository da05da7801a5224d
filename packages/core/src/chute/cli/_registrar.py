"""What adds a subcommand to ``chute``: core's own modules and plugins (hook
``chute_add_commands``) alike, without touching argparse's private subparsers action."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from chute.errors import PluginError

#: What runs a subcommand: takes the parsed arguments, returns the exit status.
Handler = Callable[[argparse.Namespace], int]


class CommandRegistrar:
    """Adds subcommands to one level of the ``chute`` command line.

    :meth:`add` makes a command that runs a handler; :meth:`group` makes a command whose
    actions are subcommands of their own (``chute dead-letter list``). Both return what to add
    arguments to. A name taken already raises :class:`~chute.errors.PluginError`.
    """

    def __init__(
        self, parser: argparse.ArgumentParser, *, dest: str = "command", metavar: str = "COMMAND"
    ) -> None:
        self._actions = parser.add_subparsers(dest=dest, required=True, metavar=metavar)
        self._names: dict[str, str] = {}

    @property
    def names(self) -> frozenset[str]:
        """The commands added so far (with their aliases)."""
        return frozenset(self._names)

    def add(
        self,
        name: str,
        *,
        run: Handler,
        help: str,
        description: str | None = None,
        aliases: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> argparse.ArgumentParser:
        """Add ``chute name``, run by ``run(args)``; returns its parser for the arguments.
        ``kwargs`` go to ``argparse.ArgumentParser`` (``epilog``, ``formatter_class``, ...)."""
        parser = self._new(name, help=help, description=description, aliases=aliases, **kwargs)
        parser.set_defaults(run=run)
        return parser

    def group(
        self,
        name: str,
        *,
        help: str,
        description: str | None = None,
        aliases: tuple[str, ...] = (),
        metavar: str = "ACTION",
    ) -> CommandRegistrar:
        """Add ``chute name ACTION``: returns the registrar of its actions (each added with
        :meth:`add`); the chosen action is ``args.<name>_command``."""
        parser = self._new(name, help=help, description=description, aliases=aliases)
        return CommandRegistrar(parser, dest=f"{name.replace('-', '_')}_command", metavar=metavar)

    def parser(self, name: str) -> argparse.ArgumentParser:
        """The parser of command ``name``, added already: a plugin adds arguments (and
        defaults) to a core command with it (chute-k8s gives ``chute status`` ``--cluster``'s
        companions). KeyError if there is no such command."""
        parser: argparse.ArgumentParser = self._actions.choices[self._names[name]]
        return parser

    def _new(
        self,
        name: str,
        *,
        help: str,
        description: str | None,
        aliases: tuple[str, ...],
        **kwargs: Any,
    ) -> argparse.ArgumentParser:
        for taken in (name, *aliases):
            if taken in self._names:
                raise PluginError(
                    f"command {taken!r} is added twice: as {self._names[taken]!r} and as {name!r}"
                )
        parser = self._actions.add_parser(
            name, help=help, description=description, aliases=list(aliases), **kwargs
        )
        self._names.update(dict.fromkeys((name, *aliases), name))
        return parser
