"""The ``chute`` command. Each subcommand lives in its own module with ``register`` and
``run``; heavy imports happen inside ``run`` so that ``chute --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from chute._version import __version__
from chute.errors import ChuteError

#: Subcommand name → module under chute.cli, in the order ``--help`` lists them.
SUBCOMMANDS = ["validate"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chute", description="Async APIs for containerised HTTP services."
    )
    parser.add_argument("--version", action="version", version=f"chute {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"chute.cli.{name.replace('-', '_')}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except ChuteError as exc:
        print(f"chute {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
