"""``--yes`` and the question destructive commands ask first (``dead-letter purge``,
``chute delete``): asked on a terminal, refused without ``--yes`` anywhere else."""

from __future__ import annotations

import argparse
import sys
from typing import IO


def add_yes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do it without asking (needed when standard input is not a terminal)",
    )


def confirm(
    args: argparse.Namespace,
    question: str,
    *,
    stdin: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> bool:
    """True with ``--yes``, or when the user answers y on a terminal. Without a terminal and
    without ``--yes``, print why nothing happened and return False (exit status 2)."""
    if getattr(args, "yes", False):
        return True
    stdin = stdin if stdin is not None else sys.stdin
    stderr = stderr if stderr is not None else sys.stderr
    command = f"chute {args.command}"
    if not stdin.isatty():
        stderr.write(
            f"{command}: refusing to {question.rstrip('?')} without confirmation: standard "
            "input is not a terminal; pass --yes to do it\n"
        )
        return False
    stderr.write(f"{question[:1].upper()}{question[1:]} [y/N] ")
    stderr.flush()
    answer = stdin.readline().strip().lower()
    if answer in ("y", "yes"):
        return True
    stderr.write(f"{command}: nothing done\n")
    return False
