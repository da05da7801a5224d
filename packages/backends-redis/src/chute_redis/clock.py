"""The offset between this process's clock and the Redis server's.

The receive script starts the records it delivers (joint_receive.lua) at the time it runs,
which is not when the caller sent it: a receive after a drained queue is sent together with
its ``BLPOP`` on the wake list (``Script.after_wake``) and runs when a message arrives. So the
script reads Redis's clock (``TIME``) and turns it into this process's, the clock of every
other timestamp the dequeuer writes, with the offset measured here: ``TIME`` between two
readings of the local clock, the smallest of a few round trips, again every
:data:`MEASURE_EVERY` seconds. An offset no larger than the measurement's own uncertainty
(the same host, or clocks in step) counts as none, so the two clocks read the same there.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import anyio
import redis.asyncio as aioredis

from chute.protocol import now

#: Seconds an offset measurement is used before it is measured again (clocks drift, NTP steps).
MEASURE_EVERY = 60.0
#: Round trips per measurement; the shortest one gives the offset.
SAMPLES = 3


class ServerClock:
    """This process's clock (``clock``, :func:`chute.protocol.now` by default) against the
    Redis server's: :attr:`offset_us` is local time minus Redis time, in microseconds, as
    last measured; :meth:`measure` when :attr:`stale`."""

    def __init__(self, clock: Callable[[], float] = now) -> None:
        self.clock = clock
        self.offset_us = 0
        self._measured_at = -math.inf

    @property
    def stale(self) -> bool:
        """Never measured, or longer ago than :data:`MEASURE_EVERY` (monotonic time)."""
        return anyio.current_time() - self._measured_at >= MEASURE_EVERY

    async def measure(self, client: aioredis.Redis) -> None:
        """Measure the offset: ``TIME`` between two readings of this clock, :data:`SAMPLES`
        times; the shortest round trip gives it, with half that round trip as its error."""
        best: tuple[float, float] | None = None  # (round trip, offset) in seconds
        for _ in range(SAMPLES):
            before = self.clock()
            seconds, micros = await client.time()
            after = self.clock()
            trip = after - before
            if best is None or trip < best[0]:
                best = (trip, (before + after) / 2 - (seconds + micros / 1e6))
        assert best is not None
        trip, offset = best
        # Within its own error (Redis reads whole microseconds: 1 us more), no offset at all.
        self.offset_us = 0 if abs(offset) <= trip / 2 + 1e-6 else round(offset * 1e6)
        self._measured_at = anyio.current_time()
