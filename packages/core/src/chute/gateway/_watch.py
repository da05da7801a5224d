"""Long-poll: ``GET <endpoint>/<id>?wait=SECONDS`` shares one watch per request id.

However many clients wait on a request, one task polls the store for it (starting at
:data:`FIRST_INTERVAL` and backing off to :data:`MAX_INTERVAL`), and every waiter wakes on the
same :class:`anyio.Event` when the request ends. The cost to the backend is one read per watched
id per poll interval, not one per waiter. The watch ends, and its task with it, when the request
is terminal (or gone) or when its last waiter leaves. See docs/long-poll.md.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NamedTuple

import anyio
from anyio.abc import TaskGroup

from chute.protocol import RequestRecord

#: The longest ``?wait=`` accepted, in seconds.
MAX_WAIT = 60.0
#: First poll interval of a watch, and the most it backs off to (seconds): a result is seen at
#: most MAX_INTERVAL after it lands, at a cost of one read per watched id per interval.
FIRST_INTERVAL = 0.05
MAX_INTERVAL = 0.5
BACKOFF = 1.5

logger = logging.getLogger("chute.gateway")


class Observation(NamedTuple):
    """A request as one poll saw it: its record (None: unknown or expired) and, once
    completed, its stored result bytes, read once for every waiter."""

    record: RequestRecord | None
    result: bytes | None = None

    @property
    def final(self) -> bool:
        return self.record is None or self.record.status.terminal


Observe = Callable[[str, str], Awaitable[Observation]]


class _Watch:
    __slots__ = ("done", "error", "first", "latest", "scope", "waiters")

    def __init__(self) -> None:
        self.waiters = 0
        self.latest: Observation | None = None
        self.error: BaseException | None = None
        self.first = anyio.Event()  # set after the first poll (or its error)
        self.done = anyio.Event()  # set once the request is final, or the poll failed first
        self.scope = anyio.CancelScope()


class Watcher:
    """The shared watches of one gateway process.

    ``observe(api, request_id)`` reads a request (the gateway's read, with its lazy expiry);
    :meth:`serving` must be entered for the watches' tasks to have somewhere to run (the
    gateway does it in its ASGI lifespan).
    """

    def __init__(self, observe: Observe) -> None:
        self.observe = observe
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._tg: TaskGroup | None = None
        self._released = anyio.Event()

    @property
    def watched(self) -> int:
        """How many request ids are watched now."""
        return len(self._watches)

    @property
    def waiters(self) -> int:
        """How many long-polls are waiting now."""
        return sum(w.waiters for w in self._watches.values())

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Run the watches' tasks for as long as the block lasts; cancel them at its end."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._released = anyio.Event()
            try:
                yield
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    def release_all(self) -> None:
        """Answer every waiting long-poll now with what it has (the gateway is stopping)."""
        self._released.set()

    async def wait(self, api: str, request_id: str, seconds: float) -> Observation:
        """The request once it is final, or as last seen after ``seconds``."""
        if self._tg is None:
            raise RuntimeError("the watcher is not serving (the ASGI lifespan did not run)")
        key = (api, request_id)
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = _Watch()
            self._tg.start_soon(self._run, key, watch)
        watch.waiters += 1
        try:
            with anyio.move_on_after(seconds):
                async with anyio.create_task_group() as tg:

                    async def released() -> None:
                        await self._released.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(released)
                    await watch.done.wait()
                    tg.cancel_scope.cancel()
            if not watch.first.is_set():  # the wait ended before the first read came back
                await watch.first.wait()
        finally:
            watch.waiters -= 1
            if watch.waiters == 0 and not watch.done.is_set():
                watch.scope.cancel()
                if self._watches.get(key) is watch:
                    del self._watches[key]
        if watch.error is not None and watch.latest is None:
            raise watch.error
        assert watch.latest is not None
        return watch.latest

    async def _run(self, key: tuple[str, str], watch: _Watch) -> None:
        api, request_id = key
        delay = FIRST_INTERVAL
        try:
            with watch.scope:
                while True:
                    try:
                        seen = await self.observe(api, request_id)
                    except Exception as exc:
                        if watch.latest is None:  # nothing to answer with: waiters get the error
                            watch.error = exc
                            watch.first.set()
                            watch.done.set()
                            return
                        logger.warning(
                            "long-poll read failed; retrying",
                            extra={"api": api, "request_id": request_id, "error": str(exc)},
                        )
                    else:
                        watch.latest = seen
                        watch.first.set()
                        if seen.final:
                            watch.done.set()
                            return
                    await anyio.sleep(delay)
                    delay = min(delay * BACKOFF, MAX_INTERVAL)
        finally:
            if self._watches.get(key) is watch:
                del self._watches[key]
            # A waiter that is still waiting for the first answer must not hang.
            if not watch.first.is_set():
                watch.error = watch.error or RuntimeError("the watch stopped before its first read")
                watch.first.set()
                watch.done.set()
