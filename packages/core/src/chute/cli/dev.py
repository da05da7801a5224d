"""``chute dev API_FILE``: run an API file's gateway, dequeuers and containers locally."""

from __future__ import annotations

import argparse
import os
from typing import Any

ORDER = 30


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dev",
        help="run an API file locally: gateway, dequeuers and containers as processes",
        description=(
            "Run the gateway, one dequeuer per API and each container's command + args as "
            "local processes, with their output prefixed by name. Stops everything on Ctrl-C "
            "or SIGTERM (exit 0); if any process exits by itself, stops the rest and exits 1. "
            "See docs/dev.md."
        ),
    )
    parser.add_argument("api_file", metavar="API_FILE", help="the API file (Cortex YAML)")
    parser.add_argument("--port", type=int, default=8888, help="gateway port (default 8888)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="gateway address to bind (default 127.0.0.1)"
    )
    parser.add_argument(
        "--state-dir",
        default=".chute",
        help="directory for the SQLite database, the /mnt stand-in and dev.json (default .chute)",
    )
    parser.add_argument(
        "--queue",
        metavar="URL",
        help="queue URL (default: $CHUTE_QUEUE_URL, else SQLite in the state directory)",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="store URL (default: $CHUTE_STORE_URL, else SQLite in the state directory)",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long each process may take to stop before it is killed (default 30)",
    )
    parser.add_argument(
        "--lease",
        type=float,
        metavar="SECONDS",
        help="the dequeuers' message lease (default: the dequeuer's own)",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the gateway logs one JSON line per request (default: on; $CHUTE_ACCESS_LOG=0 "
        "turns it off)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import anyio

    from chute import dev, preflight
    from chute.gateway import access_log
    from chute.registry import URL_ENV

    setup = dev.plan(
        args.api_file,
        port=args.port,
        host=args.host,
        state_dir=args.state_dir,
        queue_url=args.queue or os.environ.get(URL_ENV["queue"]),
        store_url=args.store or os.environ.get(URL_ENV["store"]),
        grace_period=args.grace_period,
        lease=args.lease,
        access_log=access_log.enabled(args.access_log, default=True),
    )
    # Fail fast, naming the backend and the error, before any process starts.
    preflight.check(setup.local_apis, queue_url=setup.queue_url, store_url=setup.store_url)
    return anyio.run(dev.serve, setup)
