"""``chute status [API] [--watch]``: each API's queue depth and recent rates, as the dashboard
shows them, in a terminal (read from the gateway's ``/ui/api/overview``).

With chute-k8s installed, ``chute status --cluster FILE`` shows the cluster's deployments
instead (the plugin adds its flags to this command)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chute.cli import CommandRegistrar

ORDER = 45


def register(commands: CommandRegistrar) -> None:
    from chute.cli import positive_seconds
    from chute.cli.submit import add_gateway_option

    parser = commands.add(
        "status",
        run=run,
        help="queue depth and recent throughput/latency of each API (the dashboard's counts)",
        description=(
            "A table of every API of the gateway (or only API): queued, in flight, delayed and "
            "dead-lettered messages, requests finished per minute and failed over the last 5 "
            "minutes, and latency p50/p95 — the counts of the dashboard at /ui/. With --watch, "
            "print it again whenever it changes, until Ctrl-C (exit status 0). Exit status: 0; "
            "4 when the gateway cannot be reached; 5 when it refuses (401 on a gateway with "
            "--protect-admin: set $CHUTE_API_KEY to a global key) or API is unknown. With "
            "chute-k8s, --cluster FILE shows the Kubernetes deployments instead."
        ),
    )
    parser.add_argument("api", metavar="API", nargs="?", help="only this API (its name)")
    parser.add_argument(
        "-w", "--watch", action="store_true", help="print the table again whenever it changes"
    )
    parser.add_argument(
        "--interval",
        type=positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="with --watch: how often to look (default 2)",
    )
    add_gateway_option(parser, timeout=False)
    parser.add_argument(
        "--cluster",
        metavar="CLUSTER_FILE",
        default=None,
        help="show the deployments of a Kubernetes cluster file instead (needs chute[k8s])",
    )
    parser.set_defaults(cluster_run=None)


def run(args: argparse.Namespace) -> int:
    from chute.cli import _exit as exit_codes
    from chute.cli import _running as running
    from chute.cli import watch
    from chute.client import Client
    from chute.errors import APIError, GatewayUnreachable

    if args.cluster is not None:
        if args.cluster_run is None:
            from chute.install import install_line

            print(
                "chute status: --cluster comes with chute[k8s]; install it with: "
                + install_line("k8s"),
                file=sys.stderr,
            )
            return exit_codes.USAGE
        code: int = args.cluster_run(args)
        return code

    with Client(running.gateway_url(args.gateway)) as client:

        def table() -> str:
            overview = client.overview()
            apis = overview["apis"]
            if args.api is not None:
                apis = [a for a in apis if a["name"] == args.api]
                if not apis:
                    raise APIError(
                        404, "not_found", f"the gateway serves no API named {args.api!r}"
                    )
            return format_table(apis)

        if not args.watch:
            sys.stdout.write(table())
            return exit_codes.OK

        def shown() -> str:
            try:
                return table()
            except GatewayUnreachable as exc:
                return f"chute status: {exc}\n"

        watch(shown, interval=args.interval)
        return exit_codes.OK  # Ctrl-C is how a watch ends


COLUMNS = ("API", "QUEUED", "IN FLIGHT", "DELAYED", "DEAD", "DONE/MIN", "FAILED", "P50", "P95")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def format_table(apis: list[dict[str, Any]]) -> str:
    """The status table of the overview's APIs: one line each, columns aligned."""
    rows = [COLUMNS]
    for api in apis:
        depth = api.get("depth")
        counts = (
            [str(depth[k]) for k in ("queued", "in_flight", "delayed", "dead")]
            if depth
            else ["?"] * 4
        )
        rates = api.get("rates")
        if rates:
            rate = f"{'>=' if rates['at_least'] else ''}{rates['per_minute']:g}"
            figures = [rate, str(rates["failed"])]
            figures += [_seconds(rates["latency_p50"]), _seconds(rates["latency_p95"])]
        else:
            figures = ["n/a"] * 4
        rows.append((api["name"], *counts, *figures))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    notes = [f"{a['name']}: {a['depth_error']}" for a in apis if a.get("depth_error")] + [
        f"{a['name']}: {a['rates_error']}" for a in apis if a.get("rates_error")
    ]
    if any(not a.get("listing") for a in apis):
        notes.append("n/a: the store cannot list requests (docs/dashboard.md)")
    return "\n".join(lines + notes) + "\n"
