"""Sending dead letters back to the queue, record first: what ``chute dead-letter requeue`` and
the dashboard's "requeue" button both do (see docs/retries.md)."""

from __future__ import annotations

from collections.abc import Sequence

from chute.backends.base import Queue, Store
from chute.errors import NotFound, TransitionRejected

#: Requeuing every dead letter lists them this many at a time, until none is left.
REQUEUE_BATCH = 1000
#: Requeuing named dead letters on a queue that cannot count them looks through this many.
LIST_ALL = 100_000


class Requeue:
    """Moves an API's dead letters back, record first (a dequeuer may take the message at
    once), counting what moved; ``notes`` says, one line each, what did not and why."""

    def __init__(self, api: str, queue: Queue, store: Store) -> None:
        self.api, self.queue, self.store = api, queue, store
        self.moved = 0
        self.notes: list[str] = []

    @property
    def problems(self) -> int:
        return len(self.notes)

    async def these(self, request_ids: Sequence[str]) -> None:
        """Requeue the dead letters named; an id not in the dead letter is noted, not moved."""
        # Every dead letter, to tell the named ones apart (without a count: a bound).
        count = (await self.queue.depth(self.api)).dead if self.queue.supports_depth else LIST_ALL
        listed = await self.queue.list_dead(self.api, limit=max(count, len(request_ids), 1))
        await self.move(list(request_ids), {d.request_id for d in listed})

    async def every(self) -> None:
        """Requeue every dead letter, a batch at a time, until none is left that could move."""
        left: set[str] = set()
        while True:
            batch = await self.queue.list_dead(self.api, limit=REQUEUE_BATCH + len(left))
            wanted = [d.request_id for d in batch if d.request_id not in left]
            if not wanted:
                return
            ready = await self.move(wanted, set(wanted))
            left |= set(wanted) - set(ready)

    async def move(self, wanted: list[str], dead: set[str]) -> list[str]:
        """Requeue ``wanted`` (``dead``: the ones known to be dead letters); return the ids
        whose record went back to in_queue."""
        ready: list[str] = []
        for request_id in wanted:
            if request_id not in dead:
                # Never move a record without its message: it would wait in_queue forever.
                self.notes.append(f"{request_id}: not in the dead letter of {self.api}; left as is")
                continue
            try:
                await self.store.requeue(self.api, request_id)
            except NotFound:
                self.notes.append(f"{request_id}: record gone (past its retention?); left as is")
                continue
            except TransitionRejected as exc:
                self.notes.append(f"{request_id}: {exc}; left in the dead letter")
                continue
            ready.append(request_id)
        moved = await self.queue.requeue_dead(self.api, ready) if ready else 0
        self.moved += moved
        if moved < len(ready):
            self.notes.append(
                f"{len(ready) - moved} were not in the dead letter (requeued already?)"
            )
        return ready
