"""``chute gateway API_FILE``: serve the HTTP gateway for the APIs of a file."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from chute.cli._argtypes import parse_size

if TYPE_CHECKING:
    from chute.cli import CommandRegistrar

ORDER = 20


def register(commands: CommandRegistrar) -> None:
    from chute.registry import DEFAULT_URL

    parser = commands.add(
        "gateway",
        run=run,
        help="serve the HTTP gateway (submit and read requests) for the APIs of a file",
        description=(
            "Serve POST <endpoint> (queue a request) and GET <endpoint>/<id> (read it) for "
            "every API in API_FILE, plus /healthz, /metrics and /openapi.json. "
            "Stops gracefully on SIGTERM or SIGINT."
        ),
    )
    parser.add_argument("api_file", metavar="API_FILE", help="the APIs' YAML file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=8888, help="port to listen on; 0 picks a free one (%(default)s)"
    )
    parser.add_argument(
        "--queue",
        metavar="URL",
        default=None,
        help=f"queue backend URL (default: $CHUTE_QUEUE_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help=f"store backend URL (default: $CHUTE_STORE_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--max-body-size",
        type=parse_size,
        default=parse_size("100MiB"),
        metavar="SIZE",
        help="largest request body accepted, e.g. 100MiB (the default), 10MB; larger → 413",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="after SIGTERM, how long in-flight requests may take to finish (%(default)s)",
    )
    # The old spelling, kept working: the same flag is --grace-period on dev and the dequeuer.
    parser.add_argument(
        "--graceful-timeout", type=float, dest="grace_period", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--max-header-size",
        type=parse_size,
        default=parse_size("8KiB"),
        metavar="SIZE",
        help="largest header block a submit may carry, e.g. 8KiB (the default, as the "
        "container's server commonly allows); larger → 431",
    )
    parser.add_argument(
        "--body-idle-timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="longest pause while a request body arrives; longer → 408, connection closed "
        "(%(default)s)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="longest time a whole request body may take to arrive; longer → 408, connection "
        "closed (%(default)s)",
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long a submit whose write had an unknown outcome (a backend died mid-write) "
        "keeps asking the store what happened before it answers (%(default)s; docs/gateway.md)",
    )
    parser.add_argument(
        "--server",
        choices=("uvicorn", "hypercorn", "granian"),  # chute.gateway._server.SERVERS
        default="uvicorn",
        help="the ASGI server: %(default)s (the default, measured fastest), hypercorn (HTTP/2)"
        " or granian (must be installed); docs/performance.md compares them",
    )
    parser.add_argument(
        "--api-keys-file",
        metavar="PATH",
        default=None,
        help="global API keys, one per line (also: $CHUTE_API_KEYS, comma-separated); "
        "with no keys anywhere the gateway is open (docs/auth.md)",
    )
    parser.add_argument(
        "--protect-admin",
        action="store_true",
        help="require a global API key on /metrics and /queues/* too",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log one JSON line per request: method, path, status, bytes, duration, request id "
        "(default: $CHUTE_ACCESS_LOG, else off; chute dev turns it on)",
    )
    parser.add_argument(
        "--cors-origins",
        default="*",
        metavar="ORIGINS",
        help="browser origins that may call the gateway: '*' (any, as Cortex; the default), "
        "a comma-separated list (https://app.example,http://localhost:3000), or 'none'",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR (default: $CHUTE_LOG_LEVEL, else INFO)",
    )


def run(args: argparse.Namespace) -> int:
    import anyio

    from chute.config import load_apis
    from chute.gateway import Gateway, serve
    from chute.gateway import _access_log as access_log
    from chute.gateway._auth import global_keys
    from chute.gateway._cors import CORSPolicy
    from chute.logs import configure_logging
    from chute.registry import resolve_url

    configure_logging(args.log_level)
    apis = load_apis(args.api_file)
    app = Gateway(
        apis,
        queue_url=resolve_url("queue", args.queue),
        store_url=resolve_url("store", args.store),
        max_body_size=args.max_body_size,
        api_keys=global_keys(args.api_keys_file),
        protect_admin=args.protect_admin,
        access_log=access_log.enabled(args.access_log, default=False),
        cors=CORSPolicy.parse(args.cors_origins),
        settle_timeout=args.settle_timeout,
        max_header_size=args.max_header_size,
        body_idle_timeout=args.body_idle_timeout,
        body_timeout=args.body_timeout,
    )

    async def main() -> None:
        await serve(
            app,
            host=args.host,
            port=args.port,
            graceful_timeout=args.grace_period,
            server=args.server,
        )

    # uvloop when installed: it halves the event loop's share of the gateway's CPU
    # (docs/performance.md).
    try:
        import uvloop  # noqa: F401
    except ImportError:
        anyio.run(main)
    else:
        anyio.run(main, backend_options={"use_uvloop": True})
    return 0
