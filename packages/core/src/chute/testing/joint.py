"""The joint contract: a backend whose store offers :meth:`~chute.backends.base.Store.joint`
with its queue proves that the fast path does exactly what the generic path does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import msgspec
import pytest

from chute.backends.base import Joint, Queue, Received, Settle, Store, Submit, Versioned, Write
from chute.errors import Conflict, LeaseLost, TransitionRejected
from chute.lifecycle import apply_transition, start_on_receive
from chute.protocol import ErrorInfo, Status, now, record_encoder
from chute.registry import open_queue, open_store
from chute.testing.contract import BackendContract
from chute.testing.store import body_of, new_record, read_all


class JointContract(BackendContract):
    """Subclass as ``class TestMyJoint(JointContract)`` and override ``backend_url`` (one URL
    for queue and store, on which ``store.joint(queue)`` must not be None)."""

    #: A payload larger than the backend sends along with a receive (it streams instead).
    large_payload: int = 1024 * 1024

    @pytest.fixture
    async def pair(self, backend_url: str) -> AsyncIterator[tuple[Queue, Store, Joint]]:
        async with open_queue(backend_url) as queue, open_store(backend_url) as store:
            joint = store.joint(queue)
            assert joint is not None, "the store offers no joint fast path with its queue"
            yield queue, store, joint

    async def submitted(self, queue: Queue, store: Store, api: str, payload: bytes) -> str:
        record = await store.create(new_record(api), body_of(payload))
        await queue.send(api, record.id)
        return record.id

    async def receive_one(self, joint: Joint, api: str, lease: float = 30.0) -> Received:
        with anyio.fail_after(10):
            [received] = await joint.receive(api, wait=5.0, lease=lease)
        return received

    async def test_receive_brings_the_live_record_and_small_payload(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """A joint receive is a receive plus ``read_live`` (and the payload when small). If
        this fails, the dequeuer starts requests from a wrong record or sends a wrong body."""
        queue, store, joint = pair
        small = await self.submitted(queue, store, api, b'{"x": 1}')
        received = await self.receive_one(joint, api)
        assert received.delivery.request_id == small
        assert received.delivery.attempt == 1
        assert received.found == await store.read_live(api, small)
        assert received.payload == b'{"x": 1}'

        big = b"y" * (self.large_payload + 1)
        large = await self.submitted(queue, store, api, big)
        received = await self.receive_one(joint, api)
        assert received.delivery.request_id == large
        assert received.found is not None
        assert received.payload is None or received.payload == big
        assert b"".join(await read_all(store.payload(api, large))) == big

    async def test_submit_creates_and_queues_together(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """``submit`` is ``create`` + ``send``; a taken id raises Conflict and queues nothing
        more. If this fails, the gateway's submits are lost or queued twice."""
        queue, store, joint = pair
        record = new_record(api)
        stored = await joint.submit(record, body_of(b'{"x": 1}'))
        assert stored.payload_size == 8
        assert await store.get(api, record.id) == stored
        assert (await queue.depth(api)).queued == 1
        with pytest.raises(Conflict):
            await joint.submit(record, body_of(b'{"x": 2}'))
        assert (await queue.depth(api)).queued == 1
        received = await self.receive_one(joint, api)
        assert received.delivery.request_id == record.id
        assert received.payload == b'{"x": 1}'
        big = b"z" * (self.large_payload * 2 + 5)  # streamed in pieces before the script
        large = await joint.submit(new_record(api), body_of(big))
        received = await self.receive_one(joint, api)
        assert received.delivery.request_id == large.id
        assert b"".join(await read_all(store.payload(api, large.id))) == big

    async def test_receive_of_a_missing_record(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """A message whose record is gone comes with no record (the dequeuer drops it). If
        this fails, the dequeuer calls the container for a deleted request."""
        queue, store, joint = pair
        rid = await self.submitted(queue, store, api, b"{}")
        await store.delete(api, rid)
        received = await self.receive_one(joint, api)
        assert received.delivery.request_id == rid
        assert received.found is None
        assert received.payload is None

    async def test_acking_write_stores_and_acks_in_one_step(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """Start from what the receive read, finish with the acking write: the outcome is
        stored and the message is gone. If this fails, completed requests are redelivered
        or their results lost."""
        queue, store, joint = pair
        rid = await self.submitted(queue, store, api, b"{}")
        received = await self.receive_one(joint, api)
        d = received.delivery
        held = await store.transition_versioned(
            api, rid, Status.IN_PROGRESS, attempt=d.attempt, current=received.found
        )
        acking = joint.acking(d)
        done, _ = await store.transition_versioned(
            api, rid, Status.COMPLETED, attempt=d.attempt, result=b"1", current=held, write=acking
        )
        assert acking.acked
        assert done == await store.get(api, rid)
        assert done.status is Status.COMPLETED
        assert await store.result(api, rid) == b"1"
        assert (await queue.depth(api)).in_flight == 0
        with pytest.raises(LeaseLost):
            await queue.ack(d)

    async def test_acking_write_after_a_concurrent_write(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """The record moved since it was read: an allowed move is made on the stored record
        (keeping what the other writer wrote) and acks; a refused one writes and acks nothing.
        If this fails, a webhook annotation is lost, or a cancelled request's message is
        acked with a result written over the cancellation."""
        queue, store, joint = pair
        rid = await self.submitted(queue, store, api, b"{}")
        received = await self.receive_one(joint, api)
        d = received.delivery
        held = await store.transition_versioned(
            api, rid, Status.IN_PROGRESS, attempt=d.attempt, current=received.found
        )
        await store.annotate(api, rid, note="kept")
        acking = joint.acking(d)
        done, _ = await store.transition_versioned(
            api, rid, Status.COMPLETED, attempt=d.attempt, result=b"1", current=held, write=acking
        )
        assert acking.acked
        assert done.extra == {"note": "kept"}
        assert await store.get(api, rid) == done

        other = await self.submitted(queue, store, api, b"{}")
        received = await self.receive_one(joint, api)
        d = received.delivery
        held = await store.transition_versioned(
            api, other, Status.IN_PROGRESS, attempt=d.attempt, current=received.found
        )
        await store.transition(api, other, Status.CANCELLED)
        acking = joint.acking(d)
        with pytest.raises(TransitionRejected):
            await store.transition_versioned(
                api,
                other,
                Status.COMPLETED,
                attempt=d.attempt,
                result=b"1",
                current=held,
                write=acking,
            )
        assert not acking.acked
        assert await store.result(api, other) is None
        assert (await queue.depth(api)).in_flight == 1  # the caller settles it
        await queue.ack(d)

    async def test_acking_write_when_the_lease_moved_on(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """The lease lapsed and the message was delivered again: the outcome of the attempt
        that still owns the record is stored, but the newer delivery's message is not acked.
        If this fails, a redelivered message vanishes under its new holder."""
        queue, store, joint = pair
        rid = await self.submitted(queue, store, api, b"{}")
        lease = max(queue.min_lease, 0.2)
        first = await self.receive_one(joint, api, lease=lease)
        held = await store.transition_versioned(
            api, rid, Status.IN_PROGRESS, attempt=1, current=first.found
        )
        await anyio.sleep(lease * 2)
        second = await self.receive_one(joint, api)
        assert second.delivery.attempt == 2
        acking = joint.acking(first.delivery)
        done, _ = await store.transition_versioned(
            api, rid, Status.COMPLETED, attempt=1, result=b"1", current=held, write=acking
        )
        assert done.status is Status.COMPLETED
        assert not acking.acked
        assert (await queue.depth(api)).in_flight == 1
        await queue.ack(second.delivery)

    # -- batches (a joint declaring ``max_batch`` above 1) -------------------------------

    async def receive_several(
        self, joint: Joint, api: str, n: int, lease: float = 30.0
    ) -> list[Received]:
        got: list[Received] = []
        with anyio.fail_after(10):
            while len(got) < n:
                got += await joint.receive(api, max_messages=n - len(got), wait=5.0, lease=lease)
        return got

    async def test_settle_many_gives_each_settle_its_own_outcome(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """One batch of three settles: one is stored and acked; one finds its record moved
        (nothing written, nothing acked); one lost its lease inside the batch (the message
        was delivered again: the outcome is stored, the new delivery is not acked), exactly as
        three :meth:`Joint.acking` writes would do. If this fails, one request's trouble
        loses or duplicates its batch-mates' outcomes."""
        queue, store, joint = pair
        if joint.max_batch <= 1:
            pytest.skip(f"{type(joint).__name__} declares no settle_many batches")
        lease = max(queue.min_lease, 0.2)
        ids = [await self.submitted(queue, store, api, b"{}") for _ in range(3)]
        received = {r.delivery.request_id: r for r in await self.receive_several(joint, api, 3)}
        assert set(received) == set(ids)
        fine, moved, lapsing = (received[i] for i in ids)
        held = {}
        for r in (fine, moved, lapsing):
            d = r.delivery
            held[d.request_id] = await store.transition_versioned(
                api, d.request_id, Status.IN_PROGRESS, attempt=d.attempt, current=r.found
            )
        await store.annotate(api, moved.delivery.request_id, note="moved")
        # The third's lease lapses and the message goes to another consumer.
        await queue.extend(lapsing.delivery, lease)
        await anyio.sleep(lease * 2)
        [again] = await self.receive_several(joint, api, 1)
        assert again.delivery.request_id == lapsing.delivery.request_id

        settles = []
        for r in (fine, moved, lapsing):
            d = r.delivery
            record, version = held[d.request_id]
            done = apply_transition(record, Status.COMPLETED, attempt=d.attempt, at=now())
            settles.append(Settle(d, done, version, b'"ok"'))
        outcome = await joint.settle_many(settles)
        assert [s.acked for s in outcome] == [True, False, False]
        assert outcome[0].version is not None
        assert outcome[2].version is not None
        assert outcome[1].version is None
        assert (await store.get(api, ids[0])).status is Status.COMPLETED  # type: ignore[union-attr]
        assert await store.result(api, ids[0]) == b'"ok"'
        still = await store.get(api, ids[1])
        assert still is not None
        assert still.status is Status.IN_PROGRESS
        assert await store.result(api, ids[1]) is None
        assert (await store.get(api, ids[2])).status is Status.COMPLETED  # type: ignore[union-attr]
        with pytest.raises(LeaseLost):
            await queue.ack(fine.delivery)
        await queue.ack(moved.delivery)  # still held: the caller settles it again
        await queue.ack(again.delivery)  # the new delivery kept its message
        assert (await queue.depth(api)).in_flight == 0
        assert await joint.settle_many([]) == []

    async def test_cancel_racing_a_batched_start(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """Two requests received in one batch; one is cancelled before the batched start is
        written. The start of the other is written; the cancelled one's is refused, and
        deciding again on the stored record (as ``transition`` does) rejects the start. If
        this fails, a batched start revives a cancelled request and the container runs it."""
        queue, store, joint = pair
        if store.max_batch <= 1:
            pytest.skip(f"{type(store).__name__} declares no write_many batches")
        ids = [await self.submitted(queue, store, api, b"{}") for _ in range(2)]
        got = {r.delivery.request_id: r for r in await self.receive_several(joint, api, 2)}
        await store.transition(api, ids[1], Status.CANCELLED)
        writes = []
        for rid in ids:
            r = got[rid]
            assert r.found is not None
            started = apply_transition(
                r.found[0], Status.IN_PROGRESS, attempt=r.delivery.attempt, at=now()
            )
            writes.append(Write(started, r.found[1]))
        versions = await store.write_many(writes)
        assert versions[0] is not None
        assert versions[1] is None
        assert (await store.get(api, ids[0])).status is Status.IN_PROGRESS  # type: ignore[union-attr]
        assert (await store.get(api, ids[1])).status is Status.CANCELLED  # type: ignore[union-attr]
        with pytest.raises(TransitionRejected):
            await store.transition(
                api, ids[1], Status.IN_PROGRESS, attempt=got[ids[1]].delivery.attempt
            )
        for r in got.values():
            await queue.ack(r.delivery)

    async def test_submit_many_gives_each_submit_its_own_answer(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """A batch of submits where one id is taken: the others are stored and queued, each
        answered with its stored record; the taken one is answered Conflict and nothing of it
        is queued, exactly as separate submits would be. If this fails, the gateway's
        coalesced submits answer a client with an id that will not run, or an error for a
        request that will."""
        queue, store, joint = pair
        if joint.max_batch <= 1:
            pytest.skip(f"{type(joint).__name__} declares no batches")
        taken = new_record(api)
        await joint.submit(taken, body_of(b"first"))
        await self.receive_several(joint, api, 1)  # leased: the queue holds nothing else
        fresh = [new_record(api) for _ in range(3)]
        items = [
            Submit(fresh[0], b'{"n": 0}'),
            Submit(taken, b"again"),
            Submit(fresh[1], b""),
            Submit(fresh[2], b"z" * (self.large_payload + 1)),
        ]
        answers = await joint.submit_many(items)
        assert isinstance(answers[1], Conflict)
        for i, record in zip((0, 2, 3), fresh, strict=True):
            stored = answers[i]
            assert not isinstance(stored, Exception), stored
            assert stored.id == record.id
            assert stored.payload_size == len(items[i].payload)
            assert await store.get(api, record.id) == stored
            assert b"".join(await read_all(store.payload(api, record.id))) == items[i].payload
        got = await self.receive_several(joint, api, 3)
        assert sorted(r.delivery.request_id for r in got) == sorted(r.id for r in fresh)
        assert (await queue.depth(api)).queued == 0
        assert b"".join(await read_all(store.payload(api, taken.id))) == b"first"
        assert await joint.submit_many([]) == []

    # -- start on receive (a joint declaring ``starts_on_receive``) -----------------------

    async def received_started(
        self,
        joint: Joint,
        api: str,
        *,
        lease: float = 30.0,
        queue_limit: float | None = None,
    ) -> Received:
        with anyio.fail_after(10):
            [received] = await joint.receive(
                api, wait=5.0, lease=lease, start=True, queue_limit=queue_limit
            )
        return received

    async def assert_as_the_reference(
        self,
        store: Store,
        received: Received,
        before: Versioned,
        *,
        queue_limit: float | None = None,
    ) -> None:
        """A started delivery holds exactly the record :func:`start_on_receive` makes of
        ``before`` (at the start's own time), as the store holds it, at a newer version; an
        unstarted one holds ``before`` unchanged."""
        d = received.delivery
        assert received.found is not None
        record, version = received.found
        assert await store.read_live(d.api, d.request_id) == received.found
        if not received.started:
            assert received.found == before
            return
        assert record.started_at is not None
        expected = start_on_receive(
            before[0], d.attempt, api_limit=queue_limit, at=record.started_at
        )
        assert record == expected
        assert record_encoder.encode(record) == record_encoder.encode(expected)
        assert version != before[1]

    def needs_start(self, joint: Joint) -> None:
        if not joint.starts_on_receive:
            pytest.skip(f"{type(joint).__name__} does not start on receive")

    async def test_start_on_receive_is_the_reference_start(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """A receive asked to start moves each startable record to ``in_progress`` for the
        delivery's attempt in the same step: the very record ``start_on_receive`` (the
        dequeuer's own start, ``apply_transition``) makes, whatever the record holds; the
        acking write then completes it from the version the receive answered. Not asked, it
        starts nothing. If this fails, a request started by the receive reads differently
        from one the dequeuer started (lost headers, extras, deadlines), or its outcome is
        refused."""
        queue, store, joint = pair
        self.needs_start(joint)
        tricky = '","attempt":9,"status":"x\\"}{'
        variants = [
            new_record(api),
            msgspec.structs.replace(new_record(api), content_type=None, headers=[]),
            msgspec.structs.replace(
                new_record(api),
                headers=[(tricky, tricky)],
                queue_deadline=now() + 600,
                timeout=12.5,
                cancel_requested=True,
                extra={"attempt": 3, "started_at": 1.5, "error": {"x": tricky}, "ü": [1, {}]},
            ),
        ]
        for record in variants:
            await store.create(record, body_of(b'{"x": 1}'))
            await queue.send(api, record.id)
            before = await store.read_live(api, record.id)
            assert before is not None
            received = await self.received_started(joint, api, queue_limit=60.0)
            assert received.started
            assert received.payload == b'{"x": 1}'
            await self.assert_as_the_reference(store, received, before, queue_limit=60.0)
            d = received.delivery
            acking = joint.acking(d)
            done, _ = await store.transition_versioned(
                api,
                d.request_id,
                Status.COMPLETED,
                attempt=d.attempt,
                result=b"1",
                current=received.found,
                write=acking,
            )
            assert acking.acked
            assert done.status is Status.COMPLETED
            assert done.started_at == received.found[0].started_at  # type: ignore[index]

        # Not asked to start: the record is as the receive read it.
        rid = await self.submitted(queue, store, api, b"{}")
        before = await store.read_live(api, rid)
        plain = await self.receive_one(joint, api)
        assert not plain.started
        assert plain.found == before
        await queue.ack(plain.delivery)

    async def test_start_on_receive_leaves_terminal_and_cancelled_records(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """A record cancelled before the receive (a cancel racing it and winning), or already
        finished (a duplicate message), comes back unstarted and unchanged, for the dequeuer
        to drop; a cancel after the receive started the record finds the new version and
        cancels the started request, and the started delivery's outcome is then refused. If
        this fails, a cancelled request is revived and runs, or a cancellation is lost."""
        queue, store, joint = pair
        self.needs_start(joint)
        cancelled = await self.submitted(queue, store, api, b"{}")
        await store.transition(api, cancelled, Status.CANCELLED)
        before = await store.read_live(api, cancelled)
        assert before is not None
        received = await self.received_started(joint, api)
        assert not received.started
        await self.assert_as_the_reference(store, received, before)
        await queue.ack(received.delivery)

        done = await self.submitted(queue, store, api, b"{}")
        first = await self.received_started(joint, api)
        d = first.delivery
        await store.transition(
            api, done, Status.COMPLETED, attempt=d.attempt, result=b"1", current=first.found
        )
        await queue.ack(d)
        await queue.send(api, done)  # a duplicate message of a finished request
        before = await store.read_live(api, done)
        assert before is not None
        again = await self.received_started(joint, api)
        assert again.delivery.request_id == done
        assert not again.started
        await self.assert_as_the_reference(store, again, before)
        await queue.ack(again.delivery)

        late = await self.submitted(queue, store, api, b"{}")
        started = await self.received_started(joint, api)
        assert started.started
        cancel = await store.transition(api, late, Status.CANCELLED)  # reads the new version
        assert cancel.status is Status.CANCELLED
        assert cancel.attempt == started.delivery.attempt
        with pytest.raises(TransitionRejected):
            await store.transition(
                api,
                late,
                Status.COMPLETED,
                attempt=started.delivery.attempt,
                result=b"1",
                current=started.found,
            )
        assert (await store.get(api, late)).status is Status.CANCELLED  # type: ignore[union-attr]
        await queue.ack(started.delivery)

    async def test_start_on_receive_leaves_a_request_past_its_queue_deadline(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """A request still queued past its queue deadline (its own, or created_at + the API's
        ``queue_limit``) comes back unstarted, for the dequeuer to expire; one within both is
        started. If this fails, a request that should expire unseen runs."""
        queue, store, joint = pair
        self.needs_start(joint)
        own = new_record(api, queue_deadline=now() - 1)
        await store.create(own, body_of(b"{}"))
        await queue.send(api, own.id)
        before = await store.read_live(api, own.id)
        assert before is not None
        received = await self.received_started(joint, api)
        assert not received.started
        await self.assert_as_the_reference(store, received, before)
        await queue.ack(received.delivery)

        rid = await self.submitted(queue, store, api, b"{}")
        before = await store.read_live(api, rid)
        assert before is not None
        await anyio.sleep(0.05)
        received = await self.received_started(joint, api, queue_limit=0.01)
        assert not received.started
        await self.assert_as_the_reference(store, received, before, queue_limit=0.01)
        await queue.ack(received.delivery)

        rid = await self.submitted(queue, store, api, b"{}")
        before = await store.read_live(api, rid)
        assert before is not None
        received = await self.received_started(joint, api, queue_limit=600.0)
        assert received.started
        await self.assert_as_the_reference(store, received, before, queue_limit=600.0)
        await queue.ack(received.delivery)

    async def test_start_on_receive_fences_a_redelivery(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """The first delivery started by its receive loses its lease; the redelivery (attempt
        2) starts the ``in_progress`` record again for its own attempt, the first holder's
        outcome is refused (its attempt was superseded) and its lease is gone, the second
        one's is stored and acked. A record whose attempt is not older than the delivery's
        is not started. If this fails, a lapsed holder overwrites the outcome of the attempt
        that took over, or a redelivered request never runs."""
        queue, store, joint = pair
        self.needs_start(joint)
        lease = max(queue.min_lease, 0.2)
        rid = await self.submitted(queue, store, api, b"{}")
        first = await self.received_started(joint, api, lease=lease)
        assert first.started
        assert first.found is not None
        assert first.found[0].attempt == 1
        await anyio.sleep(lease * 2)
        second = await self.received_started(joint, api)
        assert second.delivery.attempt == 2
        assert second.started
        await self.assert_as_the_reference(store, second, first.found)
        assert second.found is not None
        assert second.found[0].attempt == 2
        with pytest.raises(LeaseLost):
            await queue.extend(first.delivery, 30.0)
        with pytest.raises(TransitionRejected):
            await store.transition(
                api, rid, Status.COMPLETED, attempt=1, result=b"old", current=first.found
            )
        acking = joint.acking(second.delivery)
        done, _ = await store.transition_versioned(
            api,
            rid,
            Status.COMPLETED,
            attempt=2,
            result=b"new",
            current=second.found,
            write=acking,
        )
        assert acking.acked
        assert done.attempt == 2
        assert await store.result(api, rid) == b"new"

        ahead = msgspec.structs.replace(
            new_record(api), status=Status.IN_PROGRESS, attempt=5, started_at=now()
        )
        await store.create(ahead, body_of(b"{}"))
        await queue.send(api, ahead.id)
        before = await store.read_live(api, ahead.id)
        assert before is not None
        received = await self.received_started(joint, api)
        assert received.delivery.attempt == 1
        assert not received.started
        await self.assert_as_the_reference(store, received, before)
        await queue.ack(received.delivery)

    async def test_start_on_receive_of_a_retry(
        self, pair: tuple[Queue, Store, Joint], api: str
    ) -> None:
        """A request back in the queue for a retry (its last error still on it) is started by
        the next receive as the reference starts it (the error cleared), or left unstarted
        for the dequeuer's own start; either way the record is right. If this fails, a
        retried request keeps its old error or its attempt is not fenced."""
        queue, store, joint = pair
        self.needs_start(joint)
        rid = await self.submitted(queue, store, api, b"{}")
        first = await self.received_started(joint, api)
        assert first.started
        await store.transition(
            api,
            rid,
            Status.IN_QUEUE,
            attempt=1,
            error=ErrorInfo(type="http_error", message="500"),
            current=first.found,
        )
        await queue.release(first.delivery)
        before = await store.read_live(api, rid)
        assert before is not None
        retry = await self.received_started(joint, api)
        assert retry.delivery.attempt == 2
        await self.assert_as_the_reference(store, retry, before)
        if not retry.started:
            started = await store.transition(
                api, rid, Status.IN_PROGRESS, attempt=2, current=retry.found
            )
            assert started == start_on_receive(
                before[0], 2, api_limit=None, at=started.started_at or 0.0
            )
        assert (await store.get(api, rid)).error is None  # type: ignore[union-attr]
        await queue.ack(retry.delivery)
