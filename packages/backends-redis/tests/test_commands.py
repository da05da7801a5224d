"""What a request costs Redis, counted in commands (``INFO commandstats``; commands run inside
a script count, and so does the EVALSHA itself), on a redis-server of the test's own so no
other client's commands mix in. docs/redis.md explains each number; a change that makes a
request cost more commands fails here.

The path is the dequeuer's on one server (the joint fast path): a submit, a receive that reads
the record and payload along and writes the start (``receive(start=True)``), the settle
(``settle_many``), then the gateway's read of the result; once for a lone request and once
for 8 that move together in batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis_helpers import body, new_record

from chute.backends.base import Joint, Settle, Submit
from chute.lifecycle import apply_transition
from chute.protocol import Status, now
from chute.testing.services import REDIS, LocalServer, local_server
from chute_redis.queue import RedisQueue
from chute_redis.store import RedisStore

pytestmark = pytest.mark.anyio

API = "commands"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[LocalServer]:
    with local_server(REDIS, tmp_path / "redis") as server:
        yield server


class Commands:
    """Counts the commands the server ran between :meth:`start` and :meth:`stop`."""

    def __init__(self, url: str) -> None:
        self.raw = redis.Redis.from_url(url)

    def start(self) -> None:
        self.raw.config_resetstat()

    def stop(self) -> dict[str, int]:
        stats = self.raw.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        return {k: n for k, n in calls.items() if k not in ("config|resetstat", "info")}


async def _life(
    queue: RedisQueue, store: RedisStore, joint: Joint, counter: Commands, n: int
) -> dict[str, float]:
    """Commands per request of each step, for ``n`` requests moving together."""
    steps: dict[str, float] = {}
    counter.start()
    records = [new_record(API) for _ in range(n)]
    if n == 1:
        await joint.submit(records[0], body(b'{"x": 1}'))
    else:  # as the gateway coalesces concurrent submits
        await joint.submit_many([Submit(r, b'{"x": 1}') for r in records])
    steps["submit"] = sum(counter.stop().values()) / n

    counter.start()
    received = await joint.receive(API, max_messages=n, wait=1.0, lease=30.0, start=True)
    assert len(received) == n
    assert all(r.payload == b'{"x": 1}' for r in received)
    assert all(r.started for r in received)  # the start is written by the receive script
    steps["receive"] = sum(counter.stop().values()) / n

    starts = []
    for r in received:
        assert r.found is not None
        assert r.found[0].status is Status.IN_PROGRESS
        starts.append(r.found)

    counter.start()
    settles = [
        Settle(
            r.delivery,
            apply_transition(w, Status.COMPLETED, attempt=r.delivery.attempt, at=now()),
            v,
            b'{"y": 2}',
        )
        for r, (w, v) in zip(received, starts, strict=True)
    ]
    settled = await joint.settle_many(settles)
    assert all(s.acked for s in settled)
    steps["settle"] = sum(counter.stop().values()) / n

    counter.start()
    for record in records:
        assert (await store.get(API, record.id)) is not None
        assert await store.result(API, record.id) == b'{"y": 2}'
    steps["read"] = sum(counter.stop().values()) / n
    steps["total"] = sum(steps.values())
    return steps


async def test_commands_per_request(own_redis: LocalServer) -> None:
    url = own_redis.url
    counter = Commands(url)
    async with RedisQueue(url) as queue, RedisStore(url) as store:
        joint = store.joint(queue)
        assert joint is not None
        # Load the scripts first (EVAL, once per server).
        await _life(queue, store, joint, counter, 1)
        await _life(queue, store, joint, counter, 8)
        # A lone request comes to an idle dequeuer: its receive moves what is due (lapsed
        # leases, delayed messages) to the visible list first, as every receive did before.
        queue.promote_every = 0.0
        lone = await _life(queue, store, joint, counter, 1)
        # A busy queue: the receives between two promoting ones (one per 50 ms and receiver)
        # find the visible list full enough and leave the timed sets alone.
        queue.promote_every = math.inf
        batched = await _life(queue, store, joint, counter, 8)
    counter.raw.close()
    # submit: EVALSHA, EXISTS, HSET (record, version, expiry, payload in one hash), PEXPIREAT,
    # ZADD to the listing index, RPUSH of the id, LLEN of the wake list (+ RPUSH of a wake
    # token when it is empty); one create in 16 per index and process also trims the index
    # (ZREMRANGEBYSCORE): here the first (a warm-up) and the 17th (in the last batch).
    # receive, per batch: EVALSHA, TIME, EXISTS of the old layout's key, ZRANGE of the first
    # lapsing lease and of the first delayed message (the promotion: once per 50 ms and
    # receiver, and whenever the visible list cannot fill the receive; a set with something
    # due adds ZRANGEBYSCORE, ZREMRANGEBYRANK and RPUSH), LPOP of up to max,
    # HSET of the receipts, ZADD of the leases, LLEN/DEL of the wake list; the attempts:
    # HINCRBY for a lone message, one HMGET and one HSET for several; per message: HMGET of
    # its record, version and payload, and HSET of the started record and version (the
    # start, written by the receive script: it was a script of its own, EVALSHA per batch
    # and HMGET + HSET per message). A receive that drains the queue also tells when the
    # next timed message is due, so that the next receive starts with a BLPOP on the wake
    # list instead of a script on an empty queue: 1 command where a dequeuer waiting for a
    # lone request paid 8 (counted here: the BLPOP, answered at once as the message is there
    # already). It knows that from the promotion's ZRANGEs and the leases it wrote; a receive
    # that did not promote reads it (ZRANGE of delayed and of leased: 16 before that).
    # settle: per message HMGET + HSET (the write); per batch EVALSHA and the ack of all that
    # wrote: HMGET (receipts), ZREM (leases), 2 HDEL (receipts, attempts).
    # read (the gateway's): HMGET of the record, HGET of the result.
    assert lone == {
        "submit": 8,
        "receive": 14,
        "settle": 7,
        "read": 2,
        "total": 31,
    }
    # 8 together: the submits coalesced into one call (as the gateway does for concurrent
    # submits): per request EXISTS, HSET, PEXPIREAT; per batch EVALSHA, RPUSH, ZADD (index),
    # LLEN + RPUSH (wake), and here the trim: (8 x 3 + 6) / 8. Receive and start:
    # (8 x 2 + 12) / 8: between two promoting receives, the one that fills up from the
    # visible list runs no EXISTS (old layout) and no ZRANGEBYSCORE. Settle: (8 x 2 + 5) / 8.
    # (Before the start moved into the receive: receive 2.875 and start 2.125, 13.375 in
    # all; then 12.25 while every receive promoted.)
    assert batched == {
        "submit": 3.75,
        "receive": 3.5,
        "settle": 2.625,
        "read": 2,
        "total": 11.875,
    }
