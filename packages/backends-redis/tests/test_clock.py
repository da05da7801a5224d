"""The time of the receive script (joint_receive.lua): the started_at it writes is when it ran,
read in this process's clock (``chute_redis.clock``), also when it was sent together with the
wait on the wake list (``Script.after_wake``) and so ran long after it was sent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from redis_helpers import body, new_record

from chute.backends.base import Received
from chute.testing.services import REDIS, LocalServer, local_server
from chute_redis.clock import ServerClock
from chute_redis.joint import RedisJoint
from chute_redis.queue import RedisQueue
from chute_redis.store import RedisStore

pytestmark = pytest.mark.anyio

API = "clock"
#: How far the skewed clock of these tests is from the real one.
SKEW = 3600.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[LocalServer]:
    """A server of the test's own: one test empties its script cache."""
    with local_server(REDIS, tmp_path / "redis") as server:
        yield server


def _joint(queue: RedisQueue, store: RedisStore) -> RedisJoint:
    joint = store.joint(queue)
    assert isinstance(joint, RedisJoint)
    return joint


async def _drain(joint: RedisJoint) -> None:
    """A receive that finds the queue empty: the next one starts with a wait on the wake list."""
    assert await joint.receive(API, wait=0.2, lease=30.0, start=True) == []


def _started_at(received: Received) -> float:
    assert received.started
    assert received.found is not None
    started_at = received.found[0].started_at
    assert started_at is not None
    return started_at


async def test_the_offset_of_clocks_on_one_host_is_none(redis_url: str) -> None:
    async with RedisStore(redis_url) as store:
        client = store.connection.client()
        same = ServerClock()
        never_measured = same.stale
        await same.measure(client)
        assert (never_measured, same.stale) == (True, False)
        assert same.offset_us == 0
        skewed = ServerClock(lambda: time.time() + SKEW)
        await skewed.measure(client)
        assert abs(skewed.offset_us - SKEW * 1e6) < 0.05e6  # measured, to a round trip


async def test_a_receive_that_waited_starts_the_record_when_the_message_came(
    redis_url: str,
) -> None:
    async with RedisQueue(redis_url) as queue, RedisStore(redis_url) as store:
        joint = _joint(queue, store)
        await _drain(joint)
        record = new_record(API)
        sent_at = 0.0

        async def submit_later() -> None:
            nonlocal sent_at
            await anyio.sleep(0.5)
            sent_at = time.time()
            await joint.submit(record, body(b'{"x": 1}'))

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit_later)
            asked_at = time.time()
            [received] = await joint.receive(API, wait=5.0, lease=30.0, start=True)
        got_at = time.time()
        assert received.delivery.request_id == record.id
        # Sent 0.5 s before the message existed, run when it came: started after the send.
        assert asked_at + 0.4 < sent_at <= _started_at(received) <= got_at
        await queue.ack(received.delivery)


async def test_the_start_is_written_in_this_process_clock(redis_url: str) -> None:
    """A dequeuer whose clock is an hour ahead of Redis's writes started_at an hour ahead, as
    it writes finished_at: durations between the two are right whatever the skew."""
    async with RedisQueue(redis_url) as queue, RedisStore(redis_url) as store:
        store.server_clock = ServerClock(lambda: time.time() + SKEW)
        joint = _joint(queue, store)
        for waited in (False, True):
            if waited:
                await _drain(joint)
            record = new_record(API)
            await joint.submit(record, body(b'{"x": 1}'))
            before = time.time()
            [received] = await joint.receive(API, wait=1.0, lease=30.0, start=True)
            after = time.time()
            assert before + SKEW - 0.05 <= _started_at(received) <= after + SKEW + 0.05
            await queue.ack(received.delivery)


async def test_a_receive_after_a_wait_loads_its_script_when_the_server_lost_it(
    own_redis: LocalServer,
) -> None:
    async with RedisQueue(own_redis.url) as queue, RedisStore(own_redis.url) as store:
        joint = _joint(queue, store)
        await _drain(joint)
        await store.connection.client().script_flush()  # as a restarted server's cache
        record = new_record(API)
        await joint.submit(record, body(b'{"x": 1}'))
        [received] = await joint.receive(API, wait=1.0, lease=30.0, start=True)
        assert received.delivery.request_id == record.id
        assert received.payload == b'{"x": 1}'
        _started_at(received)
        # And the plain queue's receive, the same way.
        assert await queue.receive(API, wait=0.2) == []
        await store.connection.client().script_flush()
        await queue.send(API, "plain-1")
        [delivery] = await queue.receive(API, wait=1.0)
        assert delivery.request_id == "plain-1"


async def test_a_receive_cancelled_while_it_waits_takes_nothing(own_redis: LocalServer) -> None:
    """Cancelled during the wait (a dequeuer stopping): the script sent with the wait never
    runs (redis-py drops the connection, and a blocked client's next command is not read),
    so a message sent afterwards goes to the next receiver, not to a lease nobody holds."""
    url = own_redis.url
    async with RedisQueue(url) as queue, RedisStore(url) as store:
        joint = _joint(queue, store)
        await _drain(joint)
        client = store.connection.client()

        async def until_blocked(count: int) -> None:
            """Until the server has ``count`` clients blocked (on the wake list)."""
            with anyio.fail_after(10):
                # The server's state, read until it holds: there is no event to wait on.
                while int((await client.info("clients"))["blocked_clients"]) != count:  # noqa: ASYNC110
                    await anyio.sleep(0.01)

        async def wait_long() -> None:
            await joint.receive(API, wait=5.0, lease=30.0, start=True)
            pytest.fail("nothing was sent: the receive must still be waiting")

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_long)
            await until_blocked(1)
            tg.cancel_scope.cancel()
        # The server sees the connection go: its blocked client is gone.
        await until_blocked(0)
        record = new_record(API)
        await joint.submit(record, body(b'{"x": 1}'))
        async with RedisQueue(url) as other_queue:
            [received] = await _joint(other_queue, store).receive(
                API, wait=1.0, lease=30.0, start=True
            )
        assert received.delivery.request_id == record.id
        assert received.delivery.attempt == 1
        await queue.ack(received.delivery)
