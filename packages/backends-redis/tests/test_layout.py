"""What the Redis backend leaves on the server: keys under its prefix, expiring with the record,
and one shared connection pool per server in a process."""

from __future__ import annotations

import time
from typing import cast

import anyio
import msgspec
import pytest
import redis
from redis_helpers import body, new_record

from chute.backends.base import QueueDepth
from chute.errors import PayloadTooLarge
from chute.protocol import Status, record_encoder
from chute_redis.queue import RedisQueue
from chute_redis.store import INLINE_PAYLOAD, UPLOAD_PIECE, RedisStore

pytestmark = pytest.mark.anyio


def _keys(raw: redis.Redis, prefix: str) -> set[str]:
    return {k.decode() for k in raw.scan_iter(match=f"{prefix}:*", count=1000)}


@pytest.mark.parametrize(
    ("payload", "own_key"),
    [(b"payload", False), (b"x" * (INLINE_PAYLOAD + 1), True)],
    ids=["small-in-the-hash", "large-in-its-own-key"],
)
async def test_every_key_of_a_request_expires_with_its_record(
    redis_url: str, raw_redis: redis.Redis, prefix: str, payload: bytes, own_key: bool
) -> None:
    """A small payload lives in the record's hash (one key per request); a larger one in a
    key of its own. Every key expires with the record, set once by the create: moves keep it
    (and do not set it again)."""
    record = new_record("demo", retention=3600)
    async with RedisStore(redis_url) as store:
        await store.create(record, body(payload))
        keys = _keys(raw_redis, prefix)
        expected = {f"{prefix}:s:demo:{{{record.id}}}"}
        if own_key:
            expected.add(f"{prefix}:s:demo:{{{record.id}}}:payload")
        # Besides the request's keys: its API's listing index, trimmed rather than expiring.
        index = f"{prefix}:s:demo:index:4096"
        assert keys == {*expected, index}
        assert raw_redis.zscore(index, record.id) == record.created_at
        keys = expected
        for key in keys:
            assert raw_redis.pexpiretime(key) == int(record.expires_at * 1000)
        await store.transition("demo", record.id, Status.IN_PROGRESS, attempt=1)
        await store.transition("demo", record.id, Status.COMPLETED, attempt=1, result=b"{}")
        # Transitions rewrite the record and keep the expiry.
        for key in keys:
            assert raw_redis.pexpiretime(key) == int(record.expires_at * 1000)
        assert b"".join([c async for c in store.payload("demo", record.id)]) == payload
        # A write that changes expires_at moves the expiry of every key.
        found = await store.read("demo", record.id)
        assert found is not None
        later = msgspec.structs.replace(found[0], expires_at=record.expires_at + 60)
        assert await store.write_if(later, found[1])
        for key in keys:
            assert raw_redis.pexpiretime(key) == int(later.expires_at * 1000)


async def test_the_listing_index_is_trimmed_of_expired_requests(
    redis_url: str, raw_redis: redis.Redis, prefix: str
) -> None:
    """The listing index does not outlive its requests: a create that trims (the first of a
    process, then one in TRIM_EVERY) or a listing removes the entries of expired requests, in
    bulk, and an index left empty is gone. Requests of a longer retention are kept, whatever
    their order. If this fails, Redis's memory grows with every request ever made."""
    short = [new_record("demo", retention=0.3) for _ in range(3)]
    long = new_record("demo", retention=3600)
    async with RedisStore(redis_url) as store:
        for record in [*short, long]:
            await store.create(record, body(b"{}"))
        short_index = f"{prefix}:s:demo:index:1"
        assert raw_redis.zcard(short_index) == 3
        await anyio.sleep(1.2)  # past the span of the short ones' index (1 s)
        # The next create of that index in a new process trims it.
        async with RedisStore(redis_url) as other:
            late = new_record("demo", retention=0.3)
            await other.create(late, body(b"{}"))
        assert [m.decode() for m in cast("list[bytes]", raw_redis.zrange(short_index, 0, -1))] == [
            late.id
        ]
        await anyio.sleep(1.2)
        page = await store.list_requests("demo")
        assert [r.id for r in page.records] == [long.id]
        assert not raw_redis.exists(short_index)
        assert raw_redis.zcard(f"{prefix}:s:demo:index:4096") == 1
        # A deleted request leaves the index when a listing meets it.
        await store.delete("demo", long.id)
        assert (await store.list_requests("demo")).records == []
        assert not raw_redis.exists(f"{prefix}:s:demo:index:4096")


