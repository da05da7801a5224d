"""The store contract: what the gateway and the dequeuer rely on from every store backend."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import msgspec
import pytest

from chute.backends.base import Store, Write
from chute.backends.listing import MAX_PAGE
from chute.errors import (
    BackendUnavailable,
    Conflict,
    InvalidRequestId,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    TransitionRejected,
    Unsupported,
)
from chute.lifecycle import ALLOWED
from chute.protocol import (
    EXTRA_RESULT_TYPE,
    ErrorInfo,
    RequestRecord,
    Status,
    new_request_id,
    now,
)
from chute.registry import open_store
from chute.testing.contract import BackendContract

_MiB = 1024 * 1024


def new_record(api: str, *, retention: float = 3600.0, **fields: Any) -> RequestRecord:
    """A fresh ``in_queue`` record, as the gateway writes it."""
    t = now()
    return RequestRecord(
        id=new_request_id(),
        api=api,
        status=Status.IN_QUEUE,
        created_at=t,
        expires_at=t + retention,
        content_type="application/json",
        headers=[("x-trace", "abc"), ("accept", "*/*")],
        **fields,
    )


async def body_of(data: bytes, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    """Stream ``data`` the way the gateway streams a request body: in small pieces."""
    view = memoryview(data)
    for start in range(0, len(data), piece):
        yield bytes(view[start : start + piece])


async def read_all(chunks: AsyncIterable[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


class StoreContract(BackendContract):
    """Subclass as ``class TestMyStore(StoreContract)`` and override ``backend_url``.

    The store's capabilities are read from the store under test (``Store.supports_listing``,
    ``purge_removes_expired``, ``max_batch``, and its ``max_payload_size``): the cases of a
    capability it declares run, and for one it declares absent the suite checks that the
    method raises :class:`~chute.errors.Unsupported`. The class attributes below are tuning
    knobs of the tests only.
    """

    #: Size of the large-payload round trip (at least 10 MiB; capped at ``max_payload_size``).
    large_payload_size: int = 10 * _MiB + 12345
    #: Retention used by the expiry tests, in seconds (they wait this long); long enough that a
    #: loaded machine reads the record back before it lapses.
    short_retention: float = 1.0
    #: Concurrent writers in the "exactly one wins" test.
    writers: int = 8

    @pytest.fixture
    async def store(self, backend_url: str) -> AsyncIterator[Store]:
        async with open_store(backend_url) as store:
            yield store

    async def created(self, store: Store, api: str, payload: bytes = b'{"x": 1}') -> RequestRecord:
        return await store.create(new_record(api), body_of(payload))

    async def in_status(self, store: Store, api: str, status: Status) -> RequestRecord:
        """A record brought to ``status`` by the moves the gateway and dequeuer make."""
        record = await self.created(store, api)
        if status is Status.IN_QUEUE:
            return record
        if status in (Status.CANCELLED, Status.EXPIRED):
            return await store.transition(api, record.id, status)
        await store.transition(api, record.id, Status.IN_PROGRESS, attempt=1)
        if status is Status.IN_PROGRESS:
            return await self.get(store, api, record.id)
        error = ErrorInfo("container_error", "boom") if status is Status.FAILED else None
        result = b'{"done": true}' if status is Status.COMPLETED else None
        return await store.transition(api, record.id, status, attempt=1, error=error, result=result)

    async def get(self, store: Store, api: str, request_id: str) -> RequestRecord:
        record = await store.get(api, request_id)
        assert record is not None, f"record {request_id} vanished"
        return record

    # -- records -------------------------------------------------------------------------

    async def test_create_and_get(self, store: Store, api: str) -> None:
        """A created record reads back equal, with its payload size filled in. If this
        fails, ``GET /<api>/<id>`` loses fields the gateway wrote."""
        record = new_record(api, extra={"tenant": "a"}, queue_deadline=now() + 60)
        payload = b'{"hello": "world"}'
        stored = await store.create(record, body_of(payload))
        assert stored == msgspec.structs.replace(record, payload_size=len(payload))
        assert await store.get(api, record.id) == stored

    async def test_unknown_id(self, store: Store, api: str) -> None:
        """An unknown id reads as None, cannot be moved (NotFound), has no payload or result
        and deletes as False. If this fails, ``GET`` of a wrong id answers 500, not 404."""
        request_id = new_request_id()
        assert await store.get(api, request_id) is None
        with pytest.raises(NotFound):
            await store.transition(api, request_id, Status.IN_PROGRESS, attempt=1)
        with pytest.raises(NotFound):
            await read_all(store.payload(api, request_id))
        assert await store.result(api, request_id) is None
        assert await store.delete(api, request_id) is False

    @pytest.mark.parametrize("bad_id", ["../etc/passwd", "a/b", "", "x" * 129, "-x", "a b", "é"])
    async def test_invalid_ids_are_rejected(self, store: Store, api: str, bad_id: str) -> None:
        """Ids that are not safe as storage keys raise InvalidRequestId before any storage
        call. If this fails, a crafted id could read or overwrite another key."""
        operations: list[Callable[[], Awaitable[object]]] = [
            lambda: store.get(api, bad_id),
            lambda: store.transition(api, bad_id, Status.CANCELLED),
            lambda: store.create(
                msgspec.structs.replace(new_record(api), id=bad_id), body_of(b"{}")
            ),
            lambda: read_all(store.payload(api, bad_id)),
            lambda: store.result(api, bad_id),
            lambda: store.delete(api, bad_id),
        ]
        for operation in operations:
            with pytest.raises(InvalidRequestId):
                await operation()

    async def test_create_twice_conflicts(self, store: Store, api: str) -> None:
        """Creating an id that exists raises Conflict and leaves the first record and payload
        intact. If this fails, an id collision overwrites someone else's request."""
        record = await self.created(store, api, b'{"first": 1}')
        with pytest.raises(Conflict):
            await store.create(msgspec.structs.replace(record, payload_size=0), body_of(b"{}"))
        assert await store.get(api, record.id) == record
        assert b"".join(await read_all(store.payload(api, record.id))) == b'{"first": 1}'

    async def test_apis_are_isolated(self, store: Store, api: str) -> None:
        """The same id under two APIs names two records. If this fails, one API can read
        another API's results."""
        record = await self.created(store, api)
        other = f"{api}-other"
        assert await store.get(other, record.id) is None
        twin = await store.create(msgspec.structs.replace(record, api=other), body_of(b"[]"))
        await store.transition(other, twin.id, Status.CANCELLED)
        assert (await self.get(store, api, record.id)).status is Status.IN_QUEUE

    async def test_delete(self, store: Store, api: str) -> None:
        """``delete`` removes the record, payload and result, and says whether there was
        anything. If this fails, deleted requests keep occupying storage or reappear."""
        record = await self.in_status(store, api, Status.COMPLETED)
        assert await store.delete(api, record.id) is True
        assert await store.get(api, record.id) is None
        assert await store.result(api, record.id) is None
        with pytest.raises(NotFound):
            await read_all(store.payload(api, record.id))
        assert await store.delete(api, record.id) is False

    # -- transitions ---------------------------------------------------------------------

    async def test_life_of_a_request(self, store: Store, api: str) -> None:
        """in_queue → in_progress (attempt 1) → completed with a result, timestamps set.
        If this fails, no request can ever complete."""
        record = await self.created(store, api)
        started = await store.transition(api, record.id, Status.IN_PROGRESS, attempt=1)
        assert (started.status, started.attempt) == (Status.IN_PROGRESS, 1)
        assert started.started_at is not None
        assert await store.result(api, record.id) is None
        done = await store.transition(
            api, record.id, Status.COMPLETED, attempt=1, result=b'{"answer": 42}'
        )
        assert await store.get(api, record.id) == done
        assert done.finished_at is not None
        assert done.finished_at >= started.started_at
        assert await store.result(api, record.id) == b'{"answer": 42}'

    async def test_retry_then_new_attempt(self, store: Store, api: str) -> None:
        """A failed attempt goes back to in_queue and the next delivery (attempt 2) takes it.
        If this fails, retries are impossible."""
        record = await self.in_status(store, api, Status.IN_PROGRESS)
        await store.transition(api, record.id, Status.IN_QUEUE, attempt=1)
        again = await store.transition(api, record.id, Status.IN_PROGRESS, attempt=2)
        assert (again.status, again.attempt) == (Status.IN_PROGRESS, 2)

    async def test_failure_keeps_its_reason(self, store: Store, api: str) -> None:
        """A failed record keeps the error it failed with. If this fails, users see
        ``failed`` with no reason."""
        record = await self.in_status(store, api, Status.FAILED)
        stored = await self.get(store, api, record.id)
        assert stored.status is Status.FAILED
        assert stored.error == ErrorInfo("container_error", "boom")
        assert await store.result(api, record.id) is None

    @pytest.mark.parametrize("current", list(Status))
    async def test_forbidden_moves_are_rejected(
        self, store: Store, api: str, current: Status
    ) -> None:
        """Every move the state machine forbids raises TransitionRejected and changes
        nothing; terminal records never change. If this fails, a status can go backwards
        or a finished request's outcome can be overwritten."""
        record = await self.in_status(store, api, current)
        before = await self.get(store, api, record.id)
        result_before = await store.result(api, record.id)
        for to in Status:
            if to in ALLOWED.get(current, frozenset()):
                continue
            attempt = before.attempt + 1 if to is Status.IN_PROGRESS else before.attempt
            result = b'{"late": true}' if to is Status.COMPLETED else None
            with pytest.raises(TransitionRejected):
                await store.transition(api, record.id, to, attempt=attempt, result=result)
            assert await store.get(api, record.id) == before, f"{current} → {to} changed it"
            assert await store.result(api, record.id) == result_before

    async def test_late_duplicate_cannot_overwrite_completed(self, store: Store, api: str) -> None:
        """A duplicate delivery arriving after completion (attempt 2) is rejected and the
        result stays. If this fails, at-least-once delivery overwrites finished results."""
        record = await self.in_status(store, api, Status.COMPLETED)
        with pytest.raises(TransitionRejected):
            await store.transition(api, record.id, Status.IN_PROGRESS, attempt=2)
        with pytest.raises(TransitionRejected):
            await store.transition(
                api, record.id, Status.COMPLETED, attempt=2, result=b'{"late": 1}'
            )
        assert (await self.get(store, api, record.id)).status is Status.COMPLETED
        assert await store.result(api, record.id) == b'{"done": true}'

    async def test_superseded_attempt_cannot_finish(self, store: Store, api: str) -> None:
        """When attempt 2 took over (attempt 1's lease lapsed), attempt 1 can neither
        complete, fail nor retry; attempt 2 completes. If this fails, a zombie worker
        overwrites the outcome of the attempt that replaced it."""
        record = await self.in_status(store, api, Status.IN_PROGRESS)
        await store.transition(api, record.id, Status.IN_PROGRESS, attempt=2)
        for to in (Status.COMPLETED, Status.FAILED, Status.IN_QUEUE):
            with pytest.raises(TransitionRejected):
                await store.transition(
                    api, record.id, to, attempt=1, result=b"{}" if to is Status.COMPLETED else None
                )
        with pytest.raises(TransitionRejected):
            await store.transition(api, record.id, Status.IN_PROGRESS, attempt=2)
        done = await store.transition(api, record.id, Status.COMPLETED, attempt=2, result=b"2")
        assert done.attempt == 2
        assert await store.result(api, record.id) == b"2"

    async def test_cancel_and_expire_need_no_attempt(self, store: Store, api: str) -> None:
        """Anyone may cancel a queued or running request, or expire a queued one. If this
        fails, cancellation and queue deadlines do not work."""
        running = await self.in_status(store, api, Status.IN_PROGRESS)
        cancelled = await store.transition(api, running.id, Status.CANCELLED)
        assert cancelled.status is Status.CANCELLED
        assert cancelled.finished_at is not None
        queued = await self.created(store, api)
        assert (await store.transition(api, queued.id, Status.EXPIRED)).status is Status.EXPIRED

    async def test_transition_from_what_the_caller_holds(self, store: Store, api: str) -> None:
        """``transition(current=…)`` moves from the record and version the caller read (the
        dequeuer's path: ``read_live`` → start → finish, without re-reading), and the version
        ``transition_versioned`` returns is good for the next move. If this fails, the
        dequeuer's moves fail or store the wrong record."""
        record = await self.created(store, api)
        held = await store.read_live(api, record.id)
        assert held is not None
        assert held[0] == record
        started, version = await store.transition_versioned(
            api, record.id, Status.IN_PROGRESS, attempt=1, current=held
        )
        assert started.status is Status.IN_PROGRESS
        assert started.attempt == 1
        assert await self.get(store, api, record.id) == started
        done = await store.transition(
            api, record.id, Status.COMPLETED, attempt=1, result=b"1", current=(started, version)
        )
        assert done.status is Status.COMPLETED
        assert await self.get(store, api, record.id) == done
        assert await store.result(api, record.id) == b"1"
        assert await store.read_live(api, new_request_id()) is None

    async def test_transition_from_a_stale_record_decides_on_the_stored_one(
        self, store: Store, api: str
    ) -> None:
        """A ``current`` that is out of date (someone wrote since it was read) never wins
        over the store: the move is decided again on the stored record, so a cancelled or
        superseded request is not overwritten, and an allowed move still happens. If this
        fails, the fast path loses cancellations or newer attempts' outcomes."""
        record = await self.created(store, api)
        stale = await store.read_live(api, record.id)
        assert stale is not None
        await store.transition(api, record.id, Status.CANCELLED)
        with pytest.raises(TransitionRejected):
            await store.transition(api, record.id, Status.IN_PROGRESS, attempt=1, current=stale)
        assert (await self.get(store, api, record.id)).status is Status.CANCELLED

        # Stale and rejected on what it says, allowed on what the store holds.
        other = await self.created(store, api)
        await store.transition(api, other.id, Status.IN_PROGRESS, attempt=1)
        old = await store.read_live(api, other.id)
        assert old is not None
        await store.transition(api, other.id, Status.IN_QUEUE, attempt=1)
        await store.transition(api, other.id, Status.IN_PROGRESS, attempt=2)
        with pytest.raises(TransitionRejected):  # attempt 1 is superseded in the store
            await store.transition(
                api, other.id, Status.COMPLETED, attempt=1, result=b"1", current=old
            )
        started = await store.transition(api, other.id, Status.IN_PROGRESS, attempt=3, current=old)
        assert started.attempt == 3
        assert (await self.get(store, api, other.id)).attempt == 3

        # Stale but allowed on both: written on the stored record, keeping what others wrote.
        third = await self.created(store, api)
        held = await store.read_live(api, third.id)
        assert held is not None
        await store.annotate(api, third.id, note="kept")
        moved = await store.transition(api, third.id, Status.IN_PROGRESS, attempt=1, current=held)
        assert moved.extra == {"note": "kept"}
        assert await self.get(store, api, third.id) == moved

    async def test_transition_merges_extra(self, store: Store, api: str) -> None:
        """``extra`` given with a move is merged into the record's ``extra`` atomically with
        it. If this fails, a dead-lettered request cannot be recognised for a requeue."""
        record = await self.created(store, api)
        await store.annotate(api, record.id, keep="me")
        await store.transition(api, record.id, Status.IN_PROGRESS, attempt=1)
        failed = await store.transition(
            api,
            record.id,
            Status.FAILED,
            attempt=1,
            error=ErrorInfo("timeout", "too slow"),
            extra={"dead_lettered": True},
        )
        stored = await self.get(store, api, record.id)
        assert stored == failed
        assert stored.extra == {"keep": "me", "dead_lettered": True}

    @pytest.mark.parametrize("current", list(Status))
    async def test_annotate_changes_only_extra(
        self, store: Store, api: str, current: Status
    ) -> None:
        """``annotate`` merges keys into ``extra`` in every status, terminal ones included,
        and changes nothing else (status, attempt, error, result). If this fails, a webhook's
        outcome cannot be recorded on a finished request, or recording it corrupts it."""
        record = await self.in_status(store, api, current)
        before = await self.get(store, api, record.id)
        result_before = await store.result(api, record.id)
        outcome = {"event": current.value, "status": "delivered", "attempts": 1}
        annotated = await store.annotate(api, record.id, webhook=outcome)
        second = await store.annotate(api, record.id, other=[1, "two"])
        stored = await self.get(store, api, record.id)
        assert stored == second
        assert annotated.extra == {**before.extra, "webhook": outcome}
        assert stored.extra == {**before.extra, "webhook": outcome, "other": [1, "two"]}
        assert msgspec.structs.replace(stored, extra=before.extra) == before
        assert await store.result(api, record.id) == result_before
        with pytest.raises(NotFound):
            await store.annotate(api, new_request_id(), webhook=outcome)

    async def test_concurrent_annotations_and_transition_are_all_kept(
        self, backend_url: str, store: Store, api: str
    ) -> None:
        """Annotations racing with each other and with a transition, on separate connections,
        are all kept (each is a conditional write retried on a conflict). If this fails, a
        webhook outcome can wipe out a status change or the other way round."""
        record = await self.in_status(store, api, Status.IN_PROGRESS)
        keys = [f"k{i}" for i in range(self.writers)]

        async def annotate(key: str, other: Store) -> None:
            async with other:
                await other.annotate(api, record.id, **{key: key})

        async def finish(other: Store) -> None:
            async with other:
                await other.transition(api, record.id, Status.COMPLETED, attempt=1, result=b"1")

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(finish, open_store(backend_url))
                for key in keys:
                    tg.start_soon(annotate, key, open_store(backend_url))
        stored = await self.get(store, api, record.id)
        assert stored.status is Status.COMPLETED
        assert stored.extra == {key: key for key in keys}
        assert await store.result(api, record.id) == b"1"

    async def test_requeue_of_a_dead_letter(self, store: Store, api: str) -> None:
        """A failed, dead-lettered record goes back to ``in_queue`` keeping its attempt and
        last error; the requeued message's next delivery (a newer attempt) starts it, and the
        old attempt stays fenced out. If this fails, ``chute dead-letter requeue`` cannot
        retry a request, or a stale worker could overwrite the retried one."""
        record = await self.created(store, api)
        await store.transition(api, record.id, Status.IN_PROGRESS, attempt=3)
        error = ErrorInfo("container_status", "got 503", status_code=503)
        await store.transition(
            api, record.id, Status.FAILED, attempt=3, error=error, extra={"dead_lettered": True}
        )
        requeued = await store.requeue(api, record.id)
        stored = await self.get(store, api, record.id)
        assert stored == requeued
        assert (stored.status, stored.attempt, stored.error) == (Status.IN_QUEUE, 3, error)
        assert stored.finished_at is None
        assert "dead_lettered" not in stored.extra
        with pytest.raises(TransitionRejected):
            await store.requeue(api, record.id)  # once: it is no longer a dead letter
        with pytest.raises(TransitionRejected):
            await store.transition(api, record.id, Status.IN_PROGRESS, attempt=3)
        await store.transition(api, record.id, Status.IN_PROGRESS, attempt=4)
        with pytest.raises(TransitionRejected):
            await store.transition(api, record.id, Status.COMPLETED, attempt=3, result=b"0")
        done = await store.transition(api, record.id, Status.COMPLETED, attempt=4, result=b"4")
        assert (done.status, done.attempt, done.error) == (Status.COMPLETED, 4, None)

    @pytest.mark.parametrize("current", list(Status))
    async def test_requeue_refuses_anything_but_a_dead_letter(
        self, store: Store, api: str, current: Status
    ) -> None:
        """Every record that is not a failed dead letter (a plain ``failed`` one included)
        refuses a requeue and stays as it was. If this fails, an admin command can resurrect
        a finished request."""
        record = await self.in_status(store, api, current)
        before = await self.get(store, api, record.id)
        with pytest.raises(TransitionRejected):
            await store.requeue(api, record.id)
        assert await self.get(store, api, record.id) == before
        with pytest.raises(NotFound):
            await store.requeue(api, new_request_id())

    async def test_concurrent_writers_exactly_one_wins(
        self, backend_url: str, store: Store, api: str
    ) -> None:
        """Writers on separate connections racing to finish the same attempt: exactly one
        succeeds, the rest get TransitionRejected, and the winner's result is stored. If this
        fails, duplicate deliveries can both write a result."""
        record = await self.in_status(store, api, Status.IN_PROGRESS)
        winners: list[int] = []
        losers: list[int] = []

        async def finish(writer: int, other: Store) -> None:
            async with other:
                try:
                    await other.transition(
                        api,
                        record.id,
                        Status.COMPLETED,
                        attempt=1,
                        result=msgspec.json.encode({"writer": writer}),
                    )
                except TransitionRejected:
                    losers.append(writer)
                else:
                    winners.append(writer)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for writer in range(self.writers):
                    tg.start_soon(finish, writer, open_store(backend_url))
        assert len(winners) == 1, f"winners: {winners}"
        assert len(losers) == self.writers - 1
        assert await store.result(api, record.id) == msgspec.json.encode({"writer": winners[0]})

    async def test_write_if_with_a_stale_version_fails(self, store: Store, api: str) -> None:
        """The conditional-write primitive refuses a version that is no longer current.
        If this fails, the state machine's checks race with concurrent writers."""
        record = await self.created(store, api)
        found = await store.read(api, record.id)
        assert found is not None
        _, version = found
        moved = msgspec.structs.replace(record, status=Status.CANCELLED)
        assert await store.write_if(moved, version) is True
        assert await store.write_if(moved, version) is False
        assert (await self.get(store, api, record.id)).status is Status.CANCELLED

    # -- batches (stores declaring ``max_batch`` above 1) ---------------------------------

    def needs_batches(self, store: Store) -> None:
        if store.max_batch <= 1:
            pytest.skip(f"{type(store).__name__} declares no write_many batches (max_batch 1)")

    async def test_write_many_gives_each_write_its_own_outcome(
        self, store: Store, api: str
    ) -> None:
        """A batch whose middle write's condition fails: the others are written, that one is
        not, and each answer is what ``write_next`` alone would have said (the version a next
        write may name). If this fails, one moved record sinks or corrupts a whole batch of
        starts or outcomes."""
        self.needs_batches(store)
        records = [await self.created(store, api) for _ in range(3)]
        held = [await store.read(api, r.id) for r in records]
        assert all(h is not None for h in held)
        await store.annotate(api, records[1].id, note="moved")  # its version moves on
        writes = [
            Write(msgspec.structs.replace(h[0], status=Status.CANCELLED), h[1], None)
            for h in held
            if h is not None
        ]
        versions = await store.write_many(writes)
        assert len(versions) == 3
        assert versions[1] is None
        assert (await self.get(store, api, records[1].id)).extra == {"note": "moved"}
        assert (await self.get(store, api, records[1].id)).status is Status.IN_QUEUE
        for i in (0, 2):
            assert versions[i] is not None
            assert (await self.get(store, api, records[i].id)).status is Status.CANCELLED
            # The version told is the one a following conditional write names.
            again = msgspec.structs.replace(writes[i].record, extra={"after": True})
            assert await store.write_next(again, versions[i]) is not None
        assert await store.write_many([]) == []

    async def test_write_many_with_a_result(self, store: Store, api: str) -> None:
        """Results travel with their own write in a batch, and only there."""
        self.needs_batches(store)
        a, b = await self.created(store, api), await self.created(store, api)
        ha, hb = await store.read(api, a.id), await store.read(api, b.id)
        assert ha is not None
        assert hb is not None
        done = [
            Write(msgspec.structs.replace(ha[0], status=Status.COMPLETED), ha[1], b'{"a":1}'),
            Write(msgspec.structs.replace(hb[0], status=Status.CANCELLED), hb[1], None),
        ]
        assert None not in await store.write_many(done)
        assert await store.result(api, a.id) == b'{"a":1}'
        assert await store.result(api, b.id) is None

    # -- listing (stores declaring ``supports_listing``) --------------------------------

    def needs_listing(self, store: Store) -> None:
        if not store.supports_listing:
            pytest.skip(f"{type(store).__name__} declares supports_listing = False")

    async def listed(
        self, store: Store, api: str, *, status: Status | None = None, limit: int = 3
    ) -> list[RequestRecord]:
        """Every record the listing gives, page after page (each page at most ``limit``)."""
        records: list[RequestRecord] = []
        cursor: str | None = None
        while True:
            page = await store.list_requests(api, status=status, limit=limit, cursor=cursor)
            assert len(page.records) <= limit
            records += page.records
            if page.cursor is None:
                return records
            assert page.records, "a page with a cursor must hold records"
            cursor = page.cursor

    async def test_listing_is_newest_first_and_pages(self, store: Store, api: str) -> None:
        """An API's requests list newest first, page after page with the cursor, none twice
        and none skipped, and not another API's. If this fails, the dashboard's list of recent
        requests repeats, loses or mixes up requests."""
        self.needs_listing(store)
        made = [await self.created(store, api) for _ in range(7)]
        await self.created(store, f"{api}-other")
        newest_first = sorted(made, key=lambda r: (r.created_at, r.id), reverse=True)
        assert [r.id for r in await self.listed(store, api)] == [r.id for r in newest_first]
        assert [r.id for r in await self.listed(store, api, limit=100)] == [
            r.id for r in newest_first
        ]
        first = await store.list_requests(api, limit=7)
        assert (len(first.records), first.cursor) == (7, None)

    async def test_listing_by_status(self, store: Store, api: str) -> None:
        """Filtered by status, the listing holds exactly the requests now in it, as stored,
        and follows their moves. If this fails, "failed requests" shows the wrong ones."""
        self.needs_listing(store)
        by_status = {status: await self.in_status(store, api, status) for status in Status}
        for status, record in by_status.items():
            assert await self.listed(store, api, status=status) == [
                await self.get(store, api, record.id)
            ], status
        queued = by_status[Status.IN_QUEUE]
        await store.transition(api, queued.id, Status.CANCELLED)
        assert await self.listed(store, api, status=Status.IN_QUEUE) == []
        cancelled = await self.listed(store, api, status=Status.CANCELLED)
        assert {r.id for r in cancelled} == {queued.id, by_status[Status.CANCELLED].id}

    async def test_listing_leaves_out_expired_records(self, store: Store, api: str) -> None:
        """A request past its retention is not listed. If this fails, the dashboard shows
        requests whose results are gone."""
        self.needs_listing(store)
        short = await store.create(new_record(api, retention=self.short_retention), body_of(b"{}"))
        live = await self.created(store, api)
        assert {r.id for r in await self.listed(store, api)} == {short.id, live.id}
        await anyio.sleep(max(0.0, short.expires_at - now()) + 0.1)
        assert [r.id for r in await self.listed(store, api)] == [live.id]

    async def test_listing_refuses_bad_pages(self, store: Store, api: str) -> None:
        """A page size out of range or a cursor the store did not make is refused with
        ProtocolError (the gateway answers 400). If this fails, a crafted query reads as a
        server error or scans without bound."""
        self.needs_listing(store)
        for limit in (0, -1, MAX_PAGE + 1):
            with pytest.raises(ProtocolError):
                await store.list_requests(api, limit=limit)
        for cursor in ("", "nonsense", "1.5~../x", "x~abc"):
            with pytest.raises(ProtocolError):
                await store.list_requests(api, cursor=cursor)

    async def test_listing_absent_is_said(self, store: Store, api: str) -> None:
        """A store that declares it cannot list says so with Unsupported. If this fails, a
        page asking for the list gets a crash instead of "this backend cannot list"."""
        if store.supports_listing:
            pytest.skip(f"{type(store).__name__} declares supports_listing = True")
        with pytest.raises(Unsupported):
            await store.list_requests(api)

    # -- payloads and results ------------------------------------------------------------

    async def test_result_round_trip(self, store: Store, api: str) -> None:
        """A JSON result comes back byte for byte (unicode, nesting, ~1 MiB). If this fails,
        users get a corrupted or truncated result."""
        value = {"text": "héllo ✓ \u2028", "nested": [1, 2.5, None, {"a": True}], "pad": "x" * _MiB}
        result = msgspec.json.encode(value)
        record = await self.in_status(store, api, Status.IN_PROGRESS)
        await store.transition(api, record.id, Status.COMPLETED, attempt=1, result=result)
        stored = await store.result(api, record.id)
        assert stored == result
        assert msgspec.json.decode(stored) == value

    async def test_binary_result_round_trip(self, store: Store, api: str) -> None:
        """A result that is not JSON (an API with ``results.content_type: any``: an image, a
        file) comes back byte for byte, every byte value, with its type in the record. If
        this fails, users get a corrupted file or a result of the wrong type."""
        result = bytes(range(256)) * 4096 + b"\x00\xff\r\n"  # ~1 MiB, not UTF-8
        record = await self.in_status(store, api, Status.IN_PROGRESS)
        done = await store.transition(
            api,
            record.id,
            Status.COMPLETED,
            attempt=1,
            result=result,
            extra={EXTRA_RESULT_TYPE: "image/png"},
        )
        assert done.extra[EXTRA_RESULT_TYPE] == "image/png"
        assert await store.result(api, record.id) == result
        assert (await self.get(store, api, record.id)).extra[EXTRA_RESULT_TYPE] == "image/png"

    async def test_large_payload_round_trip(self, store: Store, api: str) -> None:
        """A payload of at least 10 MiB is stored and streamed back unchanged, in more than
        one chunk. If this fails, large requests are lost, corrupted or held in memory."""
        size = self.large_payload_size
        if store.max_payload_size is not None:
            size = min(size, store.max_payload_size)
        data = random.Random(size).randbytes(size)
        record = await store.create(new_record(api), body_of(data))
        assert record.payload_size == size
        digest = hashlib.sha256()
        chunks = 0
        async for chunk in store.payload(api, record.id):
            assert isinstance(chunk, bytes)
            digest.update(chunk)
            chunks += 1
        assert digest.digest() == hashlib.sha256(data).digest()
        assert chunks > 1, "the payload came back in one piece: it was not streamed"

    async def test_empty_payload(self, store: Store, api: str) -> None:
        """An empty body is a valid payload. If this fails, ``POST`` with no body breaks."""
        record = await store.create(new_record(api), body_of(b""))
        assert record.payload_size == 0
        assert b"".join(await read_all(store.payload(api, record.id))) == b""

    async def test_payload_too_large(self, store: Store, api: str) -> None:
        """Above the backend's ``max_payload_size`` create raises PayloadTooLarge and leaves
        nothing behind. If this fails, oversize uploads half-succeed."""
        limit = store.max_payload_size
        if limit is None:
            pytest.skip("the store has no payload limit of its own")
        record = new_record(api)
        with pytest.raises(PayloadTooLarge):
            await store.create(record, body_of(b"x" * (limit + 1)))
        assert await store.get(api, record.id) is None
        stored = await store.create(record, body_of(b"{}"))  # the id is still free
        assert stored.payload_size == 2

    async def test_failed_upload_leaves_nothing(self, store: Store, api: str) -> None:
        """When the body stream breaks mid-upload, create raises and no record is left (a
        retry with the same id works). If this fails, clients see half-written requests."""

        class ClientWentAway(Exception):
            pass

        async def broken_body() -> AsyncIterator[bytes]:
            yield b"x" * (3 * _MiB)
            raise ClientWentAway

        record = new_record(api)
        with pytest.raises(ClientWentAway):
            await store.create(record, broken_body())
        assert await store.get(api, record.id) is None
        with pytest.raises(NotFound):
            await read_all(store.payload(api, record.id))
        assert (await store.create(record, body_of(b"{}"))).payload_size == 2

    # -- retention -----------------------------------------------------------------------

    async def test_expired_records_read_as_gone(self, store: Store, api: str) -> None:
        """A record past its ``expires_at`` reads as None, cannot be moved and has no
        result; ``purge_expired`` removes it. If this fails, results outlive their
        retention or an expired id answers as if alive."""
        record = await store.create(new_record(api, retention=self.short_retention), body_of(b"{}"))
        assert await store.get(api, record.id) is not None
        await anyio.sleep(max(0.0, record.expires_at - now()) + 0.1)
        assert await store.get(api, record.id) is None
        with pytest.raises(NotFound):
            await store.transition(api, record.id, Status.CANCELLED)
        assert await store.result(api, record.id) is None
        live = await self.created(store, api)
        assert isinstance(await store.purge_expired(), int)
        if store.purge_removes_expired:
            assert await store.read(api, record.id) is None
        assert await store.get(api, live.id) == live

    # -- errors --------------------------------------------------------------------------

    async def test_ping(self, store: Store) -> None:
        """``ping`` succeeds on a live backend. If this fails, health checks report a
        working store as down."""
        await store.ping()

    @pytest.mark.parametrize(
        "operation",
        [
            pytest.param(lambda s, api: s.get(api, new_request_id()), id="get"),
            pytest.param(lambda s, api: s.create(new_record(api), body_of(b"{}")), id="create"),
            pytest.param(lambda s, api: s.ping(), id="ping"),
        ],
    )
    async def test_unreachable_backend_raises_backend_unavailable(
        self,
        unreachable_url: str,
        api: str,
        operation: Callable[[Store, str], Awaitable[object]],
    ) -> None:
        """A store that cannot be reached raises chute's BackendUnavailable, not its SDK's
        exception. If this fails, the gateway answers 500 with a stack trace instead of
        503."""
        with anyio.fail_after(30), pytest.raises(BackendUnavailable):
            async with open_store(unreachable_url) as store:
                await operation(store, api)
