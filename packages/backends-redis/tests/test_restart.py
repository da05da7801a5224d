"""A Redis server that crashes and restarts costs no request: operations fail with
BackendUnavailable while it is down, and resume when it is back.

The server is private (started for the test) and fsyncs every write to its append-only file,
so what it acknowledged survives SIGKILL; docs/redis.md explains which settings give that.
"""

from __future__ import annotations

import contextlib

import anyio
import pytest
from redis_helpers import body, new_record

from chute.backends.base import Delivery
from chute.errors import BackendUnavailable, Conflict, LeaseLost, TransitionRejected
from chute.protocol import Status
from chute.testing.services import LocalServer
from chute_redis.queue import RedisQueue
from chute_redis.store import RedisStore

pytestmark = pytest.mark.anyio

API = "restart"


async def test_a_quick_restart_is_ridden_out(private_redis: LocalServer) -> None:
    async with RedisQueue(private_redis.url) as queue:
        for i in range(20):
            await queue.send(API, f"r{i:03}")
        private_redis.kill()
        await anyio.to_thread.run_sync(private_redis.start)
        # The pool's connections died with the server; reconnecting with backoff hides that.
        assert (await queue.depth(API)).queued == 20
        got = await queue.receive(API, max_messages=20, wait=1.0)
    assert sorted(d.request_id for d in got) == [f"r{i:03}" for i in range(20)]


async def test_operations_resume_after_an_outage_and_nothing_is_lost(
    private_redis: LocalServer,
) -> None:
    total = 300
    # One reconnect attempt only, so that the outage shows as BackendUnavailable.
    url = f"{private_redis.url}/0?retries=1&timeout=5"
    outages = {"producer": 0, "consumer": 0}
    sent: list[str] = []
    finished: set[str] = set()
    queue, store = RedisQueue(url), RedisStore(url)
    a_third_sent = anyio.Event()

    async def retrying(role: str) -> None:
        outages[role] += 1
        await anyio.sleep(0.05)

    async def produce() -> None:
        for _ in range(total):
            record = new_record(API)
            while True:
                try:
                    await store.create(record, body(b'{"n": 1}'))
                    break
                except Conflict:  # created just before the crash cut the reply
                    break
                except BackendUnavailable:
                    await retrying("producer")
            while True:
                try:
                    await queue.send(API, record.id)
                    break
                except BackendUnavailable:
                    await retrying("producer")
            sent.append(record.id)
            if len(sent) == total // 3:
                a_third_sent.set()
            await anyio.sleep(0.005)  # a steady trickle, so the crash lands mid-stream

    async def finish(delivery: Delivery) -> None:
        """Drive the record to completed from wherever it is, then ack: safe to repeat."""
        rid, attempt = delivery.request_id, delivery.attempt
        while True:
            try:
                found = await store.read(API, rid)
                assert found is not None, f"record {rid} lost"
                record = found[0]
                if record.status is Status.COMPLETED:
                    # LeaseLost: acked just before the crash cut the reply
                    with contextlib.suppress(LeaseLost):
                        await queue.ack(delivery)
                    finished.add(rid)
                    return
                if record.status is Status.IN_QUEUE or record.attempt < attempt:
                    await store.transition(API, rid, Status.IN_PROGRESS, attempt=attempt)
                else:
                    await store.transition(
                        API, rid, Status.COMPLETED, attempt=attempt, result=b'{"ok": true}'
                    )
            except TransitionRejected:
                continue  # the write landed before the crash; read again
            except BackendUnavailable:
                await retrying("consumer")

    async def consume() -> None:
        while len(finished) < total:
            try:
                deliveries = await queue.receive(API, max_messages=10, wait=0.5, lease=3.0)
            except BackendUnavailable:
                await retrying("consumer")
                continue
            for delivery in deliveries:
                await finish(delivery)

    async def crash() -> None:
        await a_third_sent.wait()
        private_redis.kill()
        await anyio.sleep(1.0)
        await anyio.to_thread.run_sync(private_redis.start)

    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            tg.start_soon(consume)
            tg.start_soon(crash)
    depth = await queue.depth(API)
    for rid in sent:
        record = await store.get(API, rid)
        assert record is not None
        assert record.status is Status.COMPLETED
    await queue.aclose()
    await store.aclose()

    assert len(sent) == total
    assert finished == set(sent)
    assert (depth.queued, depth.in_flight, depth.dead) == (0, 0, 0)
    assert outages["producer"] > 0, outages
    assert outages["consumer"] > 0, outages
