"""``chute validate FILE``: check an API configuration file and print it normalised."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chute.cli import CommandRegistrar

ORDER = 10


def register(commands: CommandRegistrar) -> None:
    parser = commands.add(
        "validate",
        run=run,
        help="check an API configuration file",
        description=(
            "Check an API configuration file (a YAML list of Cortex AsyncAPI specs). A valid "
            "file is printed back normalised, with every default filled in; each problem in an "
            "invalid one is printed on its own line as 'FILE:LINE: PATH: MESSAGE' (every "
            "problem in one run), and the exit status is 3."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="the YAML file to check")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing when the file is valid"
    )


def run(args: argparse.Namespace) -> int:
    from chute.cli._exit import CONFIG
    from chute.config import ConfigValidationError, dump_apis, load_apis

    try:
        apis = load_apis(args.file)
    except ConfigValidationError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return CONFIG
    if not args.quiet:
        sys.stdout.write(dump_apis(apis))
    return 0
