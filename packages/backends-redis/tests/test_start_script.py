"""The start written by the receive script (joint_receive.lua) edits msgspec's text of the
record in place. On many random records (every status, attempts, deadlines, errors,
headers and extras whose strings and keys look like the record's own fields), the script
starts exactly the records ``chute.lifecycle.start_on_receive`` starts, byte for byte, and
leaves every other one unchanged — whether it decodes the record or, for one still as its
create wrote it, splices at the positions the create stored (``chute_redis.store.start_hint``).
If this fails, a request started by the receive reads differently from one the dequeuer
started, or a request that must not run was started."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import msgspec
import pytest

from chute.lifecycle import start_on_receive
from chute.protocol import ErrorInfo, RequestRecord, Status, new_request_id, now, record_encoder
from chute_redis.queue import RedisQueue
from chute_redis.store import RedisStore, start_hint

pytestmark = pytest.mark.anyio

API = "starts"
#: Strings that would mislead a reader of the JSON text that looked for a field by its name.
TRICKY = [
    'x","attempt":9,"status":"in_queue',
    ',"extra":{}}',
    '"started_at":1.5}',
    "\\",
    "ü\n\t",
    ',"attempt":0,',
    "null",
]


def _random_record(rng: random.Random, *, fresh: bool = False) -> RequestRecord:
    """A record of any shape; ``fresh``: one as a gateway creates it (queued, never run)."""
    at = now()
    fields: dict[str, object] = {
        "id": new_request_id(),
        "api": API,
        "status": Status.IN_QUEUE if fresh else rng.choice(list(Status)),
        "created_at": at - rng.choice([0.0, 0.5, 30.0, 4000.0]),
        "expires_at": at + rng.choice([3600.0, 86400.0 * 3]),
    }
    if rng.random() < 0.7:
        fields["content_type"] = rng.choice(["application/json", 'text/plain; x="y"'])
    if rng.random() < 0.5:
        fields["headers"] = [
            (rng.choice(TRICKY + ["x-a", "attempt"]), rng.choice(TRICKY))
            for _ in range(rng.randint(1, 3))
        ]
    if rng.random() < 0.9:
        fields["payload_size"] = rng.randint(1, 1000)
    if not fresh and rng.random() < 0.3:
        fields["attempt"] = rng.randint(1, 2)
    if not fresh and rng.random() < 0.3:
        fields["started_at"] = at - rng.random()
    if not fresh and rng.random() < 0.1:
        fields["finished_at"] = at
    if not fresh and rng.random() < 0.15:
        fields["error"] = ErrorInfo("container_error", rng.choice(TRICKY), 500)
    if rng.random() < 0.3:
        fields["queue_deadline"] = at + rng.choice([-5.0, 600.0])
    if rng.random() < 0.3:
        fields["timeout"] = rng.choice([0.5, 12.0, 1e-3])
    if rng.random() < 0.2:
        fields["cancel_requested"] = True
    if rng.random() < 0.5:
        fields["extra"] = {
            rng.choice(["attempt", "status", "started_at", "webhook_url", "ü"]): rng.choice(
                [1, None, "x", {"status": "in_queue", "attempt": 0}, [1, {}], TRICKY[0]]
            )
            for _ in range(rng.randint(1, 3))
        }
    return msgspec.convert(fields, RequestRecord)


async def test_the_script_starts_what_the_reference_starts(redis_url: str) -> None:
    rng = random.Random(20261202)
    started, left = await _start_and_compare(
        redis_url, [_random_record(rng) for _ in range(400)], rng
    )
    # Both outcomes were tried, many times each.
    assert started > 50, (started, left)
    assert left > 50, (started, left)


async def test_a_record_as_created_starts_from_its_hint_the_same(redis_url: str) -> None:
    """Records as the gateway creates them: the script splices at the create's positions."""
    rng = random.Random(20261203)
    records = [_random_record(rng, fresh=True) for _ in range(250)]
    for record in records:
        raw = record_encoder.encode(record)
        status = raw.index(b',"status":') + 1  # 1-based, as Lua counts
        assert start_hint(record, raw).split(":")[0] == str(status)
    started, left = await _start_and_compare(redis_url, records, rng)
    assert started > 100, (started, left)  # past a deadline or a short limit: left
    assert left > 10, (started, left)


async def test_the_hint_is_what_decides_for_a_record_as_created(redis_url: str) -> None:
    """The hint, not the decoded record, decides for a version-1 record: one whose hint says it
    expired is left alone though its JSON says it is live; at version 2 the JSON decides."""
    async with RedisQueue(redis_url) as queue, RedisStore(redis_url) as store:
        joint = store.joint(queue)
        assert joint is not None
        record = _random_record(random.Random(1), fresh=True)
        await store.create(record, _body())
        key = store.record_keys(API, record.id).record
        client = store.connection.client()
        stored_hint = await client.hget(key, "start")
        assert isinstance(stored_hint, bytes)
        hint = stored_hint.decode()
        read = await store.read(API, record.id)
        assert read is not None
        assert hint == start_hint(read[0], record_encoder.encode(read[0]))
        status, tail, _, created, deadline = hint.split(":", 4)
        await client.hset(key, "start", f"{status}:{tail}:1.0:{created}:{deadline}")
        await queue.send(API, record.id)
        [received] = await joint.receive(API, wait=1.0, lease=30.0, start=True)
        assert not received.started
        await queue.release(received.delivery)
        await client.hset(key, "version", 2)  # not as created any more: decoded
        [received] = await joint.receive(API, wait=1.0, lease=30.0, start=True)
        assert received.started
        await queue.ack(received.delivery)


async def _start_and_compare(
    redis_url: str, records: list[RequestRecord], rng: random.Random
) -> tuple[int, int]:
    """Create, queue and receive each record with start; check what the receive did against
    ``start_on_receive``. Returns how many it started and how many it left."""
    started = left = 0
    async with RedisQueue(redis_url) as queue, RedisStore(redis_url) as store:
        joint = store.joint(queue)
        assert joint is not None
        assert joint.starts_on_receive
        for record in records:
            await store.create(record, _body())
            before = await store.read(API, record.id)
            assert before is not None
            await queue.send(API, record.id)
            limit = rng.choice([None, 600.0, 10.0])
            t0 = now()
            [received] = await joint.receive(
                API, wait=1.0, lease=30.0, start=True, queue_limit=limit
            )
            t1 = now()
            d = received.delivery
            assert d.request_id == record.id
            stored = before[0]
            if received.started:
                assert received.found is not None
                got, _ = received.found
                assert got.started_at is not None
                assert t0 <= got.started_at <= t1
                expected = start_on_receive(stored, d.attempt, api_limit=limit, at=got.started_at)
                assert expected is not None, stored
                assert record_encoder.encode(got) == record_encoder.encode(expected)
                assert await store.read(API, record.id) == received.found
                started += 1
            else:
                assert received.found == before  # left exactly as it was
                # An error or finished_at to clear (a retry): left to the dequeuer's own path.
                if stored.error is None and stored.finished_at is None:
                    for at in (t0, t1):
                        assert start_on_receive(stored, d.attempt, api_limit=limit, at=at) is None
                left += 1
            await queue.ack(d)
    return started, left


async def _body() -> AsyncIterator[bytes]:
    yield b'{"x": 1}'
