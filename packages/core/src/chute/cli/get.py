"""``chute get API ID``: print a request as the gateway reports it (JSON)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

ORDER = 41


def register(subparsers: Any) -> None:
    from chute.cli.submit import add_gateway_option

    parser = subparsers.add_parser(
        "get",
        help="print a request's status (and result) from the gateway",
        description=(
            "GET <endpoint>/<id> and print the JSON. Exit status: 0 unless the request failed "
            "(1) or, with --wait, the timeout passed first (2)."
        ),
    )
    parser.add_argument("api", metavar="API", help="API name, or endpoint path")
    parser.add_argument("request_id", metavar="ID", help="the id `chute submit` printed")
    parser.add_argument("--wait", action="store_true", help="wait until the request finishes")
    add_gateway_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from chute.cli.submit import print_result
    from chute.client import Client
    from chute.errors import WaitTimeout
    from chute.protocol import Status

    with Client(args.gateway) as client:
        if args.wait:
            try:
                result = client.wait(args.api, args.request_id, timeout=args.timeout)
            except WaitTimeout as exc:
                print(f"chute get: {exc}", file=sys.stderr)
                return 2
        else:
            result = client.get(args.api, args.request_id)
    print_result(result)
    return 1 if result.status in (Status.FAILED, Status.CANCELLED, Status.EXPIRED) else 0
