"""The start written by the receive script (joint_receive.lua) edits msgspec's text of the
record in place. On many random records (every status, attempts, deadlines, errors,
headers and extras whose strings and keys look like the record's own fields), the script
starts exactly the records ``chute.lifecycle.start_on_receive`` starts, byte for byte, and
leaves every other one unchanged. If this fails, a request started by the receive reads
differently from one the dequeuer started, or a request that must not run was started."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import msgspec
import pytest

from chute.lifecycle import start_on_receive
from chute.protocol import ErrorInfo, RequestRecord, Status, new_request_id, now, record_encoder
from chute_redis.queue import RedisQueue
from chute_redis.store import RedisStore

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


def _random_record(rng: random.Random) -> RequestRecord:
    at = now()
    fields: dict[str, object] = {
        "id": new_request_id(),
        "api": API,
        "status": rng.choice(list(Status)),
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
    if rng.random() < 0.3:
        fields["attempt"] = rng.randint(1, 2)
    if rng.random() < 0.3:
        fields["started_at"] = at - rng.random()
    if rng.random() < 0.1:
        fields["finished_at"] = at
    if rng.random() < 0.15:
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
    async with RedisQueue(redis_url) as queue, RedisStore(redis_url) as store:
        joint = store.joint(queue)
        assert joint is not None
        assert joint.starts_on_receive
        started = left = 0
        for _ in range(400):
            record = _random_record(rng)
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
        # Both outcomes were tried, many times each.
        assert started > 50, (started, left)
        assert left > 50, (started, left)


async def _body() -> AsyncIterator[bytes]:
    yield b'{"x": 1}'
