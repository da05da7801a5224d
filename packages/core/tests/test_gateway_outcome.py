"""Settling a submit whose outcome is unknown (chute.gateway._outcome), on real stores, through
the Store ABC only: every case of docs/gateway.md's "What an answer promises"."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from gateway_support import backend_url

from chute import open_queue, open_store
from chute.errors import Conflict
from chute.gateway._outcome import (
    EXTRA_REFUSED,
    REFUSED_ERROR,
    UNCONFIRMED_ERROR,
    Settled,
    settle,
)
from chute.protocol import RequestRecord, Status, new_request_id, now

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_url(request, tmp_path, "outcome")


def record(**changes: object) -> RequestRecord:
    created = now()
    base = RequestRecord(
        id=new_request_id(),
        api="hello",
        status=Status.IN_QUEUE,
        created_at=created,
        expires_at=created + 3600,
    )
    return msgspec.structs.replace(base, **changes)


async def body() -> AsyncIterator[bytes]:
    yield b'{"x": 1}'


def soon() -> float:
    return time.monotonic() + 5


async def test_a_missing_record_is_refused_and_a_late_create_cannot_land(url: str) -> None:
    async with open_store(url) as store:
        ours = record()
        assert (await settle(store, ours, deadline=soon())).settled is Settled.REFUSED
        found = await store.read("hello", ours.id)
        assert found is not None
        tombstone = found[0]
        assert tombstone.status is Status.CANCELLED
        assert tombstone.extra[EXTRA_REFUSED] is True
        assert tombstone.error is not None
        assert tombstone.error.type == REFUSED_ERROR
        with pytest.raises(Conflict):  # the create that was on its way
            await store.create(ours, body())
        # Settling again (a retried settle) finds its own tombstone.
        assert (await settle(store, ours, deadline=soon())).settled is Settled.REFUSED


async def test_a_stored_request_nobody_received_is_refused_and_removed(url: str) -> None:
    async with open_store(url) as store, open_queue(url) as queue:
        ours = record()
        await store.create(ours, body())
        await queue.send("hello", ours.id)  # the enqueue whose reply was lost
        assert (await settle(store, ours, deadline=soon())).settled is Settled.REFUSED
        assert await store.read("hello", ours.id) is None
        # Its message is still queued; the dequeuer finds no record and drops it.
        deliveries = await queue.receive("hello", max_messages=10, wait=1)
        assert [d.request_id for d in deliveries] == [ours.id]
        for delivery in deliveries:
            await queue.ack(delivery)


@pytest.mark.parametrize("status", [Status.IN_PROGRESS, Status.COMPLETED])
async def test_a_request_a_dequeuer_took_runs(url: str, status: Status) -> None:
    async with open_store(url) as store:
        ours = record()
        await store.create(ours, body())
        await store.transition("hello", ours.id, Status.IN_PROGRESS, attempt=1)
        if status is Status.COMPLETED:
            await store.transition("hello", ours.id, status, attempt=1, result=b"{}")
        settlement = await settle(store, ours, deadline=soon())
        assert settlement.settled is Settled.RUNS
        assert (await store.get("hello", ours.id)).status is status  # type: ignore[union-attr]


async def test_another_submits_record_under_the_same_id_is_theirs(url: str) -> None:
    async with open_store(url) as store:
        theirs = record()
        await store.create(theirs, body())
        ours = msgspec.structs.replace(theirs, created_at=theirs.created_at + 0.5)
        settlement = await settle(store, ours, deadline=soon())
        assert settlement.settled is Settled.OTHERS
        assert settlement.record is not None
        assert settlement.record.created_at == theirs.created_at
        # Theirs is untouched.
        assert (await store.get("hello", theirs.id)).status is Status.IN_QUEUE  # type: ignore[union-attr]


async def test_kept_when_its_client_holds_the_id(url: str) -> None:
    async with open_store(url) as store:
        ours = record()
        await store.create(ours, body())
        settlement = await settle(
            store, ours, deadline=soon(), error_type=UNCONFIRMED_ERROR, remove=False
        )
        assert settlement.settled is Settled.REFUSED
        kept = await store.get("hello", ours.id)
        assert kept is not None
        assert kept.status is Status.CANCELLED
        assert kept.error is not None
        assert kept.error.type == UNCONFIRMED_ERROR


async def test_a_store_that_stays_silent_is_unknown_at_the_deadline(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"  # a file where the database's directory should be
    blocker.write_text("not a directory")
    async with open_store(f"sqlite:///{blocker / 'chute.db'}") as store:
        started = time.monotonic()
        settlement = await settle(store, record(), deadline=started + 0.5)
    assert settlement.settled is Settled.UNKNOWN
    assert time.monotonic() - started >= 0.5
