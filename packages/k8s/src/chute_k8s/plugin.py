"""chute-k8s's plugin entry point (group ``chute``, name ``k8s``): adds the ``render``,
``deploy``, ``delete`` and ``status`` subcommands. Nothing heavy is imported here."""

from __future__ import annotations

import argparse

from chute import hookimpl


@hookimpl
def chute_add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from chute_k8s import cli

    cli.register(subparsers)
