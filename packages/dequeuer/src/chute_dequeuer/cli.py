"""``chute-dequeuer``: the sidecar's command line, shaped like Cortex's dequeuer flags."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from chute._version import __version__
from chute.cli import parse_size
from chute.errors import ChuteError
from chute.logs import configure_logging
from chute_dequeuer import settings as defaults

log = logging.getLogger("chute_dequeuer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chute-dequeuer",
        description="Pull an Async API's requests from the queue, POST each to the user's "
        "container on 127.0.0.1 and store its answer. Probes, port and concurrency come "
        "from the API file.",
    )
    parser.add_argument("--api-file", required=True, metavar="FILE", help="the API YAML file")
    parser.add_argument("--api", required=True, metavar="NAME", help="the API's name in it")
    parser.add_argument(
        "--user-port", type=int, metavar="PORT", help="the container's port (default: pod.port)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="requests handled at once (default: pod.max_concurrency)",
    )
    parser.add_argument(
        "--admin-port",
        type=int,
        default=defaults.DEFAULT_ADMIN_PORT,
        metavar="PORT",
        help="port of /healthz and /metrics; 0 picks a free one and logs it (default: %(default)s)",
    )
    parser.add_argument(
        "--admin-host",
        default="0.0.0.0",
        metavar="HOST",
        help="address the admin server binds (default: %(default)s, reachable by kubelet)",
    )
    parser.add_argument(
        "--queue",
        metavar="URL",
        help="queue backend URL (default: $CHUTE_QUEUE_URL, else the embedded SQLite backend)",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="store backend URL (default: $CHUTE_STORE_URL, else the embedded SQLite backend)",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=defaults.DEFAULT_GRACE_PERIOD,
        metavar="SECONDS",
        help="on SIGTERM, how long requests in flight may finish before they are given "
        "back to the queue (default: %(default)s)",
    )
    parser.add_argument(
        "--lease",
        type=float,
        default=defaults.DEFAULT_LEASE,
        metavar="SECONDS",
        help="lease on a received message, extended every third of it while the container "
        "works; a crashed dequeuer's requests return after it (default: %(default)s)",
    )
    parser.add_argument(
        "--max-result-size",
        type=parse_size,
        default=defaults.DEFAULT_MAX_RESULT_SIZE,
        metavar="SIZE",
        help="largest response body stored as a result, e.g. 100MiB (the default), 10MB or a "
        "number of bytes; larger fails the request",
    )
    parser.add_argument(
        "--webhook-retry-for",
        type=float,
        default=defaults.DEFAULT_WEBHOOK_RETRY_FOR,
        metavar="SECONDS",
        help="how long a failed webhook delivery is retried, with backoff (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR (default: $CHUTE_LOG_LEVEL, else INFO)",
    )
    parser.add_argument("--version", action="version", version=f"chute-dequeuer {__version__}")
    return parser


def _loop_options() -> dict[str, object]:
    """uvloop when it is installed: it halves the event loop's own share of the dequeuer's
    CPU per request (docs/performance.md)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chute-dequeuer`` console script."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        resolved = defaults.resolve(
            api_file=args.api_file,
            api_name=args.api,
            queue_url=args.queue,
            store_url=args.store,
            user_port=args.user_port,
            workers=args.workers,
            admin_port=args.admin_port,
            grace_period=args.grace_period,
            lease=args.lease,
            max_result_size=args.max_result_size,
            webhook_retry_for=args.webhook_retry_for,
        )
        import anyio

        from chute_dequeuer.service import serve

        code: int = anyio.run(
            lambda: serve(resolved, admin_host=args.admin_host), backend_options=_loop_options()
        )
    except ChuteError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:  # e.g. the admin port is taken
        log.error("%s", exc)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
