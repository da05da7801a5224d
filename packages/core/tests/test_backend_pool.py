"""LoopShared and LoopHandle on real asyncio event loops: one resource per loop and key,
created once, closed by its last user, never closed from another loop."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from chute.backends.pool import LoopHandle, LoopShared
from chute.errors import BackendError

_serial = itertools.count()


class Resource:
    """Stands in for a client: records whether it was closed, and in which loop."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.serial = next(_serial)
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.closed_in: asyncio.AbstractEventLoop | None = None

    def is_closed(self) -> bool:
        return self.closed


async def close(resource: Resource) -> None:
    await asyncio.sleep(0)
    resource.closed = True
    resource.closed_in = asyncio.get_running_loop()


def test_one_resource_per_loop_and_key() -> None:
    registry: LoopShared[Resource] = LoopShared()

    async def main() -> tuple[Resource, Resource, Resource]:
        a = registry.acquire_now("a", lambda: Resource("a"))
        again = registry.acquire_now("a", lambda: Resource("a"))
        b = registry.acquire_now("b", lambda: Resource("b"))
        assert again is a
        assert b is not a
        assert registry.users("a") == 2
        assert registry.users("b") == 1
        return a, again, b

    first = asyncio.run(main())
    second = asyncio.run(main())
    # A new loop gets its own resources: the first loop's belong to it.
    assert second[0] is not first[0]
    assert second[0].loop is not first[0].loop


def test_the_last_user_closes_and_the_next_user_gets_a_new_one() -> None:
    registry: LoopShared[Resource] = LoopShared()

    async def main() -> None:
        one = LoopHandle(registry, "k", close)
        two = LoopHandle(registry, "k", close)
        shared = one.get_now(lambda: Resource("k"))
        assert two.get_now(lambda: Resource("k")) is shared
        assert one.get_now(lambda: Resource("k")) is shared  # a handle counts once per loop
        assert registry.users("k") == 2
        await one.aclose()
        assert not shared.is_closed()
        assert registry.users("k") == 1
        await two.aclose()
        assert shared.is_closed()
        assert shared.closed_in is asyncio.get_running_loop()
        assert registry.users("k") == 0
        three = LoopHandle(registry, "k", close)
        fresh = three.get_now(lambda: Resource("k"))
        assert fresh is not shared
        assert not fresh.is_closed()
        await three.aclose()
        assert fresh.is_closed()

    asyncio.run(main())


def test_concurrent_first_users_create_one_resource() -> None:
    registry: LoopShared[Resource] = LoopShared()
    created: list[Resource] = []

    async def slow_factory() -> Resource:
        await asyncio.sleep(0.01)  # others arrive while this one is being made
        resource = Resource("k")
        created.append(resource)
        return resource

    async def main() -> None:
        handles = [LoopHandle(registry, "k", close) for _ in range(5)]
        got = await asyncio.gather(*(h.get(slow_factory) for h in handles))
        assert len(created) == 1
        assert all(r is created[0] for r in got)
        assert registry.users("k") == 5
        for handle in handles:
            await handle.aclose()
        assert created[0].closed

    asyncio.run(main())


def test_one_handle_racing_itself_counts_once() -> None:
    """Two tasks of one handle asking at once must not leave a use that is never released
    (the resource would never close)."""
    registry: LoopShared[Resource] = LoopShared()

    async def slow_factory() -> Resource:
        await asyncio.sleep(0.01)
        return Resource("k")

    async def main() -> None:
        handle = LoopHandle(registry, "k", close)
        first, second = await asyncio.gather(handle.get(slow_factory), handle.get(slow_factory))
        assert first is second
        assert registry.users("k") == 1
        await handle.aclose()
        assert first.is_closed()

    asyncio.run(main())


def test_a_failing_factory_registers_nothing() -> None:
    registry: LoopShared[Resource] = LoopShared()

    async def broken() -> Resource:
        raise OSError("endpoint unreachable")

    async def main() -> None:
        handle = LoopHandle(registry, "k", close)
        with pytest.raises(OSError, match="unreachable"):
            await handle.get(broken)
        assert registry.users("k") == 0

        async def working() -> Resource:
            return Resource("k")

        resource = await handle.get(working)
        assert registry.users("k") == 1
        await handle.aclose()
        assert resource.is_closed()

    asyncio.run(main())


def test_a_closed_handle_refuses_with_its_message() -> None:
    registry: LoopShared[Resource] = LoopShared()

    async def factory() -> Resource:
        return Resource("k")

    async def main() -> None:
        handle = LoopHandle(registry, "k", close, closed_message="this Redis store is closed")
        handle.get_now(lambda: Resource("k"))
        await handle.aclose()
        assert handle.closed
        with pytest.raises(BackendError, match="this Redis store is closed"):
            handle.get_now(lambda: Resource("k"))
        with pytest.raises(BackendError, match="closed"):
            await handle.get(factory)
        await handle.aclose()  # twice is harmless

    asyncio.run(main())


def test_a_resource_of_another_loop_is_forgotten_not_closed() -> None:
    """Closing from a loop that does not own the resource would touch another loop's
    transports; the handle forgets it and closes only what belongs to the running loop."""
    registry: LoopShared[Resource] = LoopShared()
    handle = LoopHandle(registry, "k", close)
    old_loop = asyncio.new_event_loop()
    try:

        async def use() -> Resource:
            return handle.get_now(lambda: Resource("k"))

        old = old_loop.run_until_complete(use())
    finally:
        old_loop.close()

    async def main() -> Resource:
        mine = handle.get_now(lambda: Resource("k"))
        assert mine is not old
        await handle.aclose()
        assert registry.users("k", loop=old_loop) == 0
        return mine

    mine = asyncio.run(main())
    assert mine.is_closed()
    assert not old.is_closed()


def test_an_unusable_resource_is_replaced() -> None:
    registry: LoopShared[Resource] = LoopShared(usable=lambda r: not r.closed)

    async def main() -> None:
        one = LoopHandle(registry, "k", close)
        stale = one.get_now(lambda: Resource("k"))
        stale.closed = True  # say the SDK closed it underneath us
        two = LoopHandle(registry, "k", close)
        fresh = two.get_now(lambda: Resource("k"))
        assert fresh is not stale
        await one.aclose()  # releases the stale one: must not touch the fresh one
        assert not fresh.is_closed()
        assert registry.users("k") == 1
        await two.aclose()
        assert fresh.is_closed()

    asyncio.run(main())
