"""Capped exponential backoff with jitter: the one schedule chute's retry loops share.

Attempt *n* (1-based) waits ``first * factor**(n-1)``, capped at ``cap``, then jittered:

* ``"full"``: a uniform draw from ``[0, d]`` (AWS's "full jitter"; the user's ``retries:``);
* ``"half"``: a uniform draw from ``[d/2, d]`` (never much shorter than the schedule says);
* ``"none"``: exactly ``d``.

Jitter keeps many workers, replicas and gateways that failed together from retrying in
lockstep. Users of it: the dequeuer's retries of a failed request (``Retries.backoff``) and its
backend-outage loop, webhook deliveries, the gateway settling an unknown submit, the GCS and
Pub/Sub HTTP clients, and the Python client's poll loop against a gateway that does not
long-poll::

    backoff = Backoff(first=0.1, cap=5.0, jitter="half")
    for attempt in itertools.count(1):
        try:
            return await call()
        except BackendUnavailable:
            await anyio.sleep(backoff.delay(attempt))
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = ["Backoff", "Jitter"]

Jitter = Literal["full", "half", "none"]


@dataclass(frozen=True)
class Backoff:
    """A backoff schedule (immutable; share one between loops)."""

    #: The delay before the second attempt (after the first failed), in seconds.
    first: float
    #: The longest delay, in seconds.
    cap: float
    #: How much each delay grows over the one before.
    factor: float = 2.0
    jitter: Jitter = "full"

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay after attempt ``attempt`` (1-based) failed."""
        try:
            delay = self.first * self.factor ** max(0, attempt - 1)
        except OverflowError:
            return self.cap
        return min(delay, self.cap)

    def delay(self, attempt: int, *, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after attempt ``attempt`` (1-based) failed. ``rand`` draws from
        ``[0, 1)`` (tests pass a fixed one)."""
        ceiling = self.ceiling(attempt)
        if self.jitter == "full":
            return ceiling * rand()
        if self.jitter == "half":
            return ceiling * (0.5 + 0.5 * rand())
        return ceiling

    def delays(self, *, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """The delays after attempt 1, 2, 3, … (endless)."""
        attempt = 0
        while True:
            attempt += 1
            yield self.delay(attempt, rand=rand)
