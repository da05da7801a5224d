"""A busy queue's receives leave the timed sets (leases, delayed messages) alone while the
visible list fills them, and move what is due once per ``promote_every``: a lapsed lease or a
due retry never waits longer than that behind a long visible list, and a receive the list
cannot fill always looks (queue_receive.lua's ``promote``)."""

from __future__ import annotations

import anyio
import pytest

from chute.errors import LeaseLost
from chute_redis.queue import PROMOTE_EVERY, RedisQueue

pytestmark = pytest.mark.anyio

API = "promotion"
DRAINED = "drained"


async def test_a_lapsed_lease_gets_in_line_while_the_visible_list_fills_every_receive(
    redis_url: str,
) -> None:
    """One message's lease lapses while others wait: receives of one message each, all
    filled from the visible list, put it in line within the promotion interval, so it comes
    before every message sent after that (a due message joins the line as a send would).
    If this fails, a crashed holder's request (or a retry after its backoff) waits until the
    queue is empty, which under a steady flood is never."""
    async with RedisQueue(redis_url) as queue:
        await queue.send(API, "lapsing")
        [held] = await queue.receive(API, wait=1.0, lease=0.2)
        for n in range(20):
            await queue.send(API, f"early-{n}")
        await anyio.sleep(0.3)  # the lease has lapsed
        seen = []
        with anyio.fail_after(10):
            for _ in range(5):
                [d] = await queue.receive(API, wait=1.0, lease=30.0)
                seen.append(d.request_id)
                await anyio.sleep(PROMOTE_EVERY)
            for n in range(20):
                await queue.send(API, f"late-{n}")
            while len(seen) < 41:
                [d] = await queue.receive(API, wait=1.0, lease=30.0)
                seen.append(d.request_id)
        assert "lapsing" in seen
        assert seen.index("lapsing") < seen.index("late-0")
        with pytest.raises(LeaseLost):  # delivered again: the old holder's lease is gone
            await queue.ack(held)


async def test_a_receive_the_list_cannot_fill_looks_at_once(redis_url: str) -> None:
    """Between promotions, a receive that finds fewer visible messages than it asks for
    still moves what is due and takes it. If this fails, an idle dequeuer waits out the
    promotion interval (or longer) for a lapsed lease or a retry."""
    async with RedisQueue(redis_url) as queue:
        queue.promote_every = 3600.0  # never on the interval: only because the list is short
        await queue.send(API, "lapsing")
        [first] = await queue.receive(API, wait=1.0, lease=0.2)
        await queue.send(API, "delayed", delay=0.2)
        await anyio.sleep(0.3)
        got = await queue.receive(API, max_messages=5, wait=1.0, lease=30.0)
        assert sorted(d.request_id for d in got) == ["delayed", "lapsing"]
        assert {d.request_id: d.attempt for d in got}["lapsing"] == first.attempt + 1
        assert PROMOTE_EVERY <= 0.1  # the interval a busy queue's due messages wait at most


async def test_a_drained_receive_waits_no_longer_than_the_next_timed_message(
    redis_url: str,
) -> None:
    """A receive that drains the queue tells the next one how long it may wait on the wake
    list before something timed is due: a lease it has just written, a lease written before,
    or a delayed message behind one it has just moved (queue_receive.lua's ``next_due``, from
    the first scores the promotion read). If this fails, an idle dequeuer sleeps past a lapsed
    lease or a due retry, until a send wakes it or its wait ends."""
    async with RedisQueue(redis_url) as queue:
        queue.promote_every = 0.0  # every receive looks at the timed sets

        async def next_one() -> tuple[str, float]:
            started = anyio.current_time()
            [d] = await queue.receive(DRAINED, wait=10.0, lease=30.0)
            return d.request_id, anyio.current_time() - started

        # The lease this receive writes lapses before the delayed message is due.
        await queue.send(DRAINED, "later", delay=20.0)
        await queue.send(DRAINED, "held")
        assert len(await queue.receive(DRAINED, wait=1.0, lease=0.3)) == 1
        with anyio.fail_after(10):
            rid, took = await next_one()
        assert (rid, took < 3.0) == ("held", True)
        # A lease written before this receive lapses before the one it writes.
        await queue.send(DRAINED, "first")
        assert len(await queue.receive(DRAINED, wait=1.0, lease=0.5)) == 1
        await queue.send(DRAINED, "second")
        assert len(await queue.receive(DRAINED, wait=1.0, lease=30.0)) == 1
        with anyio.fail_after(10):
            rid, took = await next_one()
        assert (rid, took < 3.0) == ("first", True)
        # A delayed message due behind one this receive moves.
        await queue.send(DRAINED, "due", delay=0.2)
        await queue.send(DRAINED, "next", delay=1.0)
        await anyio.sleep(0.3)
        [due] = await queue.receive(DRAINED, wait=1.0, lease=30.0)
        assert due.request_id == "due"
        with anyio.fail_after(10):
            rid, took = await next_one()
        assert (rid, took < 3.0) == ("next", True)
