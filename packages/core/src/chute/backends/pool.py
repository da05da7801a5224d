"""Clients shared per event loop: one connection pool per process and endpoint, ref-counted.

A backend's queue and store opened on the same endpoint in one process should share one client
(one connection pool, one credentials cache), so no call pays for a connection or a token
fetch. asyncio clients belong to the event loop that opened them, so sharing is per running
loop (a production process has one loop; a test suite has several), and the loop is held
weakly: a finished, collected loop takes its clients with it.

Two pieces:

* :class:`LoopShared` — the process-wide registry a backend module keeps, one per kind of
  resource: ``acquire(key, factory)`` hands out the loop's resource for ``key`` (created on
  first use), ``release(key, resource, closer)`` gives one use back and closes the resource
  when its last user leaves.
* :class:`LoopHandle` — what one queue or store holds: it acquires at most once per loop, and
  its ``aclose()`` releases everything it holds.

asyncio only (the event loop is the sharing unit), which is what every SDK chute wraps needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from chute.errors import BackendError

__all__ = ["LoopHandle", "LoopShared"]

T = TypeVar("T")


class _Entry(Generic[T]):
    __slots__ = ("resource", "users")

    def __init__(self, resource: T) -> None:
        self.resource = resource
        self.users = 0


class LoopShared(Generic[T]):
    """Resources shared by every user in one event loop, per key, with a count of users.

    Keep one at module level per kind of resource (``_clients: LoopShared[Redis] =
    LoopShared()``); the key says which resources are interchangeable (host, port,
    credentials, …: everything but the options that only the user reads).

    ``usable``, if given, is asked before a registered resource is handed out again; a resource
    it refuses (say, a session something closed) is replaced by a fresh one.
    """

    def __init__(self, *, usable: Callable[[T], bool] | None = None) -> None:
        self._usable = usable
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Hashable, _Entry[T]]
        ] = weakref.WeakKeyDictionary()
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def _lookup(self, loop: asyncio.AbstractEventLoop, key: Hashable) -> _Entry[T] | None:
        entry = self._loops.get(loop, {}).get(key)
        if entry is not None and self._usable is not None and not self._usable(entry.resource):
            return None  # replaced below; its users' releases find it gone and close nothing
        return entry

    def _register(self, loop: asyncio.AbstractEventLoop, key: Hashable, resource: T) -> T:
        entry = self._loops.setdefault(loop, {})[key] = _Entry(resource)
        entry.users += 1
        return resource

    def acquire_now(self, key: Hashable, factory: Callable[[], T]) -> T:
        """The running loop's resource for ``key``, made by ``factory()`` if there is none;
        counts one more user. For factories that need not await (no lock is needed: nothing
        else runs in this loop until it returns)."""
        loop = asyncio.get_running_loop()
        entry = self._lookup(loop, key)
        if entry is None:
            return self._register(loop, key, factory())
        entry.users += 1
        return entry.resource

    async def acquire(self, key: Hashable, factory: Callable[[], Awaitable[T]]) -> T:
        """:meth:`acquire_now` for a factory that awaits (``await client.__aenter__()``).
        Concurrent first users in one loop wait for one creation instead of making two."""
        loop = asyncio.get_running_loop()
        entry = self._lookup(loop, key)
        if entry is not None:
            entry.users += 1
            return entry.resource
        lock = self._locks.setdefault(loop, asyncio.Lock())
        async with lock:
            entry = self._lookup(loop, key)  # made while we waited for the lock?
            if entry is None:
                return self._register(loop, key, await factory())
            entry.users += 1
            return entry.resource

    async def release(
        self,
        key: Hashable,
        resource: T,
        closer: Callable[[T], Awaitable[None]],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> bool:
        """Give back one use of ``resource`` (acquired in ``loop``, by default the running one).

        The last user's release forgets the resource and, if ``loop`` is the running loop,
        awaits ``closer(resource)`` (errors suppressed: closing is best effort). A resource of
        another loop is only forgotten: it cannot be closed from here, and a finished loop
        took its connections with it. A resource no longer registered (replaced, or already
        released by its last user) is left alone. Returns whether the resource was closed.
        """
        running = asyncio.get_running_loop()
        owner = running if loop is None else loop
        per_loop = self._loops.get(owner)
        entry = None if per_loop is None else per_loop.get(key)
        if per_loop is None or entry is None or entry.resource is not resource:
            return False
        entry.users -= 1
        if entry.users > 0:
            return False
        del per_loop[key]
        if owner is not running:
            return False
        with contextlib.suppress(Exception):
            await closer(resource)
        return True

    def users(self, key: Hashable, *, loop: asyncio.AbstractEventLoop | None = None) -> int:
        """How many users hold the resource for ``key`` in ``loop`` (default: the running one)."""
        owner = asyncio.get_running_loop() if loop is None else loop
        entry = self._loops.get(owner, {}).get(key)
        return 0 if entry is None else entry.users


class LoopHandle(Generic[T]):
    """One queue's or store's hold on a :class:`LoopShared` resource.

    ``get``/``get_now`` acquire on first use in each loop and return the same resource after
    that; :meth:`aclose` releases every loop's hold (closing what nobody else uses) and makes
    further gets raise BackendError(``closed_message``).
    """

    def __init__(
        self,
        registry: LoopShared[T],
        key: Hashable,
        closer: Callable[[T], Awaitable[None]],
        *,
        closed_message: str = "this backend is closed",
    ) -> None:
        self.registry = registry
        self.key = key
        self._closer = closer
        self._closed_message = closed_message
        self._held: dict[asyncio.AbstractEventLoop, T] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    def _check(self) -> None:
        if self._closed:
            raise BackendError(self._closed_message)

    def get_now(self, factory: Callable[[], T]) -> T:
        """The running loop's shared resource (see :meth:`LoopShared.acquire_now`)."""
        self._check()
        loop = asyncio.get_running_loop()
        held = self._held.get(loop)
        if held is None:
            held = self._held[loop] = self.registry.acquire_now(self.key, factory)
        return held

    async def get(self, factory: Callable[[], Awaitable[T]]) -> T:
        """The running loop's shared resource (see :meth:`LoopShared.acquire`)."""
        self._check()
        loop = asyncio.get_running_loop()
        held = self._held.get(loop)
        if held is not None:
            return held
        resource = await self.registry.acquire(self.key, factory)
        if loop in self._held or self._closed:
            # Another task of this handle acquired while we waited, or aclose() ran: count
            # ourselves once only (this release never closes what the other hold keeps).
            await self.registry.release(self.key, resource, self._closer)
            self._check()
            return self._held[loop]
        self._held[loop] = resource
        return resource

    async def aclose(self) -> None:
        """Give back every hold; the last user of a resource in the running loop closes it."""
        self._closed = True
        held, self._held = self._held, {}
        for owner, resource in held.items():
            await self.registry.release(self.key, resource, self._closer, loop=owner)
