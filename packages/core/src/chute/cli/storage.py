"""``chute storage init``: prepare a store for chute (retention rules and the like)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from chute.cli._backends import url_help

if TYPE_CHECKING:
    from chute.cli import CommandRegistrar

ORDER = 60


def register(commands: CommandRegistrar) -> None:
    actions = commands.group(
        "storage",
        help="manage the result store",
        description="Manage the result store.",
    )
    init = actions.add(
        "init",
        run=run,
        help="prepare the store: install its retention rule (idempotent)",
        description=(
            "Prepare the store for chute, e.g. install a bucket lifecycle rule that deletes "
            "requests after the retention. Safe to run again."
        ),
    )
    init.add_argument("--store", help=url_help("store"))
    init.add_argument(
        "--retention",
        default="7d",
        help="how long requests and results are kept (default 7d; e.g. 36h, 14d)",
    )


def parse_retention(text: str) -> float:
    """Seconds from ``7d``, ``36h``, ``90m`` or a duration ``chute.config`` understands."""
    from chute.config import parse_duration

    if text.endswith("d") and text[:-1].isdigit():
        return int(text[:-1]) * 86400.0
    return parse_duration(text)


def run(args: argparse.Namespace) -> int:
    import anyio

    from chute.registry import open_store, resolve_url

    retention = parse_retention(args.retention)
    url = resolve_url("store", args.store)

    async def main() -> list[str]:
        async with open_store(url) as store:
            return await store.initialize(retention=retention)

    lines = anyio.run(main)
    for line in lines or [f"{url}: nothing to prepare"]:
        print(line)
    return 0