async def test_records_of_the_previous_layout_stay_readable(
    redis_url: str, raw_redis: redis.Redis, prefix: str
) -> None:
    """A request stored before payloads moved into the hash (payload in its own key, no
    ``expires`` field) reads, streams its payload, moves and keeps expiring."""
    record = new_record("demo", retention=3600)
    key = f"{prefix}:s:demo:{{{record.id}}}"
    at = int(record.expires_at * 1000)
    raw_redis.hset(key, mapping={"record": record_encoder.encode(record), "version": 1})
    raw_redis.set(f"{key}:payload", b"old payload")
    raw_redis.pexpireat(key, at)
    raw_redis.pexpireat(f"{key}:payload", at)
    async with RedisStore(redis_url) as store:
        assert await store.get("demo", record.id) == record
        assert b"".join([c async for c in store.payload("demo", record.id)]) == b"old payload"
        done = await store.transition("demo", record.id, Status.CANCELLED)
        assert await store.get("demo", record.id) == done
        # Made before the listing index: not listed, and listing still works.
        assert (await store.list_requests("demo")).records == []
    assert raw_redis.hget(key, "expires") == str(at).encode()
    assert raw_redis.pexpiretime(key) == at
    assert raw_redis.pexpiretime(f"{key}:payload") == at


async def test_a_queue_of_the_previous_layout_is_taken_over(
    redis_url: str, raw_redis: redis.Redis, prefix: str
) -> None:
    """Messages an older version queued in the ``ready`` sorted set (visible or delayed) are
    received in order by the list layout, and counted by depth meanwhile."""
    ready = f"{prefix}:q:{{demo}}:ready"
    now_ms = int(time.time() * 1000)
    raw_redis.zadd(ready, {"old-1": now_ms - 2000, "old-2": now_ms - 1000, "late": now_ms + 600})
    async with RedisQueue(redis_url) as queue:
        assert (await queue.depth("demo")).queued == 3
        await queue.send("demo", "new-1")
        got = await queue.receive("demo", max_messages=10, wait=0)
        assert [d.request_id for d in got] == ["old-1", "old-2", "new-1"]
        assert [d.attempt for d in got] == [1, 1, 1]
        with anyio.fail_after(10):
            [late] = await queue.receive("demo", wait=5)
        assert late.request_id == "late"
        for d in [*got, late]:
            await queue.ack(d)
        assert await queue.depth("demo") == QueueDepth(0, 0, 0)
    assert not raw_redis.exists(ready)


async def test_queue_keys_share_one_hash_tag_per_api(
    redis_url: str, raw_redis: redis.Redis, prefix: str
) -> None:
    async with RedisQueue(redis_url) as queue:
        await queue.send("alpha", "a1")
        await queue.send("beta", "b1", delay=60)
        [delivery] = await queue.receive("alpha", wait=0)
        await queue.dead_letter(delivery, "test")
    keys = _keys(raw_redis, prefix)
    assert keys, "the queue wrote nothing"
    # One Redis Cluster slot per API queue: every key carries the API as its hash tag.
    assert {k.split("{", 1)[1].split("}", 1)[0] for k in keys} == {"alpha", "beta"}
    assert all(k.startswith(f"{prefix}:q:{{") for k in keys)


async def test_an_oversize_upload_leaves_no_key_behind(
    redis_url: str, raw_redis: redis.Redis, prefix: str
) -> None:
    url = f"{redis_url}&max_payload_size={3 * UPLOAD_PIECE}"
    async with RedisStore(url) as store:
        with pytest.raises(PayloadTooLarge) as err:
            # 3 MiB reach Redis as an upload before the limit is crossed
            await store.create(new_record(), body(*[b"x" * UPLOAD_PIECE] * 4))
    assert err.value.limit == 3 * UPLOAD_PIECE
    assert _keys(raw_redis, prefix) == set()


async def test_queues_and_stores_on_one_server_share_a_client(redis_url: str) -> None:
    other_prefix = redis_url.replace("prefix=", "prefix=other.")
    queue, store, other = RedisQueue(redis_url), RedisStore(redis_url), RedisStore(other_prefix)
    assert queue._conn.client() is store._conn.client() is other._conn.client()
    await queue.aclose()
    # Closing one user leaves the pool to the others.
    assert await store.get("demo", "nothing") is None
    await store.aclose()
    await other.ping()
    await other.aclose()
    fresh = RedisQueue(redis_url)
    await fresh.ping()
    await fresh.aclose()
