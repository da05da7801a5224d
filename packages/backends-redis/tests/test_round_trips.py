"""Submit and complete cost a small, fixed number of round trips to Redis (docs/redis.md).

A round trip is one write of commands to a connection followed by reading the replies: the
test counts calls of redis-py's ``send_packed_command`` (a pipeline sends all its commands in
one call). It counts our own calls on a real server; nothing is replaced.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from redis.asyncio.connection import AbstractConnection
from redis_helpers import body, new_record

from chute.protocol import Status
from chute_redis.queue import RedisQueue
from chute_redis.store import UPLOAD_PIECE, RedisStore

pytestmark = pytest.mark.anyio

API = "trips"


class RoundTrips:
    def __init__(self) -> None:
        self.count = 0

    def measure(self) -> _Window:
        return _Window(self)


class _Window:
    def __init__(self, trips: RoundTrips) -> None:
        self.trips = trips
        self.start = 0
        self.count = 0

    def __enter__(self) -> _Window:
        self.start = self.trips.count
        return self

    def __exit__(self, *exc: object) -> None:
        self.count = self.trips.count - self.start


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    trips = RoundTrips()
    send = AbstractConnection.send_packed_command

    async def counting(
        self: AbstractConnection, command: object, check_health: bool = True
    ) -> None:
        trips.count += 1
        await send(self, command, check_health)  # type: ignore[arg-type]

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return trips


async def _cycle(
    queue: RedisQueue, store: RedisStore, trips: RoundTrips, payload: bytes = b'{"x": 1}'
) -> dict[str, int]:
    """One request's whole life, counting each step's round trips."""
    record = new_record(API)
    counts: dict[str, int] = {}
    with trips.measure() as submit:
        await store.create(record, body(payload))
        await queue.send(API, record.id)
    counts["submit"] = submit.count
    with trips.measure() as take:
        # The dequeuer's path: the record read once, each move conditional on what it holds.
        [delivery] = await queue.receive(API, wait=1.0, lease=30.0)
        held = await store.read_live(API, record.id)
        held = await store.transition_versioned(
            API, record.id, Status.IN_PROGRESS, attempt=delivery.attempt, current=held
        )
        assert b"".join([c async for c in store.payload(API, record.id)]) == payload
    counts["start"] = take.count
    with trips.measure() as complete:
        await store.transition(
            API,
            record.id,
            Status.COMPLETED,
            attempt=delivery.attempt,
            result=b'{"y": 2}',
            current=held,
        )
        await queue.ack(delivery)
    counts["complete"] = complete.count
    with trips.measure() as get:
        assert await store.get(API, record.id) is not None
        assert await store.result(API, record.id) == b'{"y": 2}'
    counts["get"] = get.count
    return counts


async def test_submit_and_complete_round_trips(redis_url: str, round_trips: RoundTrips) -> None:
    async with RedisQueue(redis_url) as queue, RedisStore(redis_url) as store:
        await _cycle(queue, store, round_trips)  # connects and loads the scripts
        counts = await _cycle(queue, store, round_trips)
    # submit: create script + send script; start: receive script, read, compare-and-set,
    # payload (EXISTS and GETRANGE pipelined); complete: compare-and-set (on the version the
    # start's write returned: no read) + ack script. The receive also pays one BLPOP: the
    # first cycle's receive drained the queue, so this one starts on the wake list (which
    # saves a dequeuer waiting for its next request the script that would find it empty;
    # here the message is already there and the BLPOP answers at once).
    assert counts == {"submit": 2, "start": 5, "complete": 2, "get": 2}


async def test_a_large_payload_costs_one_more_round_trip_per_mebibyte(
    redis_url: str, round_trips: RoundTrips
) -> None:
    async with RedisQueue(redis_url) as queue, RedisStore(redis_url) as store:
        await _cycle(queue, store, round_trips)
        record = new_record(API)
        pieces = [b"x" * (64 * 1024)] * 48  # 3 MiB in 64 KiB chunks
        with round_trips.measure() as create:
            stored = await store.create(record, body(*pieces))
        assert stored.payload_size == 3 * UPLOAD_PIECE
        # three 1 MiB appends (the last one without the EXPIRE, pipelined anyway) + the script
        assert create.count == 4


async def _joint_cycle(queue: RedisQueue, store: RedisStore, trips: RoundTrips) -> dict[str, int]:
    """The same life on the joint fast path (queue and store on one server), as the
    dequeuer takes it."""
    joint = store.joint(queue)
    assert joint is not None
    record = new_record(API)
    counts: dict[str, int] = {}
    with trips.measure() as submit:
        await joint.submit(record, body(b'{"x": 1}'))  # created and queued in one script
    counts["submit"] = submit.count
    with trips.measure() as take:
        # Receive, record, (small) payload and the start in one script.
        [received] = await joint.receive(API, wait=1.0, lease=30.0, start=True)
        assert received.payload == b'{"x": 1}'
        assert received.started
        d = received.delivery
        held = received.found
    counts["start"] = take.count
    with trips.measure() as complete:
        acking = joint.acking(d)
        await store.transition_versioned(
            API,
            record.id,
            Status.COMPLETED,
            attempt=d.attempt,
            result=b"2",
            current=held,
            write=acking,
        )
        assert acking.acked
    counts["complete"] = complete.count
    return counts


async def test_joint_path_round_trips(redis_url: str, round_trips: RoundTrips) -> None:
    async with RedisQueue(redis_url) as queue, RedisStore(redis_url) as store:
        await _joint_cycle(queue, store, round_trips)
        counts = await _joint_cycle(queue, store, round_trips)
    # submit: create-and-send script; start: the joint receive script, which writes the start
    # too, and the BLPOP a receive after a drained one starts with (see above); complete: the
    # write-and-ack script.
    assert counts == {"submit": 1, "start": 2, "complete": 1}


async def test_no_joint_path_across_servers_or_databases(redis_url: str) -> None:
    """The joint scripts touch queue and store keys together: only on one server and db."""
    parts = urlsplit(redis_url)
    db = int(parts.path.strip("/") or 0)
    other_db = parts._replace(path=f"/{(db + 1) % 16}").geturl()
    async with RedisStore(redis_url) as store, RedisQueue(redis_url) as queue:
        assert store.joint(queue) is not None
        async with RedisQueue(other_db) as elsewhere:
            assert store.joint(elsewhere) is None
