"""Riding out backend outages: retry with capped exponential backoff, log once per outage.

A dequeuer never crashes because Redis restarted or SQS throttled it: every queue and store
call goes through :meth:`Outage.call`, which retries ``BackendUnavailable`` until it succeeds
(or the caller is cancelled). One :class:`Outage` is shared by all workers so that an outage
logs one warning when it starts and one line when it ends, not one per worker per retry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from chute.backoff import Backoff
from chute.errors import BackendUnavailable

T = TypeVar("T")

log = logging.getLogger("chute_dequeuer.backend")


class Outage:
    """Shared backoff state for calls to the queue and the store."""

    def __init__(self, *, first_delay: float = 0.1, max_delay: float = 5.0) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.down = False

    async def call(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Await ``op()`` until it does not raise BackendUnavailable; other errors propagate."""
        backoff: Backoff | None = None  # made on the first failure: the hot path never needs it
        attempt = 0
        while True:
            try:
                result = await op()
            except BackendUnavailable as exc:
                if not self.down:
                    self.down = True
                    log.warning(
                        "backend unavailable, retrying with backoff up to %.0f s",
                        self.max_delay,
                        extra={"operation": what, "error": str(exc)},
                    )
                # Jitter keeps many workers (and replicas) from retrying in lockstep.
                attempt += 1
                if backoff is None:
                    backoff = Backoff(first=self.first_delay, cap=self.max_delay, jitter="half")
                await anyio.sleep(backoff.delay(attempt))
                continue
            if self.down:
                self.down = False
                log.info("backend available again", extra={"operation": what})
            return result
