"""The queue contract: what the dequeuer relies on from every queue backend."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest

from chute.backends.base import Delivery, Queue, QueueDepth
from chute.errors import BackendUnavailable, LeaseLost, Unsupported
from chute.protocol import new_request_id
from chute.registry import open_queue
from chute.testing.contract import BackendContract


class QueueContract(BackendContract):
    """Subclass as ``class TestMyQueue(QueueContract)`` and override ``backend_url``.

    The queue's capabilities are read from the queue under test (``Queue.supports_dead_letter``,
    ``supports_depth``, ``depth_counts_delayed_as_queued``, ``max_batch``, ``min_lease``): the
    cases of a capability it declares run, and for one it declares absent the suite checks
    that the methods raise :class:`~chute.errors.Unsupported`. The class attributes below are
    tuning knobs of the tests only (override them where the backend is slower).
    """

    #: Lease used where a test waits for a lease to lapse; raised to the queue's ``min_lease``.
    lease_seconds: float = 0.5
    #: ``wait`` for receives expected to find nothing (long-poll backends may need whole seconds).
    short_wait: float = 0.3
    #: How long depth counts may take to settle (0 for exact, immediately consistent counts).
    depth_settle_seconds: float = 0.0
    #: Consumers and messages in the concurrency test.
    consumers: int = 8
    messages: int = 200
    #: Upper bound for any single step; generous, the machine may be slow.
    step_timeout: float = 30.0

    @pytest.fixture
    async def queue(self, backend_url: str) -> AsyncIterator[Queue]:
        async with open_queue(backend_url) as queue:
            yield queue

    def lease(self, queue: Queue) -> float:
        return max(self.lease_seconds, queue.min_lease)

    async def receive_one(self, queue: Queue, api: str, *, lease: float = 30.0) -> Delivery:
        """Receive exactly one message, waiting as long as a step may take."""
        with anyio.fail_after(self.step_timeout):
            while True:
                got = await queue.receive(api, max_messages=1, wait=1.0, lease=lease)
                if got:
                    assert len(got) == 1, "receive returned more than max_messages=1"
                    return got[0]

    async def assert_depth(
        self,
        queue: Queue,
        api: str,
        *,
        queued: int,
        in_flight: int,
        dead: int = 0,
        delayed: int | None = None,
    ) -> None:
        """Check ``depth``, where the queue can count (else nothing to check);
        ``delayed`` only when given."""
        if not queue.supports_depth:
            return
        deadline = time.monotonic() + self.depth_settle_seconds
        while True:
            depth = await queue.depth(api)
            expected = QueueDepth(
                queued=queued,
                in_flight=in_flight,
                dead=dead,
                delayed=depth.delayed if delayed is None else delayed,
            )
            if depth == expected or time.monotonic() >= deadline:
                break
            await anyio.sleep(0.1)
        assert depth == expected

    def needs_dead_letter(self, queue: Queue) -> None:
        if not queue.supports_dead_letter:
            pytest.skip(f"{type(queue).__name__} declares supports_dead_letter = False")

    # -- sending and receiving -----------------------------------------------------------

    async def test_send_receive_ack(self, queue: Queue, api: str) -> None:
        """A sent id is delivered once, with attempt 1, and an acked message never comes
        back. If this fails, requests are lost or run twice."""
        request_id = new_request_id()
        await queue.send(api, request_id)
        delivery = await self.receive_one(queue, api, lease=self.lease(queue))
        assert (delivery.api, delivery.request_id, delivery.attempt) == (api, request_id, 1)
        assert delivery.receipt
        await queue.ack(delivery)
        # Wait past the lease: an acked message must not be redelivered.
        assert await queue.receive(api, wait=self.lease(queue) + self.short_wait) == []
        await self.assert_depth(queue, api, queued=0, in_flight=0)

    async def test_receive_returns_empty_after_wait(self, queue: Queue, api: str) -> None:
        """An empty queue blocks for about ``wait`` seconds, then returns []. If this fails,
        idle dequeuers either spin (burning CPU and backend calls) or hang on shutdown."""
        start = time.monotonic()
        assert await queue.receive(api, wait=self.short_wait) == []
        elapsed = time.monotonic() - start
        assert elapsed >= self.short_wait * 0.5, "receive returned at once instead of waiting"
        assert elapsed < self.short_wait + 5.0, "receive waited far longer than asked"

    async def test_receive_wakes_up_when_a_message_arrives(self, queue: Queue, api: str) -> None:
        """A receive that is already waiting returns soon after a message is sent, not at the
        end of its wait. If this fails, requests to an idle API start late."""
        request_id = new_request_id()
        got: list[Delivery] = []

        async def consumer() -> None:
            got.extend(await queue.receive(api, wait=20.0))

        with anyio.fail_after(self.step_timeout):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consumer)
                await anyio.sleep(0.2)
                start = time.monotonic()
                await queue.send(api, request_id)
        assert [d.request_id for d in got] == [request_id]
        assert time.monotonic() - start < 10.0, "the waiting receive did not wake up"

    async def test_receive_takes_at_most_max_messages(self, queue: Queue, api: str) -> None:
        """``max_messages`` bounds one receive, and every message still arrives. If this
        fails, a dequeuer leases more work than it can run and the leases lapse."""
        sent = [new_request_id() for _ in range(5)]
        for request_id in sent:
            await queue.send(api, request_id)
        received: list[str] = []
        with anyio.fail_after(self.step_timeout):
            while len(received) < len(sent):
                batch = await queue.receive(api, max_messages=3, wait=1.0)
                assert len(batch) <= 3
                for delivery in batch:
                    received.append(delivery.request_id)
                    await queue.ack(delivery)
        assert sorted(received) == sorted(sent)

    async def test_send_with_delay(self, queue: Queue, api: str) -> None:
        """A message sent with a delay stays hidden until the delay passes, and counts as
        queued meanwhile. If this fails, scheduled retries run early or never."""
        request_id = new_request_id()
        delay = self.lease(queue)
        await queue.send(api, request_id, delay=delay)
        start = time.monotonic()
        await self.assert_depth(queue, api, queued=1, in_flight=0)
        assert await queue.receive(api, wait=0.0) == []
        delivery = await self.receive_one(queue, api)
        assert time.monotonic() - start >= delay * 0.5
        assert (delivery.request_id, delivery.attempt) == (request_id, 1)

    # -- leases --------------------------------------------------------------------------

    async def test_lapsed_lease_redelivers_with_next_attempt(self, queue: Queue, api: str) -> None:
        """A message whose lease lapses (its consumer died) is delivered again, with attempt
        2 and a new receipt. If this fails, a crashed dequeuer loses requests for good."""
        request_id = new_request_id()
        await queue.send(api, request_id)
        lease = self.lease(queue)
        first = await self.receive_one(queue, api, lease=lease)
        second = await self.receive_one(queue, api, lease=lease)
        assert (second.request_id, second.attempt) == (request_id, first.attempt + 1)
        assert second.receipt != first.receipt
        await queue.ack(second)

    async def test_extend_keeps_the_lease(self, queue: Queue, api: str) -> None:
        """Extending a lease keeps the message from anyone else past the original lease's
        end. If this fails, long requests run twice at once."""
        await queue.send(api, new_request_id())
        lease = self.lease(queue)
        delivery = await self.receive_one(queue, api, lease=lease)
        await anyio.sleep(lease * 0.5)
        await queue.extend(delivery, lease * 4)
        # Now past the original lease's end, well within the extended one.
        assert await queue.receive(api, wait=lease) == []
        await self.assert_depth(queue, api, queued=0, in_flight=1)
        await queue.ack(delivery)

    async def test_lost_lease_cannot_extend_or_ack(self, queue: Queue, api: str) -> None:
        """Once a lapsed message went to another consumer, the old holder's extend and ack
        raise LeaseLost, and the new holder's ack works. If this fails, a slow worker can
        delete a message another worker is still running, or keep it forever."""
        await queue.send(api, new_request_id())
        lease = self.lease(queue)
        old = await self.receive_one(queue, api, lease=lease)
        new = await self.receive_one(queue, api, lease=30.0)
        with pytest.raises(LeaseLost):
            await queue.extend(old, 30.0)
        with pytest.raises(LeaseLost):
            await queue.ack(old)
        await queue.ack(new)

    async def test_lost_lease_cannot_release(self, queue: Queue, api: str) -> None:
        """The old holder of a taken-over message cannot give it back. If this fails, a
        slow worker's retry makes a running request visible to a third worker."""
        await queue.send(api, new_request_id())
        old = await self.receive_one(queue, api, lease=self.lease(queue))
        new = await self.receive_one(queue, api, lease=30.0)
        with pytest.raises(LeaseLost):
            await queue.release(old)
        await self.assert_depth(queue, api, queued=0, in_flight=1)
        await queue.ack(new)

    async def test_ack_twice_raises_lease_lost(self, queue: Queue, api: str) -> None:
        """Acking an already acked message raises LeaseLost. If this fails, a worker
        cannot tell that its message was settled by someone else."""
        await queue.send(api, new_request_id())
        delivery = await self.receive_one(queue, api)
        await queue.ack(delivery)
        with pytest.raises(LeaseLost):
            await queue.ack(delivery)

    async def test_release_makes_the_message_visible_again(self, queue: Queue, api: str) -> None:
        """A released message is delivered again at once, with the next attempt. If this
        fails, draining a dequeuer on shutdown delays its requests by a whole lease."""
        request_id = new_request_id()
        await queue.send(api, request_id)
        first = await self.receive_one(queue, api)
        await queue.release(first)
        start = time.monotonic()
        second = await self.receive_one(queue, api)
        assert (second.request_id, second.attempt) == (request_id, first.attempt + 1)
        assert time.monotonic() - start < 10.0
        await queue.ack(second)

    async def test_release_with_delay(self, queue: Queue, api: str) -> None:
        """A message released with a delay stays hidden (and queued) for the delay. If this
        fails, retry back-off does not hold and a failing request is hammered."""
        request_id = new_request_id()
        await queue.send(api, request_id)
        first = await self.receive_one(queue, api)
        delay = self.lease(queue) * 2
        await queue.release(first, delay=delay)
        start = time.monotonic()
        if queue.depth_counts_delayed_as_queued:
            await self.assert_depth(queue, api, queued=1, in_flight=0)
        assert await queue.receive(api, wait=0.0) == []
        second = await self.receive_one(queue, api)
        assert time.monotonic() - start >= delay * 0.5
        assert (second.request_id, second.attempt) == (request_id, first.attempt + 1)

    # -- depth ---------------------------------------------------------------------------

    async def test_depth_counts(self, queue: Queue, api: str) -> None:
        """``depth`` reports waiting, leased and dead messages, and which of the waiting ones
        are delayed. If this fails, autoscaling, the queue metrics and the dashboard's counts
        are wrong."""
        if not queue.supports_depth:
            pytest.skip(f"{type(queue).__name__} declares supports_depth = False")
        await self.assert_depth(queue, api, queued=0, in_flight=0, delayed=0)
        for _ in range(3):
            await queue.send(api, new_request_id())
        await queue.send(api, new_request_id(), delay=60.0)  # delayed ones count as queued
        await self.assert_depth(queue, api, queued=4, in_flight=0, delayed=1)
        first = await self.receive_one(queue, api)
        second = await self.receive_one(queue, api)
        await self.assert_depth(queue, api, queued=2, in_flight=2, delayed=1)
        await queue.ack(first)
        await self.assert_depth(queue, api, queued=2, in_flight=1, delayed=1)
        if queue.supports_dead_letter:
            await queue.dead_letter(second, "gave up")
            await self.assert_depth(queue, api, queued=2, in_flight=0, dead=1, delayed=1)

    async def test_depth_absent_is_said(self, queue: Queue, api: str) -> None:
        """A queue that declares it cannot count says so with Unsupported, never with wrong
        figures. If this fails, autoscaling and the metrics read a made-up backlog."""
        if queue.supports_depth:
            pytest.skip(f"{type(queue).__name__} declares supports_depth = True")
        with pytest.raises(Unsupported):
            await queue.depth(api)

    async def test_ack_many_gives_each_ack_its_own_outcome(self, queue: Queue, api: str) -> None:
        """Three deliveries acked in one batch, one of whose leases was lost inside it (it
        lapsed and the message went to another consumer): the two held ones are acked, the
        lost one answers False and its new delivery keeps the message, exactly as three
        ``ack`` calls would do. If this fails, batched acks lose redelivered messages or
        leave settled ones to come back."""
        if queue.max_batch <= 1:
            pytest.skip(f"{type(queue).__name__} declares no batches (max_batch 1)")
        lease = max(queue.min_lease, 0.2)
        a, b, c = (new_request_id() for _ in range(3))
        for rid in (a, b, c):
            await queue.send(api, rid)
        got: list[Delivery] = []
        with anyio.fail_after(10):
            while len(got) < 3:
                got += await queue.receive(api, max_messages=3, wait=5.0, lease=30.0)
        by_id = {d.request_id: d for d in got}
        await queue.extend(by_id[b], lease)
        await anyio.sleep(lease * 2)
        with anyio.fail_after(10):
            [again] = await queue.receive(api, wait=5.0, lease=30.0)
        assert again.request_id == b
        assert await queue.ack_many([by_id[a], by_id[b], by_id[c]]) == [True, False, True]
        await self.assert_depth(queue, api, queued=0, in_flight=1)
        for d in (by_id[a], by_id[c]):
            with pytest.raises(LeaseLost):
                await queue.ack(d)
        assert await queue.ack_many([again]) == [True]
        await self.assert_depth(queue, api, queued=0, in_flight=0)
        assert await queue.ack_many([]) == []

    async def test_apis_are_isolated(self, queue: Queue, api: str) -> None:
        """Each API has its own queue. If this fails, one API's container receives
        another API's requests."""
        other = f"{api}-other"
        mine, theirs = new_request_id(), new_request_id()
        await queue.send(api, mine)
        await queue.send(other, theirs)
        await self.assert_depth(queue, api, queued=1, in_flight=0)
        delivery = await self.receive_one(queue, other)
        assert (delivery.api, delivery.request_id) == (other, theirs)
        assert await queue.receive(other, wait=0.0) == []
        await queue.ack(delivery)
        delivery = await self.receive_one(queue, api)
        assert (delivery.api, delivery.request_id) == (api, mine)

    # -- dead letter ---------------------------------------------------------------------

    async def test_dead_letter_list_and_requeue(self, queue: Queue, api: str) -> None:
        """A dead-lettered message leaves the queue, is listed with its reason and attempts,
        and a requeue delivers it again with a higher attempt (so the store's fencing lets
        it run). If this fails, given-up requests cannot be inspected or retried."""
        self.needs_dead_letter(queue)
        request_id = new_request_id()
        await queue.send(api, request_id)
        delivery = await self.receive_one(queue, api)
        before = time.time()
        await queue.dead_letter(delivery, "container kept failing")
        assert await queue.receive(api, wait=0.0) == []
        [dead] = await queue.list_dead(api)
        assert (dead.api, dead.request_id, dead.reason) == (
            api,
            request_id,
            "container kept failing",
        )
        assert dead.attempts == delivery.attempt
        assert before - 60 <= dead.dead_at <= time.time() + 60
        assert await queue.requeue_dead(api) == 1
        assert await queue.list_dead(api) == []
        again = await self.receive_one(queue, api)
        assert again.request_id == request_id
        assert again.attempt > delivery.attempt

    async def test_requeue_named_dead_letters_and_purge(self, queue: Queue, api: str) -> None:
        """``requeue_dead`` with ids moves only those; ``purge_dead`` deletes the rest and
        says how many; ``list_dead`` lists oldest first up to ``limit``. If this fails, an
        operator's retry or clean-up touches the wrong requests."""
        self.needs_dead_letter(queue)
        ids = [new_request_id() for _ in range(3)]
        for request_id in ids:
            await queue.send(api, request_id)
            await queue.dead_letter(await self.receive_one(queue, api), "bad input")
        assert [d.request_id for d in await queue.list_dead(api)] == ids
        assert [d.request_id for d in await queue.list_dead(api, limit=2)] == ids[:2]
        assert await queue.requeue_dead(api, [ids[1]]) == 1
        assert await queue.requeue_dead(api, [new_request_id()]) == 0
        assert (await self.receive_one(queue, api)).request_id == ids[1]
        assert await queue.purge_dead(api) == 2
        assert await queue.list_dead(api) == []
        await self.assert_depth(queue, api, queued=0, in_flight=1, dead=0)

    async def test_dead_letter_with_lost_lease(self, queue: Queue, api: str) -> None:
        """Only the current holder may dead-letter a message. If this fails, a slow worker
        buries a request another worker is running."""
        self.needs_dead_letter(queue)
        await queue.send(api, new_request_id())
        old = await self.receive_one(queue, api, lease=self.lease(queue))
        new = await self.receive_one(queue, api, lease=30.0)
        with pytest.raises(LeaseLost):
            await queue.dead_letter(old, "too late")
        assert await queue.list_dead(api) == []
        await queue.ack(new)

    async def test_dead_letter_absent_is_said(self, queue: Queue, api: str) -> None:
        """A queue that declares no dead letter raises Unsupported from each dead-letter
        method (and the message stays its holder's). If this fails, a given-up request
        vanishes into a dead letter nobody can list."""
        if queue.supports_dead_letter:
            pytest.skip(f"{type(queue).__name__} declares supports_dead_letter = True")
        await queue.send(api, new_request_id())
        delivery = await self.receive_one(queue, api)
        with pytest.raises(Unsupported):
            await queue.dead_letter(delivery, "gave up")
        with pytest.raises(Unsupported):
            await queue.list_dead(api)
        with pytest.raises(Unsupported):
            await queue.requeue_dead(api)
        with pytest.raises(Unsupported):
            await queue.purge_dead(api)
        await queue.ack(delivery)

    # -- concurrency ---------------------------------------------------------------------

    async def test_concurrent_consumers_never_share_a_message(
        self, backend_url: str, queue: Queue, api: str
    ) -> None:
        """Many consumers on separate connections each get distinct messages, and every
        message is delivered. If this fails, replicas run the same request twice at once or
        leave requests behind."""
        ids = {new_request_id() for _ in range(self.messages)}
        seen: list[str] = []

        async def consume(consumer: Queue) -> None:
            async with consumer:
                while len(seen) < len(ids):
                    for delivery in await consumer.receive(
                        api, max_messages=5, wait=0.2, lease=60.0
                    ):
                        assert delivery.attempt == 1
                        seen.append(delivery.request_id)
                        await consumer.ack(delivery)

        async def produce() -> None:
            for request_id in ids:
                await queue.send(api, request_id)

        with anyio.fail_after(self.step_timeout * 2):
            async with anyio.create_task_group() as tg:
                for _ in range(self.consumers):
                    tg.start_soon(consume, open_queue(backend_url))
                tg.start_soon(produce)
        duplicates = [rid for rid, n in Counter(seen).items() if n > 1]
        assert duplicates == [], "a message was delivered to two consumers"
        assert set(seen) == ids
        await self.assert_depth(queue, api, queued=0, in_flight=0)

    # -- errors --------------------------------------------------------------------------

    async def test_ping(self, queue: Queue) -> None:
        """``ping`` succeeds on a live backend. If this fails, health checks report a
        working queue as down."""
        await queue.ping()

    @pytest.mark.parametrize(
        "operation",
        [
            pytest.param(lambda q, api: q.send(api, new_request_id()), id="send"),
            pytest.param(lambda q, api: q.receive(api, wait=0.0), id="receive"),
            pytest.param(lambda q, api: q.ping(), id="ping"),
        ],
    )
    async def test_unreachable_backend_raises_backend_unavailable(
        self,
        unreachable_url: str,
        api: str,
        operation: Callable[[Queue, str], Awaitable[object]],
    ) -> None:
        """A backend that cannot be reached raises chute's BackendUnavailable, not its
        SDK's exception. If this fails, the gateway answers 500 with a stack trace instead of
        503, and the dequeuer crashes instead of retrying."""
        with anyio.fail_after(self.step_timeout), pytest.raises(BackendUnavailable):
            async with open_queue(unreachable_url) as queue:
                await operation(queue, api)
