"""The gateway coalesces concurrent submits on the joint path (chute.gateway._coalesce), on a
real Redis: each submit gets its own truthful answer, a lone one goes alone and at once, and
a large body streams as before."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from redis_helpers import body, new_record

from chute.backends.base import Joint, Settle, Submit
from chute.errors import Conflict
from chute.gateway import _coalesce as coalesce
from chute.lifecycle import apply_transition
from chute.protocol import RequestRecord, Status, now
from chute_redis.queue import RedisQueue
from chute_redis.store import RedisStore

pytestmark = pytest.mark.anyio

API = "coalesced"


@pytest.fixture
async def joint(redis_url: str) -> AsyncIterator[tuple[RedisQueue, RedisStore, Joint]]:
    async with RedisQueue(redis_url) as queue, RedisStore(redis_url) as store:
        j = store.joint(queue)
        assert j is not None
        yield queue, store, j


async def test_concurrent_submits_share_calls_and_keep_their_own_answers(
    joint: tuple[RedisQueue, RedisStore, Joint],
) -> None:
    queue, store, j = joint
    taken = new_record(API)
    await j.submit(taken, body(b"first"))
    records = [new_record(API) for _ in range(20)]
    records[7] = taken  # a repeat of an id that exists: Conflict, for it alone
    answers: dict[int, RequestRecord | Exception] = {}

    async def one(i: int) -> None:
        try:
            answers[i] = await coalesce.submit(j, records[i], body(b'{"i": %d}' % i))
        except Conflict as exc:
            answers[i] = exc

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
    commit = coalesce._commits[j]
    assert commit.items == 20
    assert commit.batches < 20, "no submits were coalesced"
    assert isinstance(answers[7], Conflict)
    for i, record in enumerate(records):
        if i == 7:
            continue
        answer = answers[i]
        assert isinstance(answer, RequestRecord)
        assert answer.id == record.id
        assert await store.get(API, record.id) == answer
        assert b"".join([c async for c in store.payload(API, record.id)]) == b'{"i": %d}' % i
    assert b"".join([c async for c in store.payload(API, taken.id)]) == b"first"
    # The 19 new ones and the first are queued, each once.
    got = await queue.receive(API, max_messages=64, wait=1.0)
    assert sorted(d.request_id for d in got) == sorted({r.id for r in records})
    assert (await queue.depth(API)).queued == 0


async def test_a_lone_submit_goes_alone_and_a_large_body_streams(
    joint: tuple[RedisQueue, RedisStore, Joint],
) -> None:
    queue, store, j = joint
    for _ in range(3):
        await coalesce.submit(j, new_record(API), body(b"{}"))
    commit = coalesce._commits[j]
    assert (commit.batches, commit.items) == (3, 3)  # never waited for company
    big = new_record(API)
    pieces = [b"x" * 10_000] * 10  # above COALESCE_LIMIT: streamed through Joint.submit
    stored = await coalesce.submit(j, big, body(*pieces))
    assert stored.payload_size == sum(map(len, pieces)) > coalesce.COALESCE_LIMIT
    assert (commit.batches, commit.items) == (3, 3)
    assert b"".join([c async for c in store.payload(API, big.id)]) == b"".join(pieces)
    assert len(await queue.receive(API, max_messages=10, wait=1.0)) == 4


async def test_a_batch_of_two_apis_wakes_the_receivers_of_both(
    joint: tuple[RedisQueue, RedisStore, Joint],
) -> None:
    """Receivers blocked on two APIs (waiting up to 10 s) both wake when one submit_many
    queues a request for each: one wake-up per API of the batch, not only the last one's."""
    queue, _, j = joint
    got: dict[str, list[str]] = {}

    async def wait_on(api: str) -> None:
        got[api] = [d.request_id for d in await queue.receive(api, wait=10.0)]

    one, two = new_record("api-one"), new_record("api-two")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_on, "api-one")
            tg.start_soon(wait_on, "api-two")
            await anyio.sleep(0.3)  # both are blocked on their wake lists now
            await j.submit_many([Submit(one, b"1"), Submit(two, b"2")])
    assert got == {"api-one": [one.id], "api-two": [two.id]}


async def test_batches_mixing_two_apis_queue_and_settle_each_in_its_own(
    joint: tuple[RedisQueue, RedisStore, Joint],
) -> None:
    """A submit batch and a settle batch that mix two APIs (the scripts take each API's queue
    keys once and each request names its API's): every request is queued on its own API's
    queue, and every settle writes its own record and acks in its own API's queue. If this
    fails, a request lands in another API's queue or stays leased after its outcome."""
    queue, store, j = joint
    records = [new_record(api) for api in ("mix-one", "mix-two", "mix-one", "mix-two", "mix-one")]
    answers = await j.submit_many([Submit(r, f"{i}".encode()) for i, r in enumerate(records)])
    assert [a.id for a in answers if isinstance(a, RequestRecord)] == [r.id for r in records]
    received = [
        *await j.receive("mix-one", max_messages=10, wait=1.0, start=True),
        *await j.receive("mix-two", max_messages=10, wait=1.0, start=True),
    ]
    by_api = {
        api: {r.delivery.request_id for r in received if r.delivery.api == api}
        for api in ("mix-one", "mix-two")
    }
    assert by_api == {
        "mix-one": {records[0].id, records[2].id, records[4].id},
        "mix-two": {records[1].id, records[3].id},
    }
    settles = []
    for r in received:
        assert r.found is not None
        assert r.started
        record, version = r.found
        done = apply_transition(record, Status.COMPLETED, attempt=r.delivery.attempt, at=now())
        settles.append(Settle(r.delivery, done, version, record.id.encode()))
    settled = await j.settle_many(settles[::-1])  # the APIs interleaved the other way round
    assert all(s.acked and s.version is not None for s in settled)
    for api in ("mix-one", "mix-two"):
        depth = await queue.depth(api)
        assert (depth.queued, depth.in_flight) == (0, 0)
    for record in records:
        stored = await store.get(record.api, record.id)
        assert stored is not None
        assert stored.status is Status.COMPLETED
        assert await store.result(record.api, record.id) == record.id.encode()
