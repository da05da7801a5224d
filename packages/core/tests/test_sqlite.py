"""What the contract suite cannot see about the SQLite backend: URLs, several processes on one
file, chunk bookkeeping and the idle poll."""

from __future__ import annotations

import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import chute
from chute.backends._sqlite.db import parse_url
from chute.backends._sqlite.queue import SqliteQueue
from chute.backends._sqlite.store import CHUNK_SIZE, ORPHAN_AGE, SqliteStore
from chute.backends.base import Queue, QueueDepth, Store
from chute.errors import BackendError, ConfigError, Conflict, PayloadTooLarge
from chute.protocol import Status, new_request_id, now, record_encoder
from chute.testing import body_of, new_record

pytestmark = pytest.mark.anyio

API = "sqlite-api"


def db_path(url: str) -> Path:
    return parse_url(url)[0]


def count_rows(url: str, table: str) -> int:
    with sqlite3.connect(db_path(url)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


@pytest.fixture
async def queue(sqlite_url: str) -> AsyncIterator[Queue]:
    async with chute.open_queue(sqlite_url) as queue:
        yield queue


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    async with chute.open_store(sqlite_url) as store:
        yield store


# -- URLs -------------------------------------------------------------------------------------


def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_url("sqlite:///data/chute.db")[0] == tmp_path / "data" / "chute.db"
    assert parse_url("sqlite:////var/lib/chute.db")[0] == Path("/var/lib/chute.db")
    assert parse_url("SQLITE:////x.db?max_payload_size=5")[1] == {"max_payload_size": 5}
    assert parse_url("sqlite:////x.db?max_payload_size=2Mi")[1] == {"max_payload_size": 2 << 20}
    assert parse_url("sqlite:////x.db")[1] == {}


@pytest.mark.parametrize(
    "url", ["sqlite://host/chute.db", "sqlite://", "sqlite:///", "sqlite:///:memory:"]
)
def test_urls_that_name_no_shareable_file_are_rejected(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_url(url)


def test_bad_max_payload_size_is_a_config_error(sqlite_url: str) -> None:
    with pytest.raises(ConfigError, match="max_payload_size"):
        chute.open_store(f"{sqlite_url}?max_payload_size=lots")


@pytest.mark.parametrize("open_backend", [chute.open_queue, chute.open_store])
def test_unknown_and_repeated_options_are_refused(sqlite_url: str, open_backend: Any) -> None:
    # A typo must not silently fall back to a default: the error lists what is known.
    with pytest.raises(ConfigError, match=r"unknown parameter 'bogus'.*known parameters: max_payl"):
        open_backend(f"{sqlite_url}?bogus=1")
    with pytest.raises(ConfigError, match="given more than once"):
        open_backend(f"{sqlite_url}?max_payload_size=1&max_payload_size=2")


async def test_parent_directory_is_created_and_wal_is_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/deep/er/chute.db"
    async with chute.open_queue(url) as queue:
        await queue.send(API, new_request_id())
    with sqlite3.connect(tmp_path / "deep" / "er" / "chute.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_many_connections_opening_a_new_file_at_once(tmp_path: Path) -> None:
    """Switching a new file to WAL is refused while another connection does the same; the
    backend must retry rather than fail the first requests after a fresh start."""
    for round_ in range(40):
        url = f"sqlite:///{tmp_path}/fresh-{round_}.db"
        queues = [SqliteQueue(url) for _ in range(8)]
        async with anyio.create_task_group() as tg:
            for queue in queues:
                tg.start_soon(queue.send, API, new_request_id())
        assert (await queues[0].depth(API)).queued == len(queues)
        for queue in queues:
            await queue.aclose()


async def test_objects_are_unusable_after_close(sqlite_url: str) -> None:
    queue = SqliteQueue(sqlite_url)
    await queue.send(API, new_request_id())
    await queue.aclose()
    with pytest.raises(BackendError, match="closed"):
        await queue.depth(API)


# -- the idle poll ----------------------------------------------------------------------------


async def test_a_waiting_receive_notices_a_delay_running_out(queue: Queue) -> None:
    """No other connection commits while the delay runs: the poll must wake by the clock."""
    await queue.send(API, new_request_id(), delay=0.3)
    start = time.monotonic()
    got = await queue.receive(API, wait=10.0)
    assert len(got) == 1
    assert 0.2 <= time.monotonic() - start < 5.0


async def test_a_waiting_receive_notices_a_lapsed_lease(queue: Queue) -> None:
    await queue.send(API, new_request_id())
    [first] = await queue.receive(API, wait=1.0, lease=0.3)
    start = time.monotonic()
    [second] = await queue.receive(API, wait=10.0, lease=5.0)
    assert second.attempt == first.attempt + 1
    assert time.monotonic() - start < 5.0


async def test_a_cancelled_receive_leaves_the_queue_usable(queue: Queue) -> None:
    with anyio.move_on_after(0.1):
        await queue.receive(API, wait=10.0)
    await queue.send(API, new_request_id())
    assert len(await queue.receive(API, wait=5.0)) == 1


# -- several processes on one file --------------------------------------------------------

_RECEIVER = textwrap.dedent(
    """
    import sys, time, anyio, chute

    async def main(url):
        async with chute.open_queue(url) as queue:
            await queue.depth("sqlite-api")  # open the file before saying ready
            print("ready", flush=True)
            got = await queue.receive("sqlite-api", wait=30.0, lease=30.0)
            picked_up = time.time()
            for delivery in got:
                await queue.ack(delivery)
                print(delivery.request_id, delivery.attempt, picked_up, flush=True)

    anyio.run(main, sys.argv[1])
    """
)

_SENDER = textwrap.dedent(
    """
    import sys, anyio, chute
    from chute.testing import body_of, new_record

    async def main(url, count):
        async with chute.open_queue(url) as queue, chute.open_store(url) as store:
            for i in range(count):
                record = await store.create(
                    new_record("sqlite-api"), body_of(b"%d" % i * 300_000)
                )
                await queue.send("sqlite-api", record.id)
                print(record.id, flush=True)

    anyio.run(main, sys.argv[1], int(sys.argv[2]))
    """
)


async def test_a_receive_in_another_process_picks_up_at_once(sqlite_url: str, queue: Queue) -> None:
    """The gateway and the dequeuer are separate processes: a receive blocked in one picks up
    a message sent by the other in well under a second (the bound here is generous)."""
    # On failure the deadline also bounds the wait for the child (then it is killed).
    with anyio.fail_after(60):
        async with await anyio.open_process([sys.executable, "-c", _RECEIVER, sqlite_url]) as child:
            assert child.stdout is not None
            lines = BufferedByteReceiveStream(child.stdout)
            assert await lines.receive_until(b"\n", 1000) == b"ready"
            await anyio.sleep(0.3)  # let the child's poll back off to its idle pace
            request_id = new_request_id()
            sent_at = time.time()
            await queue.send(API, request_id)
            line = (await lines.receive_until(b"\n", 1000)).decode()
    received_id, attempt, picked_up = line.split()
    assert (received_id, attempt) == (request_id, "1")
    assert float(picked_up) - sent_at < 1.0
    assert await queue.depth(API) == QueueDepth(queued=0, in_flight=0)  # the child acked


async def test_records_and_messages_written_by_another_process(
    sqlite_url: str, queue: Queue, store: Store
) -> None:
    count = 5
    result = await anyio.run_process(
        [sys.executable, "-c", _SENDER, sqlite_url, str(count)], check=True
    )
    sent = result.stdout.decode().split()
    assert len(sent) == count
    received: list[str] = []
    with anyio.fail_after(30):
        while len(received) < count:
            for delivery in await queue.receive(API, max_messages=count, wait=1.0):
                received.append(delivery.request_id)
                await queue.ack(delivery)
    assert sorted(received) == sorted(sent)
    for i, request_id in enumerate(sent):
        payload = b"".join([chunk async for chunk in store.payload(API, request_id)])
        assert payload == b"%d" % i * 300_000


# -- store bookkeeping ------------------------------------------------------------------------


async def test_payload_is_stored_in_chunks_and_deleted_with_the_record(
    sqlite_url: str, store: Store
) -> None:
    size = 3 * CHUNK_SIZE + 5
    record = await store.create(new_record(API), body_of(b"z" * size, piece=200_000))
    assert count_rows(sqlite_url, "store_chunks") == 4
    sizes = [len(chunk) async for chunk in store.payload(API, record.id)]
    assert sizes == [CHUNK_SIZE] * 3 + [5]
    assert await store.delete(API, record.id)
    assert count_rows(sqlite_url, "store_chunks") == 0


async def test_oversize_and_broken_uploads_leave_no_chunks(sqlite_url: str) -> None:
    async with chute.open_store(f"{sqlite_url}?max_payload_size={2 * CHUNK_SIZE}") as store:
        assert store.max_payload_size == 2 * CHUNK_SIZE
        with pytest.raises(PayloadTooLarge):
            await store.create(new_record(API), body_of(b"x" * (3 * CHUNK_SIZE)))
        assert count_rows(sqlite_url, "store_chunks") == 0
        assert count_rows(sqlite_url, "store_records") == 0


async def test_concurrent_creates_of_one_id_keep_the_winners_payload(sqlite_url: str) -> None:
    """Chunks belong to an upload, not to the id: the loser cleans up only its own."""
    record = new_record(API)

    async def slow_body(fill: bytes) -> AsyncIterator[bytes]:
        for _ in range(4):
            yield fill * (CHUNK_SIZE // 2)
            await anyio.sleep(0.01)

    outcomes: dict[bytes, str] = {}

    async def create(fill: bytes) -> None:
        async with SqliteStore(sqlite_url) as store:
            try:
                await store.create(record, slow_body(fill))
                outcomes[fill] = "won"
            except Conflict:
                outcomes[fill] = "lost"

    async with anyio.create_task_group() as tg:
        tg.start_soon(create, b"a")
        tg.start_soon(create, b"b")
    assert sorted(outcomes.values()) == ["lost", "won"]
    [winner] = [fill for fill, outcome in outcomes.items() if outcome == "won"]
    async with SqliteStore(sqlite_url) as store:
        payload = b"".join([chunk async for chunk in store.payload(API, record.id)])
    assert payload == winner * (2 * CHUNK_SIZE)
    assert count_rows(sqlite_url, "store_chunks") == 2


async def test_purge_expired_counts_and_removes_orphan_chunks(
    sqlite_url: str, store: Store
) -> None:
    expired = await store.create(new_record(API, retention=-1.0), body_of(b"e" * 10))
    live = await store.create(new_record(API), body_of(b"l" * 10))
    with sqlite3.connect(db_path(sqlite_url)) as conn:  # what a crashed upload leaves behind
        conn.execute(
            "INSERT INTO store_chunks VALUES ('crashed', 0, x'00', ?), ('recent', 0, x'00', ?)",
            (now() - ORPHAN_AGE - 60, now()),
        )
    assert await store.purge_expired() == 1
    assert await store.read(API, expired.id) is None
    assert await store.get(API, live.id) == live
    with sqlite3.connect(db_path(sqlite_url)) as conn:
        uploads = {row[0] for row in conn.execute("SELECT upload FROM store_chunks")}
    assert "crashed" not in uploads
    assert "recent" in uploads  # may be an upload still in progress
    assert len(uploads) == 2
    assert await store.purge_expired() == 0


async def test_idle_receivers_share_their_polls_and_all_wake(sqlite_url: str) -> None:
    """32 idle receivers on one queue object (a dequeuer's workers) share one data_version
    read per few milliseconds, and each still gets a message sent through another connection
    (another process's gateway)."""
    api = "shared"
    async with SqliteQueue(sqlite_url) as idle, SqliteQueue(sqlite_url) as sender:
        reads = 0
        read = idle._data_version

        async def counting(fresh: float) -> int:
            nonlocal reads
            reads += 1
            return await read(fresh)

        got: list[str] = []

        async def receiver() -> None:
            [delivery] = await idle.receive(api, wait=10.0, lease=30.0)
            got.append(delivery.request_id)

        db_reads = 0
        run = idle._db.run

        async def counting_run(fn, *args):  # type: ignore[no-untyped-def]
            nonlocal db_reads
            db_reads += 1
            return await run(fn, *args)

        idle._db.run = counting_run  # type: ignore[method-assign]
        idle._data_version = counting  # type: ignore[method-assign]
        ids = [new_request_id() for _ in range(32)]
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in ids:
                    tg.start_soon(receiver)
                await anyio.sleep(0.5)  # all idle, polling
                asked, done = reads, db_reads
                for request_id in ids:
                    await sender.send(api, request_id)
        assert sorted(got) == sorted(ids)
        # In 0.5 s, 32 receivers asked about 32 x 20+ times; far fewer reads reached the file.
        assert asked > 200
        assert done < asked / 2


async def test_a_file_from_before_listing_is_migrated_and_lists(tmp_path: Path) -> None:
    """A database written before ``store_records`` had its ``created_at``/``status`` columns
    (chute before #17) is brought up to date when opened: its records keep working and are
    listed, newest first and by status. If this fails, upgrading chute breaks the dashboard
    (or the gateway) on an existing ``.chute/chute.db``."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE store_records (
            api TEXT NOT NULL, id TEXT NOT NULL, record BLOB NOT NULL, version INTEGER NOT NULL,
            expires_at REAL NOT NULL, upload TEXT NOT NULL, chunks INTEGER NOT NULL,
            result BLOB, PRIMARY KEY (api, id)
        );
        """
    )
    made = [new_record(API) for _ in range(3)]
    for record in made:
        old.execute(
            "INSERT INTO store_records VALUES (?, ?, ?, 1, ?, ?, 0, NULL)",
            (API, record.id, record_encoder.encode(record), record.expires_at, "u" + record.id),
        )
    old.commit()
    old.close()
    async with SqliteStore(f"sqlite:///{path}") as store:
        page = await store.list_requests(API)
        assert [r.id for r in page.records] == [r.id for r in reversed(made)]
        await store.transition(API, made[0].id, Status.CANCELLED)
        cancelled = await store.list_requests(API, status=Status.CANCELLED)
        assert [r.id for r in cancelled.records] == [made[0].id]
        assert (await store.list_requests(API, status=Status.IN_QUEUE)).records == [
            await store.get(API, made[2].id),
            await store.get(API, made[1].id),
        ]
    with sqlite3.connect(path) as conn:
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(store_records)")}
    assert {"store_records_listing", "store_records_by_status"} <= indexes
