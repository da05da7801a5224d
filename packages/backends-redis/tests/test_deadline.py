"""Every Redis operation is bounded by the URL's ``timeout``; only that deadline turns into
BackendUnavailable, and an enclosing cancellation is never mistaken for it. The server here is
a real TCP listener that accepts and never answers (a hung Redis)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import anyio
import pytest

from chute.errors import BackendUnavailable
from chute_redis.queue import RedisQueue
from chute_redis.store import RedisStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and reads nothing back: every command hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


async def test_a_hung_server_is_unavailable_after_the_timeout(silent_port: int) -> None:
    url = f"redis://127.0.0.1:{silent_port}/0?timeout=0.3&retries=0"
    async with RedisStore(url) as store:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"did not answer within 0\.3 s"):
            await store.get("api", "0" * 32)
        assert time.monotonic() - started < 5  # bounded, not hung


async def test_an_enclosing_cancellation_is_not_a_timeout(silent_port: int) -> None:
    url = f"redis://127.0.0.1:{silent_port}/0?timeout=30&retries=0"
    async with RedisQueue(url) as queue:
        with anyio.move_on_after(0.2) as scope:
            await queue.depth("api")
        assert scope.cancelled_caught  # cancelled by the scope, no BackendUnavailable
        # The task is not left cancelled: it goes on awaiting normally.
        await anyio.sleep(0.01)


async def test_the_deadline_is_gone_after_the_operation(redis_url: str) -> None:
    """A finished operation leaves no timer behind that could cancel the task later."""
    url = redis_url + "&timeout=0.1" if "?" in redis_url else redis_url + "?timeout=0.1"
    async with RedisQueue(url) as queue:
        await queue.depth("api")
        await anyio.sleep(0.3)  # past the operation's deadline: nothing fires
        depth = await queue.depth("api")
    assert (depth.queued, depth.in_flight) == (0, 0)
