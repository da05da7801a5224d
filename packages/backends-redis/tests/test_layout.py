"""What the Redis backend leaves on the server: keys under its prefix, expiring with the record,
and one shared connection pool per server in a process."""

from __future__ import annotations

import pytest
import redis
from redis_helpers import body, new_record

from chute.errors import PayloadTooLarge
from chute.protocol import Status
from chute_redis.queue import RedisQueue
from chute_redis.store import UPLOAD_PIECE, RedisStore

pytestmark = pytest.mark.anyio


def _keys(raw: redis.Redis, prefix: str) -> set[str]:
    return {k.decode() for k in raw.scan_iter(match=f"{prefix}:*", count=1000)}


async def test_every_key_of_a_request_expires_with_its_record(
    redis_url: str, raw_redis: redis.Redis, prefix: str
) -> None:
    record = new_record("demo", retention=3600)
    async with RedisStore(redis_url) as store:
        await store.create(record, body(b"payload"))
        keys = _keys(raw_redis, prefix)
        assert keys == {
            f"{prefix}:s:demo:{{{record.id}}}",
            f"{prefix}:s:demo:{{{record.id}}}:payload",
        }
        for key in keys:
            assert raw_redis.pexpiretime(key) == int(record.expires_at * 1000)
        await store.transition("demo", record.id, Status.IN_PROGRESS, attempt=1)
        await store.transition("demo", record.id, Status.COMPLETED, attempt=1, result=b"{}")
        # Transitions rewrite the record and keep the expiry.
        for key in keys:
            assert raw_redis.pexpiretime(key) == int(record.expires_at * 1000)


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
