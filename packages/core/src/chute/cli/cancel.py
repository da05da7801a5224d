"""``chute cancel API ID``: cancel a queued or running request through the gateway."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chute.cli import CommandRegistrar

ORDER = 42


def register(commands: CommandRegistrar) -> None:
    from chute.cli.submit import add_gateway_option

    parser = commands.add(
        "cancel",
        run=run,
        help="cancel a queued or running request",
        description=(
            "DELETE <endpoint>/<id> and print the cancelled request as JSON. A queued request "
            "never runs; a running one is cut off by its dequeuer. Exit status: 0 when "
            "cancelled, 1 when the request had already finished (or any error)."
        ),
    )
    parser.add_argument("api", metavar="API", help="API name, or endpoint path")
    parser.add_argument("request_id", metavar="ID", help="the id `chute submit` printed")
    add_gateway_option(parser, timeout=False)


def run(args: argparse.Namespace) -> int:
    from chute.cli import _exit as exit_codes
    from chute.cli import _running as running
    from chute.cli.submit import print_body
    from chute.client import Client
    from chute.errors import APIError

    with Client(running.gateway_url(args.gateway)) as client:
        try:
            answer = client._cancel_answer(args.api, args.request_id)
        except APIError as exc:
            if exc.status_code != 409:
                raise
            print(f"chute cancel: {exc.message}", file=sys.stderr)
            return exit_codes.FAILED
    print_body(answer.body)
    return exit_codes.OK
