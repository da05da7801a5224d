"""The embedded queue: one table of messages per file, leases as a ``visible_at`` time.

A message is visible when ``visible_at <= now``. Receiving leases it: ``visible_at`` moves to the
lease's end, ``attempts`` goes up by one (the fencing token) and a fresh receipt is drawn, so a
consumer whose lease lapsed and was taken over can no longer extend, ack or release it. A lapsed
lease needs no clean-up: the message is simply visible again.

SQLite has no wake-up across processes, so an idle ``receive`` polls, cheaply: it reads
``PRAGMA data_version`` (which changes only when another connection commits) and runs the real
query only when something changed or a delayed message's time has come.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import anyio

from chute.backends._sqlite.db import Database, data_version, write_transaction
from chute.backends.base import DeadLetter, Delivery, Queue, QueueDepth
from chute.errors import LeaseLost
from chute.protocol import now, validate_request_id

#: The idle poll starts this fast (a request submitted to an idle system starts at once) ...
POLL_MIN = 0.002
#: ... and backs off to this while nothing happens.
POLL_MAX = 0.025

#: Idle receivers of one queue object share a data_version read at most this old: 32 idle
#: workers then cost ≤ 200 reads/s instead of 32 x 40, for ≤ 5 ms more idle pick-up.
SHARED_POLL = 0.005

_Leased = tuple[list[Delivery], int, float | None]
_T = TypeVar("_T")


class SqliteQueue(Queue):
    """A queue of request ids in an SQLite file (``sqlite:///path.db``), safe across processes.

    One connection per object; open one object per process (or per event loop) and share it.
    """

    min_lease = 0.05
    #: One transaction leases up to this many messages.
    max_batch = 64

    def __init__(self, url: str) -> None:
        self._db = Database(url)
        # Commits through our own connection do not change its data_version: count them.
        self._local_writes = 0
        self._wakeup: anyio.Event | None = None
        #: The last data_version read and when (anyio clock); a read in flight.
        self._version_seen: tuple[int, float] | None = None
        self._version_reading: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"SqliteQueue({str(self._db.path)!r})"

    # -- sending -------------------------------------------------------------------------

    async def send(self, api: str, request_id: str, *, delay: float = 0.0) -> None:
        validate_request_id(request_id)

        await self._db.run(lambda conn: insert_message(conn, api, request_id, delay))
        self._wrote()

    # -- receiving -----------------------------------------------------------------------

    async def receive(
        self, api: str, *, max_messages: int = 1, wait: float = 20.0, lease: float = 30.0
    ) -> list[Delivery]:
        return await self.receive_with(
            partial(_lease, api, max_messages, lease),
            max_messages=max_messages,
            wait=wait,
            lease=lease,
        )

    async def receive_with(
        self,
        take: Callable[[sqlite3.Connection], tuple[list[_T], int, float | None]],
        *,
        max_messages: int,
        wait: float,
        lease: float,
    ) -> list[_T]:
        """The receive loop with ``take``: :func:`lease_messages` for ``max_messages`` of the
        API, or a function that calls it and adds to each delivery (``_sqlite.joint``); it runs
        on this queue's connection and answers as :func:`lease_messages` does."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if lease <= 0:
            raise ValueError("lease must be positive")
        deadline = anyio.current_time() + max(0.0, wait)
        interval = POLL_MIN
        while True:
            local = self._local_writes
            deliveries, version, next_visible = await self._db.run(take)
            if deliveries:
                return deliveries
            # Wait until something may have changed: another connection committed, this
            # object wrote, or a delayed message (or lapsing lease) reached its time.
            while True:
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    return []
                pause = min(interval, remaining)
                if next_visible is not None:
                    pause = min(pause, max(0.0, next_visible - now()))
                await self._pause(pause)
                interval = min(interval * 2, POLL_MAX)
                if self._local_writes != local:
                    break
                if next_visible is not None and now() >= next_visible:
                    break
                if await self._data_version(min(interval, SHARED_POLL)) != version:
                    break

    async def _data_version(self, fresh: float) -> int:
        """The file's ``data_version``, shared by every idle receiver of this object: a value
        read less than ``fresh`` seconds ago is reused and at most one read is in flight, so
        32 idle workers cost about one read per poll interval, not 32 (each is a hand-off to
        the database thread)."""
        while True:
            seen = self._version_seen
            if seen is not None and anyio.current_time() - seen[1] < fresh:
                return seen[0]
            reading = self._version_reading
            if reading is None:
                break
            await reading.wait()  # another receiver's read: take its answer (or read again)
        self._version_reading = anyio.Event()
        try:
            version: int = await self._db.run(data_version)
            self._version_seen = (version, anyio.current_time())
        finally:
            self._version_reading.set()
            self._version_reading = None
        return version

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when this object sends or releases a message."""
        if self._wakeup is None:
            self._wakeup = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._wakeup.wait()

    async def run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` on this queue's connection (``_sqlite.joint`` works on both tables)."""
        return await self._db.run(fn)

    @property
    def path(self) -> Path:
        return self._db.path

    def wrote(self) -> None:
        """Wake this object's idle receivers: a message was sent through its connection."""
        self._wrote()

    def _wrote(self) -> None:
        self._local_writes += 1
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    # -- settling a delivery -------------------------------------------------------------

    async def extend(self, delivery: Delivery, lease: float) -> None:
        row_id, token = _parse_receipt(delivery)

        def update(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE queue_messages SET visible_at = ? WHERE id = ? AND receipt = ?",
                (now() + lease, row_id, token),
            ).rowcount

        _check_held(await self._db.run(update), delivery)

    async def ack(self, delivery: Delivery) -> None:
        row_id, token = _parse_receipt(delivery)

        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM queue_messages WHERE id = ? AND receipt = ?", (row_id, token)
            ).rowcount

        _check_held(await self._db.run(delete), delivery)

    async def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        def delete_all(conn: sqlite3.Connection) -> list[bool]:
            with write_transaction(conn):
                return [delete_held(conn, d) for d in deliveries]

        return await self._db.run(delete_all)

    async def release(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        row_id, token = _parse_receipt(delivery)

        def update(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE queue_messages SET visible_at = ?, leased = 0, receipt = NULL "
                "WHERE id = ? AND receipt = ?",
                (now() + max(0.0, delay), row_id, token),
            ).rowcount

        _check_held(await self._db.run(update), delivery)
        self._wrote()

    # -- dead letter ---------------------------------------------------------------------

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        row_id, token = _parse_receipt(delivery)

        def move(conn: sqlite3.Connection) -> int:
            with write_transaction(conn):
                row = conn.execute(
                    "SELECT api, request_id, attempts FROM queue_messages "
                    "WHERE id = ? AND receipt = ?",
                    (row_id, token),
                ).fetchone()
                if row is None:
                    return 0
                conn.execute("DELETE FROM queue_messages WHERE id = ?", (row_id,))
                conn.execute(
                    "INSERT INTO queue_dead (api, request_id, attempts, reason, dead_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (*row, reason, now()),
                )
                return 1

        _check_held(await self._db.run(move), delivery)

    async def list_dead(self, api: str, *, limit: int = 100) -> list[DeadLetter]:
        def select(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                "SELECT request_id, reason, attempts, dead_at FROM queue_dead "
                "WHERE api = ? ORDER BY id LIMIT ?",
                (api, limit),
            ).fetchall()
            return [DeadLetter(api, rid, reason, n, at) for rid, reason, n, at in rows]

        return await self._db.run(select)

    async def requeue_dead(self, api: str, request_ids: Sequence[str] | None = None) -> int:
        wanted = None if request_ids is None else set(request_ids)

        def move(conn: sqlite3.Connection) -> int:
            with write_transaction(conn):
                rows = conn.execute(
                    "SELECT id, request_id, attempts FROM queue_dead WHERE api = ? ORDER BY id",
                    (api,),
                ).fetchall()
                moved = [row for row in rows if wanted is None or row[1] in wanted]
                t = now()
                for dead_id, request_id, attempts in moved:
                    # attempts carry over: the next delivery must out-fence every earlier one.
                    conn.execute(
                        "INSERT INTO queue_messages (api, request_id, visible_at, attempts, "
                        "sent_at) VALUES (?, ?, ?, ?, ?)",
                        (api, request_id, t, attempts, t),
                    )
                    conn.execute("DELETE FROM queue_dead WHERE id = ?", (dead_id,))
                return len(moved)

        count = await self._db.run(move)
        if count:
            self._wrote()
        return count

    async def purge_dead(self, api: str) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM queue_dead WHERE api = ?", (api,)).rowcount

        return await self._db.run(delete)

    # -- introspection -------------------------------------------------------------------

    async def depth(self, api: str) -> QueueDepth:
        def count(conn: sqlite3.Connection) -> QueueDepth:
            conn.execute("BEGIN")  # one snapshot for the three counts
            try:
                (live,) = conn.execute(
                    "SELECT COUNT(*) FROM queue_messages WHERE api = ?", (api,)
                ).fetchone()
                at = now()
                (leased,) = conn.execute(
                    "SELECT COUNT(*) FROM queue_messages "
                    "WHERE api = ? AND visible_at > ? AND leased = 1",
                    (api, at),
                ).fetchone()
                (delayed,) = conn.execute(
                    "SELECT COUNT(*) FROM queue_messages "
                    "WHERE api = ? AND visible_at > ? AND leased = 0",
                    (api, at),
                ).fetchone()
                (dead,) = conn.execute(
                    "SELECT COUNT(*) FROM queue_dead WHERE api = ?", (api,)
                ).fetchone()
            finally:
                conn.execute("COMMIT")
            return QueueDepth(queued=live - leased, in_flight=leased, dead=dead, delayed=delayed)

        return await self._db.run(count)

    async def ping(self) -> None:
        await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        await self._db.aclose()


def _lease(api: str, max_messages: int, lease: float, conn: sqlite3.Connection) -> _Leased:
    return lease_messages(api, max_messages, lease, conn)


def lease_messages(api: str, max_messages: int, lease: float, conn: sqlite3.Connection) -> _Leased:
    """Lease up to ``max_messages`` visible messages. Returns them, the data_version read
    before looking (so any later commit by someone else is noticed) and the earliest time at
    which a message of ``api`` becomes visible by itself (a delay or a lease running out)."""
    version = data_version(conn)
    t = now()
    (first,) = conn.execute(
        "SELECT MIN(visible_at) FROM queue_messages WHERE api = ?", (api,)
    ).fetchone()
    if first is None or first > t:
        return [], version, first  # the common idle case: no write lock taken
    deliveries = []
    with write_transaction(conn):
        t = now()
        rows = conn.execute(
            "SELECT id, request_id, attempts FROM queue_messages "
            "WHERE api = ? AND visible_at <= ? ORDER BY visible_at, id LIMIT ?",
            (api, t, max_messages),
        ).fetchall()
        for row_id, request_id, attempts in rows:
            token = secrets.token_hex(8)
            conn.execute(
                "UPDATE queue_messages SET visible_at = ?, leased = 1, attempts = ?, "
                "receipt = ? WHERE id = ?",
                (t + lease, attempts + 1, token, row_id),
            )
            deliveries.append(Delivery(api, request_id, attempts + 1, f"{row_id}.{token}"))
        (first,) = conn.execute(
            "SELECT MIN(visible_at) FROM queue_messages WHERE api = ?", (api,)
        ).fetchone()
    return deliveries, version, first


def insert_message(conn: sqlite3.Connection, api: str, request_id: str, delay: float) -> None:
    """Queue ``request_id`` (the statement of :meth:`SqliteQueue.send`)."""
    t = now()
    conn.execute(
        "INSERT INTO queue_messages (api, request_id, visible_at, sent_at) VALUES (?, ?, ?, ?)",
        (api, request_id, t + max(0.0, delay), t),
    )


def delete_held(conn: sqlite3.Connection, delivery: Delivery) -> bool:
    """Ack ``delivery`` if its receipt still holds the message (the statement of ack)."""
    row_id, _, token = delivery.receipt.partition(".")
    if not row_id.isdigit() or not token:
        return False
    return (
        conn.execute(
            "DELETE FROM queue_messages WHERE id = ? AND receipt = ?", (int(row_id), token)
        ).rowcount
        == 1
    )


def _parse_receipt(delivery: Delivery) -> tuple[int, str]:
    row_id, _, token = delivery.receipt.partition(".")
    if not row_id.isdigit() or not token:
        raise LeaseLost(f"request {delivery.request_id}: receipt {delivery.receipt!r} is not ours")
    return int(row_id), token


def _check_held(rows: int, delivery: Delivery) -> None:
    if rows == 0:
        raise LeaseLost(
            f"request {delivery.request_id} of API {delivery.api}: the lease of attempt "
            f"{delivery.attempt} was lost (it lapsed and the message was delivered again, "
            "or it was already acked)"
        )
