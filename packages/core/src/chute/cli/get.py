"""``chute get API ID``: print a request as the gateway reports it (JSON)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chute.cli import CommandRegistrar

ORDER = 41


def register(commands: CommandRegistrar) -> None:
    from chute.cli.submit import add_gateway_option

    parser = commands.add(
        "get",
        run=run,
        help="print a request's status (and result) from the gateway",
        description=(
            "GET <endpoint>/<id> and print the gateway's JSON as it sent it. With --wait, "
            "wait until the request finishes, showing each status change on a terminal. Exit "
            "status: 0, or 1 when the request failed, was cancelled or expired, 6 when --wait's "
            "timeout passed first (docs/cli.md lists them all)."
        ),
    )
    parser.add_argument("api", metavar="API", help="API name, or endpoint path")
    parser.add_argument("request_id", metavar="ID", help="the id `chute submit` printed")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait until the request finishes (status changes on standard error, on a terminal)",
    )
    add_gateway_option(parser)


def run(args: argparse.Namespace) -> int:
    from chute.cli import _exit as exit_codes
    from chute.cli import _running as running
    from chute.cli.submit import print_body, status_printer
    from chute.client import Client
    from chute.errors import WaitTimeout
    from chute.protocol import Status

    with Client(running.gateway_url(args.gateway)) as client:
        if args.wait:
            try:
                answer = client._wait_answer(
                    args.api, args.request_id, timeout=args.timeout, on_status=status_printer()
                )
            except WaitTimeout as exc:
                print(f"chute get: {exc}", file=sys.stderr)
                return exit_codes.TIMEOUT
        else:
            answer = client._get_answer(args.api, args.request_id)
    print_body(answer.body)
    failed = (Status.FAILED, Status.CANCELLED, Status.EXPIRED)
    return exit_codes.FAILED if answer.result.status in failed else exit_codes.OK
