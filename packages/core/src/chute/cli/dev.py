"""``chute dev API_FILE``: run an API file's gateway, dequeuers and containers locally."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from chute._container_runtime import RUNTIMES

if TYPE_CHECKING:
    from chute.cli import CommandRegistrar

ORDER = 30


def register(commands: CommandRegistrar) -> None:
    parser = commands.add(
        "dev",
        run=run,
        help="run an API file locally: gateway, dequeuers and containers as processes",
        description=(
            "Run the gateway, one dequeuer per API and each container's command + args as "
            "local processes, with their output prefixed by name. A container without a "
            "command starts as its image would, read from the Dockerfile beside the API file "
            "(a Cortex project runs unchanged). Stops everything on Ctrl-C "
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
    parser.add_argument(
        "--dockerfile",
        action="append",
        default=[],
        metavar="CONTAINER=PATH",
        help="the Dockerfile that builds CONTAINER's image (or API/CONTAINER), when a container "
        "has no command and the folder holds several Dockerfiles; repeatable",
    )
    parser.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="API=URL",
        help="feed API's requests to a server you already run (in a debugger, an IDE) at URL "
        "(http://127.0.0.1:PORT, or just PORT) instead of starting its containers; repeatable",
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="local",
        help="how containers run: as local processes (the default), or their images built "
        "and run by a Docker or Podman engine",
    )
    parser.add_argument(
        "--cortex-address",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="let containers reach the gateway by Cortex's in-cluster URL, "
        "http://ingressgateway-apis.istio-system.svc.cluster.local/<api>, through a local HTTP "
        "proxy given to them as HTTP_PROXY (default: on)",
    )


def _pairs(option: str, values: list[str]) -> dict[str, str]:
    from chute.errors import ConfigError

    pairs: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise ConfigError(f"{option} {value!r}: expected NAME=VALUE")
        pairs[name] = rest
    return pairs


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import anyio

    from chute import _dev as dev
    from chute._dev import _preflight as preflight
    from chute.gateway import _access_log as access_log
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
        dockerfiles={k: Path(v) for k, v in _pairs("--dockerfile", args.dockerfile).items()},
        attach={k: dev.attach_port(v) for k, v in _pairs("--attach", args.attach).items()},
        runtime=args.runtime,
        cortex_address=args.cortex_address,
    )
    # Fail fast, naming the backend and the error, before any process starts.
    preflight.check(setup.local_apis, queue_url=setup.queue_url, store_url=setup.store_url)
    if args.runtime != "local":
        dev.build_images(args.runtime, setup.builds)
    return anyio.run(dev.serve, setup)
