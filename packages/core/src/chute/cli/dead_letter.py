"""``chute dead-letter list|requeue|purge API``: the requests given up after their last attempt."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from chute.backends.urls import redact
from chute.cli._backends import existing_url, url_help
from chute.cli._confirm import add_yes, confirm
from chute.cli._exit import USAGE

if TYPE_CHECKING:
    from chute.backends.base import Queue
    from chute.cli import CommandRegistrar

ORDER = 55


def register(commands: CommandRegistrar) -> None:
    actions = commands.group(
        "dead-letter",
        help="list, requeue or purge the requests an API gave up on",
        description=(
            "Requests that failed their last attempt for a retryable reason are moved to the "
            "API's dead letter. List them, send them back to the queue (each gets a fresh "
            "retry budget), or delete them for good. See docs/retries.md."
        ),
    )

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("api", metavar="API", help="the API's name")
        p.add_argument("--queue", help=url_help("queue"))
        p.add_argument("--store", help=url_help("store"))

    listing = actions.add(
        "list",
        run=run_list,
        help="show the dead letters, oldest first",
        description="Show the API's dead letters, oldest first: id, when, attempts and why.",
    )
    common(listing)
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    requeue = actions.add(
        "requeue",
        run=run_requeue,
        help="send dead letters back to the queue (all, or the ids given)",
        description=(
            "Put each dead-lettered request back to in_queue and its message back in the "
            "queue. Requests whose record is gone or no longer a dead letter are left where "
            "they are and reported."
        ),
    )
    common(requeue)
    requeue.add_argument("ids", nargs="*", metavar="ID", help="request ids (default: all of them)")

    purge = actions.add(
        "purge",
        run=run_purge,
        help="delete every dead letter of the API (the failed records stay until retention)",
        description=(
            "Delete every dead letter of the API for good. Asks for confirmation on a terminal; "
            "elsewhere (scripts, CI) it needs --yes."
        ),
    )
    common(purge)
    add_yes(purge)


def needs_dead_letter(queue: Queue, url: str) -> None:
    """Raise :class:`~chute.errors.Unsupported`, saying what happens instead, for a queue
    that declares no dead letter."""
    if not queue.supports_dead_letter:
        from chute.errors import Unsupported

        raise Unsupported(
            f"the queue {redact(url)} has no dead letter ({type(queue).__name__} declares "
            "supports_dead_letter = False): a request that runs out of attempts is failed and "
            "its message dropped (docs/retries.md)"
        )


def run_list(args: argparse.Namespace) -> int:
    import anyio
    import msgspec

    from chute.protocol import rfc3339
    from chute.registry import open_queue

    url = existing_url("queue", args.queue)

    async def main() -> None:
        async with open_queue(url) as queue:
            needs_dead_letter(queue, url)
            dead = await queue.list_dead(args.api, limit=args.limit)
        if args.json:
            for item in dead:
                sys.stdout.write(msgspec.json.encode(item).decode() + "\n")
            return
        if not dead:
            print(f"no dead letters for {args.api}")
            return
        print(f"{'ID':<40} {'DEAD AT':<25} {'ATTEMPTS':>8}  REASON")
        for item in dead:
            when = rfc3339(item.dead_at)
            print(f"{item.request_id:<40} {when:<25} {item.attempts:>8}  {item.reason}")

    anyio.run(main)
    return 0


def run_requeue(args: argparse.Namespace) -> int:
    import anyio

    from chute.registry import open_queue, open_store
    from chute.requeue import Requeue

    queue_url = existing_url("queue", args.queue)
    store_url = existing_url("store", args.store)

    async def main() -> int:
        async with open_queue(queue_url) as queue, open_store(store_url) as store:
            needs_dead_letter(queue, queue_url)
            mover = Requeue(args.api, queue, store)
            if args.ids:
                await mover.these(list(args.ids))
            else:
                await mover.every()
            for note in mover.notes:
                print(note)
            moved = mover.moved
            print(f"requeued {moved} request{'s' if moved != 1 else ''} of {args.api}")
            return 1 if mover.problems else 0

    code: int = anyio.run(main)
    return code


def run_purge(args: argparse.Namespace) -> int:
    import anyio

    from chute.registry import open_queue

    url = existing_url("queue", args.queue)
    if not confirm(args, f"delete every dead letter of {args.api} in {redact(url)} for good?"):
        return USAGE

    async def main() -> int:
        async with open_queue(url) as queue:
            needs_dead_letter(queue, url)
            return await queue.purge_dead(args.api)

    count = anyio.run(main)
    print(f"purged {count} dead letter{'s' if count != 1 else ''} of {args.api}")
    return 0
